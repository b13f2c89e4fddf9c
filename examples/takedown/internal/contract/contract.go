// Package contract is what the police API and the items service agree on:
// topic names, the JSON messages they exchange over the Bridge and the
// transport, and the error codes of error replies.
//
// Both sides import it; neither imports the other, so that each can run as
// its own process against one Kafka cluster.
package contract

import (
	"encoding/json"
	"fmt"
	"regexp"
	"time"
	"unicode/utf8"

	"github.com/syncbridge/syncbridge"
)

// Topics names the topics the two sides use. Requests are keyed by item
// ID, so that every command about one item lands on one partition, and so
// on one items-service instance, in order.
type Topics struct {
	// Takedowns carries TakedownCommand requests to the items service's
	// Responder; the reply is a TakedownResult.
	Takedowns string
	// Queries carries Query requests to the items service's Responder; the
	// reply is an Item, a ReportStatus or a TakedownResult.
	Queries string
	// Reports carries Report messages, fire-and-forget: the items service
	// consumes them as a consumer group and answers nothing.
	Reports string
	// Events carries domain events (see EventHeader), for the services
	// that react to them. The items service publishes them from its
	// outbox, at least once.
	Events string
	// Replies is the reply topic of the API's Bridge. Replicas may share it
	// (each drops the others' replies) or each use its own.
	Replies string
}

// DefaultTopics returns the topic names with the prefix, which may be
// empty: "takedown.commands", "items.queries", "items.reports",
// "items.events" and "takedown.replies". A prefix lets several deployments,
// or tests, share one Kafka cluster.
func DefaultTopics(prefix string) Topics {
	return Topics{
		Takedowns: prefix + "takedown.commands",
		Queries:   prefix + "items.queries",
		Reports:   prefix + "items.reports",
		Events:    prefix + "items.events",
		Replies:   prefix + "takedown.replies",
	}
}

// Error codes of the items service's error replies.
const (
	// CodeNotFound: the item (or report, or takedown) does not exist.
	CodeNotFound = "not_found"
	// CodeInvalid: the request could not be decoded or is incomplete.
	CodeInvalid = "invalid"
	// CodeUnavailable: the service is stopping, or its database failed;
	// nothing was recorded. A takedown command that got it may still be
	// applied if it is delivered again: fence it off with ActionCancel.
	CodeUnavailable = "unavailable"
)

// Takedown statuses, as reported by TakedownResult.Status. Every status
// but StatusPending is final: the items service records it with the
// takedown ID, and answers it again for that ID, whatever happens later.
const (
	// StatusRemoved: this takedown removed the item.
	StatusRemoved = "removed"
	// StatusAlreadyRemoved: another takedown had removed the item before.
	StatusAlreadyRemoved = "already_removed"
	// StatusNotFound: no such item; nothing was applied.
	StatusNotFound = "not_found"
	// StatusExpired: the command was not taken up before its ExpiresAt;
	// it was not applied and never will be.
	StatusExpired = "expired"
	// StatusCancelled: the takedown was cancelled (ActionCancel) before
	// the command was taken up; it was not applied and never will be.
	StatusCancelled = "cancelled"
	// StatusPending: not final; the answer to ActionExpire before the
	// command's ExpiresAt, and to a query for a takedown the items
	// service has not taken up yet.
	StatusPending = "pending"
)

// Applied reports whether status says the takedown took the item down,
// now or before (removed or already removed).
func Applied(status string) bool {
	return status == StatusRemoved || status == StatusAlreadyRemoved
}

// Report statuses, as reported by ReportStatus.Status. The API reports
// StatusReceived itself, for a report it published that the items service
// has not processed yet.
const (
	StatusReceived = "received"
	StatusRecorded = "recorded"
	StatusRejected = "rejected"
)

// Actions of a TakedownCommand.
const (
	// ActionTakedown (the zero value) takes the item down.
	ActionTakedown = ""
	// ActionCancel records the takedown as StatusCancelled unless it has an
	// outcome already, and answers the outcome: a fence, after which the
	// takedown command is never applied.
	ActionCancel = "cancel"
	// ActionExpire is ActionCancel for a takedown past its ExpiresAt: it
	// records StatusExpired, and answers StatusPending (changing nothing)
	// before ExpiresAt.
	ActionExpire = "expire"
)

// TakedownCommand asks the items service to take an item down, or to fence
// a takedown off (Action). The TakedownID is the idempotency key: the
// items service records the outcome with it, in the transaction that
// applies the takedown, and answers a command whose ID it has seen with
// the outcome it recorded the first time.
type TakedownCommand struct {
	TakedownID  string    `json:"takedown_id"`
	ItemID      string    `json:"item_id"`
	Action      string    `json:"action,omitempty"`
	Reason      string    `json:"reason"`
	CaseRef     string    `json:"case_ref"`
	RequestedBy string    `json:"requested_by"` // the token's ID, never the token
	RequestedAt time.Time `json:"requested_at"`
	// ExpiresAt is when the command stops being valid: taken up after it,
	// it is recorded as StatusExpired and not applied. Zero means never.
	ExpiresAt time.Time `json:"expires_at"`
}

