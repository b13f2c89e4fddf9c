package syncbridge

import (
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeReplyPartition feeds arbitrary kafka_replyPartition values to
// the Responder's decoder: it returns a partition or ErrMalformedHeader,
// never panics, and what it returns is what the value said, in the form it
// said it.
func FuzzDecodeReplyPartition(f *testing.F) {
	for _, s := range [][]byte{{0, 0, 0, 3}, []byte("3"), []byte("0"), []byte("2147483647"), []byte("2147483648"), {0x80, 0, 0, 0}, []byte("0003"), {}, []byte("-1")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, dec, err := decodeReplyPartition(b)
		if err != nil {
			if !errors.Is(err, ErrMalformedHeader) {
				t.Fatalf("error %v is not ErrMalformedHeader", err)
			}
			return
		}
		if p < 0 {
			t.Fatalf("negative partition %d from %x", p, b)
		}
		if dec {
			n, perr := strconv.ParseInt(string(b), 10, 32)
			if perr != nil || int32(n) != p || b[0] == '+' || b[0] == '-' {
				t.Fatalf("decimal %q decoded as %d (strconv: %d, %v)", b, p, n, perr)
			}
			return
		}
		if got := DialectSpring.appendReplyPartition(nil, p); string(got) != string(b) {
			t.Fatalf("binary %x decoded as %d, which encodes as %x", b, p, got)
		}
	})
}

// FuzzNestError: any code and description survive encoding as a
// kafka_nest-err JSON object and decoding again (as valid UTF-8: JSON
// replaces invalid bytes), and any kafka_nest-err value decodes to a code
// and a description without panicking.
func FuzzNestError(f *testing.F) {
	f.Add("not_found", "no item 7", []byte(`{"status":"error","message":"x"}`))
	f.Add("", "", []byte(`{"code":404,"message":["a","b"]}`))
	f.Add("\xff", "\"quoted\"\n", []byte("plain string"))
	f.Add("c", "d", []byte(`{"code":{"nested":1},"message":null}`))
	f.Fuzz(func(t *testing.T, code, desc string, raw []byte) {
		v := encodeNestError(&RemoteError{Code: code, Description: desc})
		var obj map[string]any
		if err := json.Unmarshal(v, &obj); err != nil || obj["status"] != "error" {
			t.Fatalf("encodeNestError(%q, %q) = %q: not a NestJS error object (%v)", code, desc, v, err)
		}
		gotCode, gotDesc := decodeNestError(v)
		wantCode := code
		if wantCode == "" {
			wantCode = CodeInternal
		}
		if utf8.ValidString(code) && gotCode != wantCode {
			t.Fatalf("code %q came back as %q", code, gotCode)
		}
		if utf8.ValidString(desc) && gotDesc != desc {
			t.Fatalf("description %q came back as %q", desc, gotDesc)
		}
		c, _ := decodeNestError(raw)
		if c == "" {
			t.Fatalf("decodeNestError(%q): empty code", raw)
		}
	})
}
