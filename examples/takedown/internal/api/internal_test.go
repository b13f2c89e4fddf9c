package api

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestTokens(t *testing.T) {
	toks, err := NewTokens("alpha-token", " ", "", " beta-token ")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		header string
		wantID string
		wantOK bool
	}{
		{"Bearer alpha-token", TokenID("alpha-token"), true},
		{"bearer beta-token", TokenID("beta-token"), true},
		{"Bearer  beta-token ", TokenID("beta-token"), true},
		{"", "", false},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"Bearer alpha-toke", "", false},
		{"Bearer alpha-token2", "", false},
		{"Basic alpha-token", "", false},
		{"alpha-token", "", false},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if tt.header != "" {
			r.Header.Set("Authorization", tt.header)
		}
		id, ok := toks.Check(r)
		if id != tt.wantID || ok != tt.wantOK {
			t.Errorf("Check(%q) = %q, %v; want %q, %v", tt.header, id, ok, tt.wantID, tt.wantOK)
		}
	}
	for _, id := range toks.IDs() {
		if !strings.HasPrefix(id, "tok-") || strings.Contains(id, "alpha") || strings.Contains(id, "beta") {
			t.Errorf("token ID %q", id)
		}
	}
	if _, err := NewTokens("", "  "); err == nil {
		t.Error("NewTokens of empty tokens: no error")
	}
}

// finished returns a takedown that ended at end.
func finished(id string, end time.Time) *takedown {
	td := &takedown{id: id, done: make(chan struct{}), end: end}
	close(td.done)
	return td
}

func pendingTD(id string) *takedown { return &takedown{id: id, done: make(chan struct{})} }

func TestStoreBounded(t *testing.T) {
	s := newStore(2, time.Hour)
	now := time.Now()
	if !s.add(pendingTD("p1")) || !s.add(finished("f1", now.Add(-time.Minute))) {
		t.Fatal("add to a store with room failed")
	}
	// Full: the finished one makes room, the pending one stays.
	if !s.add(pendingTD("p2")) {
		t.Fatal("add did not evict the finished takedown")
	}
	if _, ok := s.get("f1"); ok {
		t.Error("f1 was not evicted")
	}
	// Full of pending takedowns: no room.
	if s.add(pendingTD("p3")) {
		t.Error("add to a store full of pending takedowns succeeded")
	}
	for _, id := range []string{"p1", "p2"} {
		if _, ok := s.get(id); !ok {
			t.Errorf("%s was evicted", id)
		}
	}
	s.close()
	if s.add(finished("f2", now)) {
		t.Error("add after close succeeded")
	}
}

func TestStoreEvictsOldestFinished(t *testing.T) {
	s := newStore(3, time.Hour)
	now := time.Now()
	s.add(finished("newer", now.Add(-time.Second)))
	s.add(finished("older", now.Add(-time.Minute)))
	s.add(pendingTD("p"))
	if !s.add(pendingTD("q")) {
		t.Fatal("add failed")
	}
	if _, ok := s.get("older"); ok {
		t.Error("the oldest finished takedown was kept")
	}
	if _, ok := s.get("newer"); !ok {
		t.Error("the newer finished takedown was evicted")
	}
}

func TestStoreForgetsAfterTTL(t *testing.T) {
	s := newStore(10, time.Minute)
	s.add(finished("old", time.Now().Add(-2*time.Minute)))
	s.add(finished("recent", time.Now()))
	if _, ok := s.get("old"); ok {
		t.Error("a takedown finished past the TTL was served")
	}
	if _, ok := s.get("recent"); !ok {
		t.Error("a recent takedown was forgotten")
	}
	if n := s.len(); n != 1 {
		t.Errorf("len = %d, want 1", n)
	}
}

func TestFIFO(t *testing.T) {
	f := newFIFO(2)
	for _, id := range []string{"a", "b", "c"} {
		f.add(id, reportAt{itemID: "itm-" + id})
	}
	if _, ok := f.get("a"); ok {
		t.Error("the oldest report was kept past the bound")
	}
	if r, ok := f.get("c"); !ok || r.itemID != "itm-c" {
		t.Errorf("get(c) = %v, %v", r, ok)
	}
}

// FuzzDecodeTakedown: whatever the body, decoding answers 400 or 413, or
// yields a request that validation accepts or rejects, without panicking.
func FuzzDecodeTakedown(f *testing.F) {
	f.Add([]byte(`{"item_id":"itm-1002","reason":"counterfeit","case_ref":"PJ-1"}`))
	f.Add([]byte(`{"item_id":"itm-1002","reason":"r","case_ref":"c"} {}`))
	f.Add([]byte(`{"item_id":1}`))
	f.Add([]byte(`{"item_id":"\u0000"}`))
	f.Add([]byte(strings.Repeat(" ", 300)))
	f.Fuzz(func(t *testing.T, body []byte) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/v1/takedowns", bytes.NewReader(body))
		var req takedownRequest
		status, err := decodeJSON(w, r, 256, &req)
		switch {
		case err == nil && status == 0:
			if req.validate() == nil && (req.ItemID == "" || req.Reason == "" || req.CaseRef == "") {
				t.Errorf("validate accepted %+v", req)
			}
		case err != nil && (status == http.StatusBadRequest || status == http.StatusRequestEntityTooLarge):
			if len(body) <= 256 && status == http.StatusRequestEntityTooLarge {
				t.Errorf("413 for %d bytes", len(body))
			}
		default:
			t.Errorf("decodeJSON = %d, %v", status, err)
		}
	})
}
