package api_test

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/contract"
)

// TestTakedown goes through every synchronous answer of the takedown API,
// over real HTTP, a real Bridge and the items service's Responder.
func TestTakedown(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, setup{maxBody: 1 << 10})
		big := `{"item_id":"itm-1001","reason":"` + strings.Repeat("x", 2<<10) + `","case_ref":"PJ-1"}`
		tests := []struct {
			name   string
			tok    string
			body   string
			status int
			fields map[string]string
		}{
			{"removed", token, takedownBody("itm-1002"), http.StatusOK, map[string]string{"item_id": "itm-1002", "status": "removed"}},
			{"already removed", token, takedownBody("itm-1002"), http.StatusOK, map[string]string{"item_id": "itm-1002", "status": "already_removed"}},
			{"other token", "other-token", takedownBody("itm-1001"), http.StatusOK, map[string]string{"status": "removed"}},
			{"unknown item", token, takedownBody("itm-9999"), http.StatusNotFound, map[string]string{"error": "not_found", "item_id": "itm-9999"}},
			{"malformed JSON", token, `{"item_id":`, http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"empty body", token, ``, http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"not an object", token, `["itm-1002"]`, http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"two objects", token, takedownBody("itm-1003") + takedownBody("itm-1004"), http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"unknown field", token, `{"item_id":"itm-1003","reason":"r","case_ref":"c","urgent":true}`, http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"missing item_id", token, `{"reason":"r","case_ref":"c"}`, http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"missing reason", token, `{"item_id":"itm-1003","case_ref":"c"}`, http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"blank case_ref", token, `{"item_id":"itm-1003","reason":"r","case_ref":"  "}`, http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"invalid item_id", token, takedownBody("../etc/passwd"), http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"too large", token, big, http.StatusRequestEntityTooLarge, map[string]string{"error": "too_large"}},
			{"no token", "", takedownBody("itm-1003"), http.StatusUnauthorized, map[string]string{"error": "unauthorized"}},
			{"wrong token", "test-token-012345678", takedownBody("itm-1003"), http.StatusUnauthorized, map[string]string{"error": "unauthorized"}},
			{"empty token", " ", takedownBody("itm-1003"), http.StatusUnauthorized, map[string]string{"error": "unauthorized"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := do(t, e.client, http.MethodPost, e.url+"/v1/takedowns", tt.tok, tt.body)
				r.want(t, tt.status, tt.fields)
				if tt.status == http.StatusUnauthorized && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate = %q, want Bearer", r.header.Get("WWW-Authenticate"))
				}
			})
		}

		// The items service told the platform.
		ev := e.events.waitFor(t, b.timeout, "ItemTakenDown itm-1002", func(m *syncbridge.Message) bool {
			typ, _ := m.Header(contract.EventHeader)
			return string(typ) == contract.EventItemTakenDown && string(m.Key) == "itm-1002"
		})
		var itd contract.ItemTakenDown
		if err := contract.Decode(&ev, &itd); err != nil {
			t.Fatal(err)
		}
		if itd.Owner != "quickdeals_77" || itd.CaseRef != "PJ-2025-0042" || len(itd.Audience.Groups) != 2 {
			t.Errorf("ItemTakenDown = %+v", itd)
		}

		// The item, and the takedown by its ID, as any replica sees them.
		e.do(http.MethodGet, "/v1/items/itm-1002", "", "").want(t, http.StatusOK, map[string]string{"id": "itm-1002", "takedown_id": itd.TakedownID})
		e.do(http.MethodGet, "/v1/items/itm-1003", "", "").want(t, http.StatusOK, map[string]string{"owner": "petlover2024"})
		e.do(http.MethodGet, "/v1/items/itm-9999", "", "").want(t, http.StatusNotFound, map[string]string{"error": "not_found"})
		e.do(http.MethodGet, "/v1/takedowns/"+itd.TakedownID, token, "").want(t, http.StatusOK, map[string]string{"status": "removed", "item_id": "itm-1002"})
		e.do(http.MethodGet, "/v1/takedowns/td-unknown", token, "").want(t, http.StatusNotFound, map[string]string{"error": "not_found"})
		e.do(http.MethodGet, "/v1/takedowns/"+itd.TakedownID, "", "").want(t, http.StatusUnauthorized, nil)

		// Every attempt is audited, never with the token itself.
		recs := e.audit.records(t)
		outcomes := map[string]int{}
		for _, rec := range recs {
			o, _ := rec["outcome"].(string)
			outcomes[o]++
			if strings.Contains(e.audit.buf.String(), token) {
				t.Fatal("the audit log contains a token")
			}
		}
		want := map[string]int{"removed": 2, "already_removed": 1, "not_found": 1, "bad_request": 9, "too_large": 1, "unauthorized": 3}
		for o, n := range want {
			if outcomes[o] != n {
				t.Errorf("audit: %d records with outcome %s, want %d (all: %v)", outcomes[o], o, n, outcomes)
			}
		}
		for _, rec := range recs {
			if rec["msg"] == "takedown" && (rec["token_id"] == "" || rec["case_ref"] == "" || rec["latency_ms"] == nil) {
				t.Errorf("audit record lacks a field: %v", rec)
			}
		}
	})
}

