package syncbridge

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"sync/atomic"
	"time"
)

// This file encodes and decodes the headers syncbridge puts on the wire.
// Everything here parses bytes from other processes: it returns errors,
// never panics (see FuzzParseRequest, FuzzReplyID and FuzzReplyError).

// maxIDLen bounds the correlation ID a Responder accepts and echoes.
const maxIDLen = 256

// decodeReplyPartition decodes a ReplyPartition header written either way:
// as decimal ASCII (NestJS, 1 to 10 digits), reported by decimal, or as 4
// bytes, big-endian (Spring, syncbridge). Four digits are read as decimal:
// as 4 bytes they would name a partition above 800,000,000.
func decodeReplyPartition(b []byte) (p int32, decimal bool, err error) {
	// interop (dialect.go): decimal ASCII
	if n, ok := parseDecimalPartition(b); ok {
		return n, true, nil
	}
	if len(b) != 4 {
		return 0, false, fmt.Errorf("%w: reply partition %q is neither 4 bytes nor decimal", ErrMalformedHeader, b)
	}
	p = int32(binary.BigEndian.Uint32(b))
	if p < 0 {
		return 0, false, fmt.Errorf("%w: negative reply partition %d", ErrMalformedHeader, p)
	}
	return p, false, nil
}

// parseDecimalPartition parses 1 to 10 ASCII digits whose value fits an
// int32.
func parseDecimalPartition(b []byte) (int32, bool) {
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if n > math.MaxInt32 {
		return 0, false
	}
	return int32(n), true
}

// appendDeadline appends t as decimal Unix milliseconds.
func appendDeadline(dst []byte, t time.Time) []byte {
	return strconv.AppendInt(dst, t.UnixMilli(), 10)
}

// decodeDeadline decodes a Deadline header.
func decodeDeadline(b []byte) (time.Time, error) {
	if len(b) == 0 || len(b) > 19 {
		return time.Time{}, fmt.Errorf("%w: deadline of %d bytes", ErrMalformedHeader, len(b))
	}
	var ms int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return time.Time{}, fmt.Errorf("%w: deadline %q is not decimal milliseconds", ErrMalformedHeader, b)
		}
		ms = ms*10 + int64(c-'0')
		if ms < 0 {
			return time.Time{}, fmt.Errorf("%w: deadline %q overflows", ErrMalformedHeader, b)
		}
	}
	return time.UnixMilli(ms), nil
}

// requestInfo is what a Responder reads from a request's headers.
type requestInfo struct {
	id           []byte // correlation ID, echoed byte for byte
	replyTo      string // reply topic
	partition    int32  // reply partition, when hasPartition
	hasPartition bool   // the request named a reply partition
	// decimalPartition: the partition was decimal ASCII, as NestJS writes
	// it (see Dialect).
	decimalPartition bool
	deadline         time.Time // zero when the request carried none
	// gather: the request asks who answers (the Responder header), as
	// Gather's do.
	gather bool
}

// parseRequest reads the routing headers of a request. last, when not nil,
// caches the reply topic's string: requests name the same few reply topics
// over and over, and converting each costs an allocation.
func parseRequest(msg *Message, h *HeaderNames, last *atomic.Pointer[string]) (requestInfo, error) {
	var ri requestInfo
	// One pass over the headers; the first of each name wins, as in
	// Message.Header.
	var id, to, part, dl []byte
	var hasID, hasTo, hasPart, hasDL bool
	for i := range msg.Headers {
		x := &msg.Headers[i]
		switch {
		case x.Key == h.CorrelationID && !hasID:
			id, hasID = x.Value, true
		case x.Key == h.ReplyTopic && !hasTo:
			to, hasTo = x.Value, true
		case x.Key == h.ReplyPartition && !hasPart:
			part, hasPart = x.Value, true
		case x.Key == h.Deadline && !hasDL:
			dl, hasDL = x.Value, true
		case x.Key == h.Responder:
			ri.gather = true
		}
	}
	if len(id) == 0 {
		return ri, fmt.Errorf("%w: no %s header", ErrMalformedHeader, h.CorrelationID)
	}
	if len(id) > maxIDLen {
		return ri, fmt.Errorf("%w: %s header of %d bytes, limit %d", ErrMalformedHeader, h.CorrelationID, len(id), maxIDLen)
	}
	ri.id = id
	if len(to) == 0 {
		return ri, fmt.Errorf("%w: no %s header", ErrMalformedHeader, h.ReplyTopic)
	}
	if len(to) > 249 { // Kafka's topic name limit
		return ri, fmt.Errorf("%w: %s header of %d bytes", ErrMalformedHeader, h.ReplyTopic, len(to))
	}
	if last == nil {
		ri.replyTo = string(to)
	} else if p := last.Load(); p != nil && *p == string(to) {
		ri.replyTo = *p
	} else {
		topic := string(to)
		last.Store(&topic)
		ri.replyTo = topic
	}
	if hasPart {
		p, dec, err := decodeReplyPartition(part)
		if err != nil {
			return ri, err
		}
		ri.partition, ri.hasPartition, ri.decimalPartition = p, true, dec
	}
	if hasDL {
		d, err := decodeDeadline(dl)
		if err != nil {
			return ri, err
		}
		ri.deadline = d
	}
	return ri, nil
}

// parseReplyError returns the *RemoteError an error reply carries, or nil
// for a normal reply: syncbridge's error headers, or else NestJS's
// kafka_nest-err (see decodeNestError).
func parseReplyError(msg *Message, h *HeaderNames) *RemoteError {
	code, ok := msg.Header(h.ErrorCode)
	if !ok {
		// interop (dialect.go): a NestJS responder's error reply
		if v, nest := msg.Header(NestErrHeader); nest {
			c, d := decodeNestError(v)
			return &RemoteError{Code: c, Description: d, Reply: msg}
		}
		return nil
	}
	desc, _ := msg.Header(h.ErrorDescription)
	if len(code) == 0 {
		code = []byte(CodeInternal)
	}
	return &RemoteError{Code: string(code), Description: string(desc), Reply: msg}
}
