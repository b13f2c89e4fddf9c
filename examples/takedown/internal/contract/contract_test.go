package contract

import (
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
	in := TakedownResult{TakedownID: "td-1", ItemID: "itm-1", Status: StatusRemoved, RemovedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	msg, err := Encode("t", "itm-1", in)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Topic != "t" || string(msg.Key) != "itm-1" {
		t.Errorf("message %+v", msg)
	}
	var out TakedownResult
	if err := Decode(&msg, &out); err != nil || out != in {
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
