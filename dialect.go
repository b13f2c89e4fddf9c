package syncbridge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// This file holds what syncbridge does to interoperate with the request/reply
// conventions of other frameworks on Kafka beyond the headers they share
// (kafka_correlationId, kafka_replyTopic, kafka_replyPartition):
//
//   - Spring Kafka (ReplyingKafkaTemplate, @KafkaListener with @SendTo)
//     writes the reply partition as a 4-byte big-endian int32 and has no
//     error convention of its own.
//   - NestJS (@nestjs/microservices ClientKafka and @MessagePattern over
//     kafkajs) writes the reply partition as decimal ASCII ("0"), reads a
//     header that starts with byte 0x00 as a raw buffer (so a 4-byte
//     partition becomes NaN), completes a caller's observable only on a
//     reply carrying kafka_nest-is-disposed or kafka_nest-err, and carries
//     errors as kafka_nest-err (a JSON object, or a string).
//
// Everything here that reads bytes from other processes returns an error or
// a best-effort value, never panics (see FuzzDecodeReplyPartition and
// FuzzNestError).

// NestJS's header names (@nestjs/microservices KafkaHeaders.NEST_ERR and
// KafkaHeaders.NEST_IS_DISPOSED).
const (
	// NestErrHeader marks a NestJS error reply and carries the error: a
	// JSON object (such as {"status":"error","message":"..."}) or a string.
	NestErrHeader = "kafka_nest-err"
	// NestIsDisposedHeader marks the last reply to a NestJS request: the
	// caller's observable completes when it arrives.
	NestIsDisposedHeader = "kafka_nest-is-disposed"
)

// Dialect says which framework's conventions a Bridge writes and a Responder
// answers in, where frameworks disagree. Every dialect reads what every
// other writes: a Responder reads a reply partition written either way, and
// a Bridge recognises both syncbridge's and NestJS's error replies. The zero
// value is DialectAuto.
type Dialect int

// Dialects.
const (
	// DialectAuto, the default, decides per request. A Responder answers a
	// request whose reply partition is decimal ASCII (as NestJS's
	// ClientKafka writes it, on every request) the way a NestJS responder
	// would (see DialectNestJS), and every other request the syncbridge
	// way, which Spring callers read. A Bridge cannot tell what its
	// responder reads, and writes a pinned reply partition the Spring way
	// (4 bytes, big-endian), which Spring @SendTo listeners and syncbridge
	// Responders read.
	DialectAuto Dialect = iota
	// DialectSpring: a Bridge writes a pinned reply partition as 4 bytes,
	// big-endian (as with DialectAuto); a Responder never adds NestJS's
	// headers to its replies.
	DialectSpring
	// DialectNestJS: a Bridge writes a pinned reply partition as decimal
	// ASCII, which NestJS responders and syncbridge Responders read, and
	// Spring @SendTo listeners do not: give a Bridge pinned to partitions
	// that calls NestJS responders this dialect. A Responder marks every
	// reply with kafka_nest-is-disposed, and an error reply also with
	// kafka_nest-err carrying {"status":"error","message":Description,
	// "code":Code}, besides syncbridge's own error headers; a NestJS
	// caller's observable then completes, or fails with that object.
	DialectNestJS
	numDialects
)

var dialectNames = [...]string{"auto", "spring", "nestjs"}

// String returns "auto", "spring" or "nestjs".
func (d Dialect) String() string {
	if d < 0 || d >= numDialects {
		return "Dialect(" + strconv.Itoa(int(d)) + ")"
	}
	return dialectNames[d]
}

func (d Dialect) validate() error {
	if d < 0 || d >= numDialects {
		return fmt.Errorf("syncbridge: WithDialect: unknown dialect %d", int(d))
	}
	return nil
}

// WithDialect sets the dialect of a Bridge or a Responder (see Dialect).
// Default DialectAuto. New and NewResponder reject an unknown value.
func WithDialect(d Dialect) SharedOption {
	return sharedOpt{opt{"WithDialect", func(c *config) { c.dialect = d }}}
}

