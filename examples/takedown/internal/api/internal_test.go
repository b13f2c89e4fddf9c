package api

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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

// FuzzDecodeTakedown: whatever the body, reading it answers 400 or 413 (413
// exactly when it is over the limit), or yields a request that validation
// accepts or rejects, without panicking.
func FuzzDecodeTakedown(f *testing.F) {
	f.Add([]byte(`{"item_id":"itm-1002","reason":"counterfeit","case_ref":"PJ-1"}`))
	f.Add([]byte(`{"item_id":"itm-1002","reason":"r","case_ref":"c"} {}`))
	f.Add([]byte(`{"item_id":1}`))
	f.Add([]byte(`{"item_id":"\u0000"}`))
	f.Add([]byte(strings.Repeat(" ", 300)))
	f.Add([]byte(`{"item_id":"itm-1002","reason":"r","case_ref":"c"}` + strings.Repeat(" ", 250)))
	f.Add([]byte(`{"item_id":"a","ITEM_ID":"b","reason":"r","case_ref":"c"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/v1/takedowns", bytes.NewReader(body))
		var req takedownRequest
		status, err := readJSON(w, r, 256, &req)
		switch {
		case err == nil && status == 0:
			if req.validate() == nil && (req.ItemID == "" || req.Reason == "" || req.CaseRef == "") {
				t.Errorf("validate accepted %+v", req)
			}
		case err != nil && (status == http.StatusBadRequest || status == http.StatusRequestEntityTooLarge):
			if (len(body) > 256) != (status == http.StatusRequestEntityTooLarge) {
				t.Errorf("%d for %d bytes", status, len(body))
			}
		default:
			t.Errorf("readJSON = %d, %v", status, err)
		}
	})
}
