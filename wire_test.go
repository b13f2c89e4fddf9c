package syncbridge

import (
	"bytes"
	"errors"
	"strconv"
	"testing"
	"time"
)

func TestIDRoundTrip(t *testing.T) {
	g := newIDGen()
	for _, seq := range []uint64{1, 2, 0xabc, 1<<48 - 1, 1<<64 - 1} {
		id := g.appendID(nil, seq)
		if len(id) != idLen || !g.own(id) {
			t.Fatalf("ID %q of %d: length %d, own %v", id, seq, len(id), g.own(id))
		}
		got, ok := g.parse(id)
		if !ok || got != seq {
			t.Errorf("parse(%q) = %d, %v; want %d", id, got, ok, seq)
		}
	}
	other := newIDGen()
	if other.own(g.appendID(nil, 1)) {
		t.Error("another generator claims this generator's ID")
	}
}

func TestDeadlineRoundTrip(t *testing.T) {
	d := time.UnixMilli(1764102531123)
	got, err := decodeDeadline(appendDeadline(nil, d))
	if err != nil || !got.Equal(d) {
		t.Errorf("decodeDeadline = %v, %v; want %v", got, err, d)
	}
	for _, bad := range []string{"", "-1", "12a", "99999999999999999999", "1 2"} {
		if _, err := decodeDeadline([]byte(bad)); !errors.Is(err, ErrMalformedHeader) {
			t.Errorf("decodeDeadline(%q) = %v, want ErrMalformedHeader", bad, err)
		}
	}
}

func TestReplyPartitionRoundTrip(t *testing.T) {
	for _, d := range []Dialect{DialectAuto, DialectSpring, DialectNestJS} {
		for _, p := range []int32{0, 1, 2, 1<<24 - 1, 1<<31 - 1} {
			got, dec, err := decodeReplyPartition(d.appendReplyPartition(nil, p))
			if err != nil || got != p || dec != (d == DialectNestJS) {
				t.Errorf("%v partition %d: got %d, decimal %v, %v", d, p, got, dec, err)
			}
		}
	}
	for _, bad := range [][]byte{nil, {1}, {0, 0, 0, 0, 1}, {0x80, 0, 0, 0}, []byte("-1"), []byte("2147483648"), []byte("12345678901"), []byte(" 1"), []byte("1.0")} {
		if _, _, err := decodeReplyPartition(bad); !errors.Is(err, ErrMalformedHeader) {
			t.Errorf("decodeReplyPartition(%x) = %v, want ErrMalformedHeader", bad, err)
		}
	}
}

// FuzzParseRequest feeds arbitrary header values to what a Responder
// decodes off the wire: it must return a value or an error, never panic,
// and what it returns must be what the headers said.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte("9a3c0b1e-5d2f-4e1a-0000-000000000001"), []byte("replies"), []byte{0, 0, 0, 3}, []byte("1764102531123"))
	f.Add([]byte{}, []byte{}, []byte{}, []byte{})
	f.Add([]byte{0xff}, []byte("t"), []byte{0x80, 0, 0, 0}, []byte("-5"))
	f.Add([]byte("nest-id"), []byte("t.reply"), []byte("2"), []byte("1764102531123"))
	h := DefaultHeaderNames()
	f.Fuzz(func(t *testing.T, id, to, part, deadline []byte) {
		msg := Message{Headers: []Header{
			{Key: h.CorrelationID, Value: id},
			{Key: h.ReplyTopic, Value: to},
			{Key: h.ReplyPartition, Value: part},
			{Key: h.Deadline, Value: deadline},
		}}
		ri, err := parseRequest(&msg, &h, nil)
		if err != nil {
			if !errors.Is(err, ErrMalformedHeader) {
				t.Fatalf("error %v is not ErrMalformedHeader", err)
			}
			return
		}
		if !bytes.Equal(ri.id, id) || ri.replyTo != string(to) || !ri.hasPartition || ri.partition < 0 {
			t.Fatalf("parsed %+v from id %q to %q part %x", ri, id, to, part)
		}
		if ri.decimalPartition {
			if want := strconv.Itoa(int(ri.partition)); string(bytes.TrimLeft(part, "0")) != want && !(want == "0" && len(bytes.TrimLeft(part, "0")) == 0) {
				t.Fatalf("decimal partition %q parsed as %d", part, ri.partition)
			}
		} else if !bytes.Equal(DialectSpring.appendReplyPartition(nil, ri.partition), part) {
			t.Fatalf("partition %d does not encode back to %x", ri.partition, part)
		}
		if got := appendDeadline(nil, ri.deadline); string(bytes.TrimLeft(deadline, "0")) != string(got) && !(string(got) == "0") {
			t.Fatalf("deadline %q parsed as %v (%q)", deadline, ri.deadline, got)
		}
	})
}

// FuzzReplyID feeds arbitrary correlation IDs to what a Bridge decodes
// from each reply: own and parse must agree with appendID and never panic.
func FuzzReplyID(f *testing.F) {
	g := newIDGen()
	f.Add(g.appendID(nil, 42))
	f.Add([]byte("not an id"))
	f.Add(append(g.prefix[:], "zzzz-zzzzzzzzzzzz"...))
	f.Fuzz(func(t *testing.T, id []byte) {
		if !g.own(id) {
			return
		}
		seq, ok := g.parse(id)
		if ok && !bytes.Equal(g.appendID(nil, seq), id) {
			t.Fatalf("parse(%q) = %d, which formats as %q", id, seq, g.appendID(nil, seq))
		}
	})
}

// FuzzReplyError checks that any error headers decode to a RemoteError.
func FuzzReplyError(f *testing.F) {
	f.Add([]byte("not_found"), []byte("no item"))
	f.Add([]byte{}, []byte{0xff})
	h := DefaultHeaderNames()
	f.Fuzz(func(t *testing.T, code, desc []byte) {
		msg := Message{Headers: []Header{{Key: h.ErrorCode, Value: code}, {Key: h.ErrorDescription, Value: desc}}}
		re := parseReplyError(&msg, &h)
		if re == nil || re.Code == "" || re.Description != string(desc) || re.Error() == "" {
			t.Fatalf("parseReplyError = %+v", re)
		}
	})
}