// TestTakedownAccepted: when the items service does not confirm within the
// sync timeout, the API answers 202, keeps the Call, and serves the late
// outcome on the Location.
func TestTakedownAccepted(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, setup{syncTimeout: 50 * time.Millisecond})
		h := e.takedowns.block(t, "itm-1003")

		r := e.do(http.MethodPost, "/v1/takedowns", token, takedownBody("itm-1003"))
		r.want(t, http.StatusAccepted, map[string]string{"status": "pending", "item_id": "itm-1003"})
		loc := r.header.Get("Location")
		if id := r.str("takedown_id"); loc != "/v1/takedowns/"+id || id == "" {
			t.Fatalf("Location %q, takedown_id %q", loc, id)
		}
		if r.header.Get("Retry-After") == "" {
			t.Error("no Retry-After")
		}
		await(t, h.entered, b.timeout, "the takedown to reach the items service")

		// Still pending: polling says so, and a short long-poll too.
		e.do(http.MethodGet, loc, token, "").want(t, http.StatusAccepted, map[string]string{"status": "pending"})
		e.do(http.MethodGet, loc+"?wait=10ms", token, "").want(t, http.StatusAccepted, map[string]string{"status": "pending"})
		e.do(http.MethodGet, loc+"?wait=soon", token, "").want(t, http.StatusBadRequest, nil)
		e.do(http.MethodGet, loc, "", "").want(t, http.StatusUnauthorized, nil)
		if n := e.server.Pending(); n != 1 {
			t.Errorf("Pending() = %d, want 1", n)
		}

		// The late confirmation arrives; the long poll returns with it.
		h.Release()
		e.do(http.MethodGet, loc+"?wait=1m", token, "").want(t, http.StatusOK, map[string]string{"status": "removed", "item_id": "itm-1003"})
		e.do(http.MethodGet, loc, token, "").want(t, http.StatusOK, map[string]string{"status": "removed"})

		var accepted, final bool
		for _, rec := range e.audit.records(t) {
			switch {
			case rec["msg"] == "takedown accepted" && rec["http_status"] == float64(202):
				accepted = true
			case rec["msg"] == "takedown" && rec["outcome"] == "removed":
				final = true
			}
		}
		if !accepted || !final {
			t.Errorf("audit: accepted %v, final %v, want both", accepted, final)
		}
	})
}

// TestTakedownLateFailure: a takedown answered 202 that finally fails
// reports the failure on its Location.
func TestTakedownLateFailure(t *testing.T) {
	e := newEnv(t, backends()[0], setup{syncTimeout: 10 * time.Millisecond})
	h := e.takedowns.block(t, "itm-9999")
	r := e.do(http.MethodPost, "/v1/takedowns", token, takedownBody("itm-9999"))
	r.want(t, http.StatusAccepted, nil)
	await(t, h.entered, 10*time.Second, "the takedown to reach the items service")
	h.Release()
	e.do(http.MethodGet, r.header.Get("Location")+"?wait=1m", token, "").want(t, http.StatusNotFound, map[string]string{"error": "not_found", "status": "failed", "item_id": "itm-9999"})
}