// TakedownResult is the reply to a TakedownCommand, and to a Query for a
// takedown: the outcome the items service recorded.
type TakedownResult struct {
	TakedownID string `json:"takedown_id"`
	ItemID     string `json:"item_id"`
	Status     string `json:"status"`
	// RemovedAt is when the item was taken down (by RemovedBy, for
	// StatusAlreadyRemoved); set only when Applied(Status).
	RemovedAt *time.Time `json:"removed_at,omitempty"`
	// RemovedBy is the takedown that removed the item, set with
	// StatusAlreadyRemoved.
	RemovedBy string `json:"removed_by,omitempty"`
	// RecordedAt is when the items service recorded this outcome; zero
	// with StatusPending.
	RecordedAt time.Time `json:"recorded_at,omitzero"`
}

// Query kinds.
const (
	QueryItem     = "item"
	QueryReport   = "report"
	QueryTakedown = "takedown"
)

// Query asks the items service for an item, a report's status or a
// takedown's result, by ID. The reply is an error reply with CodeNotFound
// when it does not know the ID.
type Query struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
}

// Audience says who sees an item: members of some groups, the owner's
// followers, or both.
type Audience struct {
	Groups    []string `json:"groups,omitempty"`
	Followers bool     `json:"followers"`
}

// Item is the view of an item that the items service serves.
type Item struct {
	ID         string     `json:"id"`
	Owner      string     `json:"owner"`
	Title      string     `json:"title"`
	Audience   Audience   `json:"audience"`
	TakenDown  bool       `json:"taken_down"`
	RemovedAt  *time.Time `json:"removed_at,omitempty"`
	TakedownID string     `json:"takedown_id,omitempty"`
	Reports    int        `json:"reports"`
}

// Report is a user's report of a dubious item, published on Topics.Reports.
type Report struct {
	ReportID    string    `json:"report_id"`
	ItemID      string    `json:"item_id"`
	Reason      string    `json:"reason"`
	Details     string    `json:"details,omitempty"`
	SubmittedAt time.Time `json:"submitted_at"`
}

// ReportStatus is what became of a Report.
type ReportStatus struct {
	ReportID    string     `json:"report_id"`
	ItemID      string     `json:"item_id"`
	Status      string     `json:"status"`
	SubmittedAt time.Time  `json:"submitted_at"`
	ProcessedAt *time.Time `json:"processed_at,omitempty"`
}

// EventHeader is the header naming a domain event's type on Topics.Events;
// its value is one of the Event constants, and the message's value is the
// event as JSON.
const EventHeader = "event_type"

// Domain event types.
const (
	// EventItemTakenDown: an ItemTakenDown.
	EventItemTakenDown = "ItemTakenDown"
	// EventReportProcessed: a ReportStatus, recorded or rejected.
	EventReportProcessed = "ReportProcessed"
)

// ItemTakenDown is published on Topics.Events when an item is taken down,
// for the services that must react: search, feeds of the groups and
// followers in its audience, notifications to its owner.
type ItemTakenDown struct {
	ItemID     string    `json:"item_id"`
	Owner      string    `json:"owner"`
	Audience   Audience  `json:"audience"`
	TakedownID string    `json:"takedown_id"`
	Reason     string    `json:"reason"`
	CaseRef    string    `json:"case_ref"`
	RemovedAt  time.Time `json:"removed_at"`
}

// Limits on identifiers and free text, checked by both sides.
const (
	MaxIDLen   = 64
	MaxTextLen = 500
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// ValidID reports whether id is a well-formed item, report or takedown ID:
// 1 to MaxIDLen letters, digits, dots, dashes and underscores.
func ValidID(id string) bool {
	return len(id) > 0 && len(id) <= MaxIDLen && idPattern.MatchString(id)
}

// ValidText reports whether s is acceptable free text: valid UTF-8
// without control characters other than tab, newline and carriage return
// (a NUL byte, in particular, which PostgreSQL cannot store).
func ValidText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if (r < 0x20 && r != '\t' && r != '\n' && r != '\r') || r == 0x7f {
			return false
		}
	}
	return true
}

// Encode returns a message for topic whose value is v as JSON, keyed by
// key. Headers are optional.
func Encode(topic, key string, v any, headers ...syncbridge.Header) (syncbridge.Message, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return syncbridge.Message{}, fmt.Errorf("encode %T: %w", v, err)
	}
	return syncbridge.Message{Topic: topic, Key: []byte(key), Value: b, Headers: headers}, nil
}

// DecodeStrict decodes msg's value into v, a pointer to a struct, as
// Strict does: for requests, which must be exactly what the contract says.
func DecodeStrict(msg *syncbridge.Message, v any) error {
	if err := Strict(msg.Value, v); err != nil {
		return fmt.Errorf("decode %T from %q: %w", v, msg.Topic, err)
	}
	return nil
}

// Decode decodes msg's value into v, which must be a pointer: for replies
// and events, which may gain fields.
func Decode(msg *syncbridge.Message, v any) error {
	if err := json.Unmarshal(msg.Value, v); err != nil {
		return fmt.Errorf("decode %T from %q: %w", v, msg.Topic, err)
	}
	return nil
}