// appendReplyPartition appends the reply partition header's value for p in
// the dialect's form.
func (d Dialect) appendReplyPartition(dst []byte, p int32) []byte {
	if d == DialectNestJS {
		return strconv.AppendInt(dst, int64(p), 10)
	}
	return append(dst, byte(p>>24), byte(p>>16), byte(p>>8), byte(p))
}

// nestReply reports whether a Responder in this dialect answers the request
// ri the NestJS way.
func (d Dialect) nestReply(ri *requestInfo) bool {
	switch d {
	case DialectNestJS:
		return true
	case DialectAuto:
		return ri.decimalPartition
	}
	return false
}

// nestDisposed is the value NestJS gives kafka_nest-is-disposed: one zero
// byte (Buffer.alloc(1)). Shared by every reply: never modified.
var nestDisposed = []byte{0}

// appendNestHeaders appends to hdrs what a NestJS responder puts on the last
// reply to a request: kafka_nest-err when re is not nil, and
// kafka_nest-is-disposed.
func appendNestHeaders(hdrs []Header, re *RemoteError) []Header {
	if re != nil {
		hdrs = append(hdrs, Header{Key: NestErrHeader, Value: encodeNestError(re)})
	}
	return append(hdrs, Header{Key: NestIsDisposedHeader, Value: nestDisposed})
}

// nestError is the JSON object of a kafka_nest-err header: what a NestJS
// responder sends for an RpcException("message"), plus syncbridge's code.
type nestError struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Code    string `json:"code"`
}

// encodeNestError encodes re as a kafka_nest-err value: a JSON object, so
// that a NestJS caller's observable fails with {status, message, code}.
func encodeNestError(re *RemoteError) []byte {
	code := re.Code
	if code == "" {
		code = CodeInternal
	}
	b, err := json.Marshal(nestError{Status: "error", Message: re.Description, Code: code})
	if err != nil { // strings always encode; invalid UTF-8 becomes U+FFFD
		return []byte(`{"status":"error","message":"","code":"internal"}`)
	}
	return b
}

// maxNestErrorJSON bounds the kafka_nest-err values parsed as JSON; longer
// ones are kept whole as the description.
const maxNestErrorJSON = 64 << 10

// decodeNestError turns a kafka_nest-err value into a code and a
// description, as a NestJS caller would read it. A JSON object gives its
// "code" (a string, or a number's text; CodeInternal when absent) and its
// "message" (when a string; the whole object otherwise). Anything else
// (NestJS sends some errors as plain strings) is the description, with
// CodeInternal.
func decodeNestError(v []byte) (code, desc string) {
	t := bytes.TrimSpace(v)
	if len(t) > 0 && t[0] == '{' && len(t) <= maxNestErrorJSON {
		var obj struct {
			Code    json.RawMessage `json:"code"`
			Message json.RawMessage `json:"message"`
		}
		if json.Unmarshal(t, &obj) == nil {
			code = jsonText(obj.Code)
			desc = jsonText(obj.Message)
			if desc == "" && !isJSONString(obj.Message) {
				desc = string(t)
			}
			if code == "" {
				code = CodeInternal
			}
			return code, desc
		}
	}
	return CodeInternal, string(v)
}

// jsonText returns a JSON string's value, or a JSON number's text, or "".
func jsonText(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	switch c := raw[0]; {
	case c == '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	case c == '-' || (c >= '0' && c <= '9'):
		return string(raw)
	}
	return ""
}

func isJSONString(raw json.RawMessage) bool { return len(raw) > 0 && raw[0] == '"' }

// isNestHeader reports whether key is one of NestJS's reply headers, which a
// Responder sets itself and never takes from a handler's reply.
func isNestHeader(key string) bool {
	return key == NestErrHeader || key == NestIsDisposedHeader
}