// TestTakedownExpired: a takedown answered 202 whose confirmation never
// comes expires at the call timeout, and its Location says so.
func TestTakedownExpired(t *testing.T) {
	e := newEnv(t, backends()[0], setup{syncTimeout: 10 * time.Millisecond, callTimeout: 50 * time.Millisecond})
	h := e.takedowns.block(t, "itm-1001")
	r := e.do(http.MethodPost, "/v1/takedowns", token, takedownBody("itm-1001"))
	r.want(t, http.StatusAccepted, nil)
	await(t, h.entered, 10*time.Second, "the takedown to reach the items service")
	// The items service stays blocked until the test ends.
	r = e.do(http.MethodGet, r.header.Get("Location")+"?wait=1m", token, "")
	r.want(t, http.StatusGatewayTimeout, map[string]string{"error": "expired", "status": "failed", "item_id": "itm-1001"})
}

// TestOverloaded: past WithMaxInFlight, the API answers 503 with
// Retry-After at once, without sending anything.
func TestOverloaded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, setup{maxInFlight: 1})
		h := e.takedowns.block(t, "itm-1004")

		var wg sync.WaitGroup
		first := make(chan *response, 1)
		wg.Go(func() { first <- e.do(http.MethodPost, "/v1/takedowns", token, takedownBody("itm-1004")) })
		await(t, h.entered, b.timeout, "the first takedown to reach the items service")

		for _, path := range []string{"/v1/takedowns", "/v1/items/itm-1005"} {
			var r *response
			if path == "/v1/takedowns" {
				r = e.do(http.MethodPost, path, token, takedownBody("itm-1005"))
			} else {
				r = e.do(http.MethodGet, path, "", "")
			}
			r.want(t, http.StatusServiceUnavailable, map[string]string{"error": "overloaded"})
			if r.header.Get("Retry-After") == "" {
				t.Errorf("%s: no Retry-After", path)
			}
		}

		h.Release()
		wg.Wait()
		(<-first).want(t, http.StatusOK, map[string]string{"status": "removed"})
		// A Call's Done closes a moment before the Bridge releases its
		// in-flight slot: wait for the release.
		waitIdle(t, e.bridge, b.timeout)
		e.do(http.MethodPost, "/v1/takedowns", token, takedownBody("itm-1005")).want(t, http.StatusOK, map[string]string{"status": "removed"})
		if st := e.bridge.Stats(); st.Overloaded != 2 {
			t.Errorf("Stats().Overloaded = %d, want 2", st.Overloaded)
		}
	})
}

// failingPublish is a transport whose Publish fails while fail is set.
type failingPublish struct {
	syncbridge.Transport
	fail atomic.Bool
}

func (f *failingPublish) Publish(ctx context.Context, msg syncbridge.Message) error {
	if f.fail.Load() {
		return fmt.Errorf("broker unreachable: %w", syncbridge.ErrNotSent)
	}
	return f.Transport.Publish(ctx, msg)
}

// TestPublishFails: when a takedown or a report cannot be published, the
// API answers 503 with Retry-After: nothing was sent, retry later.
func TestPublishFails(t *testing.T) {
	fp := &failingPublish{}
	e := newEnv(t, backends()[0], setup{apiTransport: func(tr syncbridge.Transport) syncbridge.Transport {
		fp.Transport = tr
		return fp
	}})
	fp.fail.Store(true)
	for _, r := range []*response{
		e.do(http.MethodPost, "/v1/takedowns", token, takedownBody("itm-1001")),
		e.do(http.MethodPost, "/v1/items/itm-1001/reports", "", `{"reason":"spam"}`),
		e.do(http.MethodGet, "/v1/items/itm-1001", "", ""),
	} {
		r.want(t, http.StatusServiceUnavailable, map[string]string{"error": "unavailable"})
		if r.header.Get("Retry-After") == "" {
			t.Errorf("no Retry-After: %s", r.raw)
		}
	}
	fp.fail.Store(false)
	e.do(http.MethodPost, "/v1/takedowns", token, takedownBody("itm-1001")).want(t, http.StatusOK, map[string]string{"status": "removed"})
}

