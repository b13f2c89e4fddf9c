package syncbridge

import (
	"errors"
	"fmt"
)

// Errors returned by syncbridge. Compare with errors.Is: they are wrapped.
var (
	// ErrClosed is returned by Request and Go after Close or Shutdown, and
	// wakes requests in flight when the Bridge closes. Transports wrap it in
	// the errors they return after their Close.
	ErrClosed = errors.New("syncbridge: closed")
	// ErrNotSent is wrapped by a Transport's error when the message was
	// certainly not written (see Transport). The Bridge turns such an
	// error into ErrPublish, and only such an error.
	ErrNotSent = errors.New("syncbridge: not sent")
	// ErrOverloaded is returned at once by Request and Go when the Bridge
	// already has MaxInFlight requests in flight. Nothing was published: the
	// request is safe to retry later (an HTTP server answers 503).
	ErrOverloaded = errors.New("syncbridge: too many requests in flight")
	// ErrNoResponders is returned at once by Request, Go and Gather, with
	// nothing published, by a Bridge with WithFailFastNoResponders when the
	// transport knows the request topic has no responder. Safe to retry
	// once one runs (an HTTP server answers 503).
	ErrNoResponders = errors.New("syncbridge: no responders")
	// ErrPublish is returned when a request was certainly not sent: the
	// transport said so (ErrPublish then wraps its error), or ctx had ended
	// before the request was handed to the transport (ErrPublish then wraps
	// ctx's error). Either way the error wraps ErrNotSent, and ctx's error
	// too when ctx had ended first. The responder did not receive it: the
	// request is safe to retry.
	ErrPublish = errors.New("syncbridge: publish failed")
	// ErrNoReply is returned, together with the context's error, when a
	// request was published but no reply arrived before its context ended.
	// The responder may have run it: retry only idempotent requests.
	ErrNoReply = errors.New("syncbridge: no reply")
	// ErrPending is returned by Call.Result while the Call has not ended.
	ErrPending = errors.New("syncbridge: call in progress")
	// ErrInvalidMessage is returned for a request without a topic.
	ErrInvalidMessage = errors.New("syncbridge: invalid message")
	// ErrMalformedHeader is the error a SkippedRequestHook receives when a
	// request's routing headers cannot be decoded.
	ErrMalformedHeader = errors.New("syncbridge: malformed header")
)

// RemoteError is an error reply: the responder's handler failed. Request
// returns it as the error, with the reply available in Reply.
type RemoteError struct {
	// Code is a short machine-readable code, such as "not_found".
	Code string
	// Description is a human-readable description.
	Description string
	// Reply is the error reply message, nil on the responder side.
	Reply *Message
}

// Error implements error.
func (e *RemoteError) Error() string {
	if e.Description == "" {
		return "syncbridge: remote error " + e.Code
	}
	return fmt.Sprintf("syncbridge: remote error %s: %s", e.Code, e.Description)
}

// NewRemoteError returns a *RemoteError that a responder's handler can return
// to send an error reply with that code and description.
func NewRemoteError(code, description string) *RemoteError {
	return &RemoteError{Code: code, Description: description}
}

// Error codes the Responder uses for errors it creates.
const (
	// CodeInternal is sent when a handler returns an error that is not a
	// *RemoteError.
	CodeInternal = "internal"
	// CodePanic is sent when a handler panics.
	CodePanic = "panic"
)
