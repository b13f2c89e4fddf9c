package contract

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestValidID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"itm-1002", true},
		{"td-3kq7yv2m4rwe5xhn", true},
		{"A.b_c-9", true},
		{strings.Repeat("x", MaxIDLen), true},
		{"", false},
		{strings.Repeat("x", MaxIDLen+1), false},
		{"itm 1002", false},
		{"../etc", false},
		{"itm/1002", false},
		{"itm-1002\n", false},
		{"ítem", false},
	}
	for _, tt := range tests {
		if got := ValidID(tt.id); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func TestEncodeDecode(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	in := TakedownResult{TakedownID: "td-1", ItemID: "itm-1", Status: StatusRemoved, RemovedAt: &at, RecordedAt: at}
	msg, err := Encode("t", "itm-1", in)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Topic != "t" || string(msg.Key) != "itm-1" {
		t.Errorf("message %+v", msg)
	}
	var out TakedownResult
	if err := Decode(&msg, &out); err != nil || out.RemovedAt == nil || !out.RemovedAt.Equal(at) || out.TakedownID != in.TakedownID || !out.RecordedAt.Equal(at) {
		t.Errorf("Decode = %+v, %v; want %+v", out, err, in)
	}
	msg.Value = []byte("{")
	if err := Decode(&msg, &out); err == nil {
		t.Error("Decode of malformed JSON: no error")
	}
}

func TestDefaultTopics(t *testing.T) {
	ts := DefaultTopics("dev.")
	seen := map[string]bool{}
	for _, name := range []string{ts.Takedowns, ts.Queries, ts.Reports, ts.Events, ts.Replies} {
		if !strings.HasPrefix(name, "dev.") || seen[name] {
			t.Errorf("topic %q: unprefixed or repeated", name)
		}
		seen[name] = true
	}
}

type body struct {
	ItemID  string `json:"item_id"`
	Reason  string `json:"reason"`
	Skipped string `json:"-"`
	Plain   string
}

// TestStrict: what encoding/json lets through and Strict refuses.
func TestStrict(t *testing.T) {
	tests := []struct {
		name, in string
		ok       bool
		want     body
	}{
		{"plain", `{"item_id":"itm-1","reason":"r"}`, true, body{ItemID: "itm-1", Reason: "r"}},
		{"untagged field by its name", `{"Plain":"p"}`, true, body{Plain: "p"}},
		{"whitespace around", " \n{\"item_id\":\"a\"}\n ", true, body{ItemID: "a"}},
		{"empty object", `{}`, true, body{}},
		{"duplicate key", `{"item_id":"itm-1","reason":"r","item_id":"itm-2"}`, false, body{}},
		{"key differing by case", `{"Item_ID":"itm-1"}`, false, body{}},
		{"both cases", `{"item_id":"itm-1","ITEM_ID":"itm-2"}`, false, body{}},
		{"untagged field by another case", `{"plain":"p"}`, false, body{}},
		{"ignored field", `{"Skipped":"s"}`, false, body{}},
		{"unknown key", `{"item_id":"itm-1","urgent":true}`, false, body{}},
		{"two objects", `{"item_id":"a"}{"item_id":"b"}`, false, body{}},
		{"trailing garbage", `{"item_id":"a"} x`, false, body{}},
		{"not an object", `["item_id"]`, false, body{}},
		{"null", `null`, false, body{}},
		{"empty", ``, false, body{}},
		{"wrong type", `{"item_id":1}`, false, body{}},
		{"object value", `{"item_id":{"a":1,"a":2}}`, false, body{}},
		{"invalid UTF-8", "{\"item_id\":\"\xff\"}", false, body{}},
		{"truncated", `{"item_id":"a"`, false, body{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got body
			err := Strict([]byte(tt.in), &got)
			if (err == nil) != tt.ok {
				t.Fatalf("Strict(%q) = %v, want ok %v", tt.in, err, tt.ok)
			}
			if tt.ok && got != tt.want {
				t.Errorf("Strict(%q) decoded %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
	if err := Strict([]byte(`{}`), body{}); err == nil {
		t.Error("Strict into a non-pointer: no error")
	}
}

func TestValidText(t *testing.T) {
	for s, want := range map[string]bool{
		"counterfeit goods": true, "line\nbreak\ttab": true, "ünïcödé ✓": true, "": true,
		"nul\x00": false, "bell\a": false, "del\x7f": false, "bad\xff": false,
	} {
		if got := ValidText(s); got != want {
			t.Errorf("ValidText(%q) = %v, want %v", s, got, want)
		}
	}
}

// FuzzStrict: whatever the bytes, Strict never panics; what it accepts,
// encoding/json decodes to the same value, and holds no key twice in any
// case.
func FuzzStrict(f *testing.F) {
	for _, s := range []string{`{"item_id":"a","reason":"r"}`, `{"item_id":"a","item_id":"b"}`, `{"ITEM_ID":"a"}`, `{"Plain":"x"}`, `{} {}`, `{"reason":"\u0000"}`, "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var got body
		if err := Strict(in, &got); err != nil {
			return
		}
		var std body
		if err := json.Unmarshal(in, &std); err != nil || std != got {
			t.Errorf("Strict accepted %q as %+v; encoding/json: %+v, %v", in, got, std, err)
		}
		dec := json.NewDecoder(bytes.NewReader(in))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			t.Fatalf("Strict accepted %q, which is not an object", in)
		}
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				t.Fatal(err)
			}
			key := strings.ToLower(tok.(string))
			if seen[key] {
				t.Errorf("Strict accepted %q with %q twice", in, key)
			}
			seen[key] = true
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				t.Fatal(err)
			}
		}
	})
}