// TestShuttingDown: after the Bridge closed, the API answers 503.
func TestShuttingDown(t *testing.T) {
	e := newEnv(t, backends()[0], setup{})
	if err := e.bridge.Close(); err != nil {
		t.Fatal(err)
	}
	r := e.do(http.MethodPost, "/v1/takedowns", token, takedownBody("itm-1001"))
	r.want(t, http.StatusServiceUnavailable, map[string]string{"error": "shutting_down"})
	if r.header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
}

// TestReports: a user's report is accepted at once, 202, and its status
// goes from received to recorded once the items service processed it.
func TestReports(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, setup{maxBody: 1 << 10})
		h := e.reports.block(t, "itm-1005")

		r := e.do(http.MethodPost, "/v1/items/itm-1005/reports", "", `{"reason":"counterfeit","details":"90% off a new bag"}`)
		r.want(t, http.StatusAccepted, map[string]string{"status": "received", "item_id": "itm-1005"})
		id := r.str("report_id")
		loc := r.header.Get("Location")
		if loc != "/v1/reports/"+id || id == "" {
			t.Fatalf("Location %q, report_id %q", loc, id)
		}
		await(t, h.entered, b.timeout, "the report to reach the items service")
		e.do(http.MethodGet, loc, "", "").want(t, http.StatusOK, map[string]string{"status": "received"})

		h.Release()
		e.events.waitFor(t, b.timeout, "ReportProcessed "+id, func(m *syncbridge.Message) bool {
			typ, _ := m.Header(contract.EventHeader)
			return string(typ) == contract.EventReportProcessed && strings.Contains(string(m.Value), id)
		})
		e.do(http.MethodGet, loc, "", "").want(t, http.StatusOK, map[string]string{"status": "recorded", "report_id": id})
		if it := e.do(http.MethodGet, "/v1/items/itm-1005", "", ""); it.body["reports"] != float64(1) {
			t.Errorf("item reports = %v, want 1", it.body["reports"])
		}

		// A report of an unknown item is accepted, then rejected.
		r = e.do(http.MethodPost, "/v1/items/itm-9999/reports", "", `{"reason":"spam"}`)
		r.want(t, http.StatusAccepted, nil)
		id = r.str("report_id")
		e.events.waitFor(t, b.timeout, "ReportProcessed "+id, func(m *syncbridge.Message) bool {
			return strings.Contains(string(m.Value), id)
		})
		e.do(http.MethodGet, r.header.Get("Location"), "", "").want(t, http.StatusOK, map[string]string{"status": "rejected"})

		for _, tt := range []struct {
			name, path, body string
			status           int
		}{
			{"no reason", "/v1/items/itm-1001/reports", `{"details":"d"}`, http.StatusBadRequest},
			{"unknown field", "/v1/items/itm-1001/reports", `{"reason":"r","score":5}`, http.StatusBadRequest},
			{"malformed", "/v1/items/itm-1001/reports", `{"reason"`, http.StatusBadRequest},
			{"too large", "/v1/items/itm-1001/reports", `{"reason":"` + strings.Repeat("r", 2<<10) + `"}`, http.StatusRequestEntityTooLarge},
			{"invalid item", "/v1/items/itm%201001/reports", `{"reason":"r"}`, http.StatusNotFound},
		} {
			t.Run(tt.name, func(t *testing.T) {
				e.do(http.MethodPost, tt.path, "", tt.body).want(t, tt.status, nil)
			})
		}
		e.do(http.MethodGet, "/v1/reports/rpt-unknown", "", "").want(t, http.StatusNotFound, map[string]string{"error": "not_found"})
	})
}

// waitIdle waits until b has no request in flight.
func waitIdle(t *testing.T, b *syncbridge.Bridge, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for b.Stats().InFlight != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests still in flight after %v", b.Stats().InFlight, d)
		}
		runtime.Gosched()
	}
}
