package api_test

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/contract"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/dbtest"
)

// TestTakedown goes through every synchronous answer of the takedown API,
// over real HTTP, a real Bridge and the items service's Responder, and
// checks that the audit trail has exactly one row per request, with the
// status it was answered.
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
			{"unknown item", token, takedownBody("itm-9999"), http.StatusNotFound, map[string]string{"error": "not_found", "item_id": "itm-9999", "status": "failed"}},
			{"malformed JSON", token, `{"item_id":`, http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"empty body", token, ``, http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"not an object", token, `["itm-1002"]`, http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"two objects", token, takedownBody("itm-1003") + takedownBody("itm-1004"), http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"unknown field", token, `{"item_id":"itm-1003","reason":"r","case_ref":"c","urgent":true}`, http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"duplicate key", token, `{"item_id":"itm-1003","reason":"r","case_ref":"c","item_id":"itm-1004"}`, http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"key differing by case", token, `{"item_id":"itm-1003","Item_Id":"itm-1004","reason":"r","case_ref":"c"}`, http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"key in another case", token, `{"ITEM_ID":"itm-1003","reason":"r","case_ref":"c"}`, http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"missing item_id", token, `{"reason":"r","case_ref":"c"}`, http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"missing reason", token, `{"item_id":"itm-1003","case_ref":"c"}`, http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"blank case_ref", token, `{"item_id":"itm-1003","reason":"r","case_ref":"  "}`, http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"NUL in reason", token, `{"item_id":"itm-1003","reason":"r\u0000","case_ref":"c"}`, http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"invalid item_id", token, takedownBody("../etc/passwd"), http.StatusBadRequest, map[string]string{"error": "bad_request"}},
			{"too large", token, big, http.StatusRequestEntityTooLarge, map[string]string{"error": "too_large"}},
			{"too large after the JSON", token, takedownBody("itm-1003") + strings.Repeat(" ", 2<<10), http.StatusRequestEntityTooLarge, map[string]string{"error": "too_large"}},
			{"too large, garbage after the JSON", token, takedownBody("itm-1003") + strings.Repeat("x", 2<<10), http.StatusRequestEntityTooLarge, map[string]string{"error": "too_large"}},
			{"no token", "", takedownBody("itm-1003"), http.StatusUnauthorized, map[string]string{"error": "unauthorized"}},
			{"wrong token", "test-token-012345678", takedownBody("itm-1003"), http.StatusUnauthorized, map[string]string{"error": "unauthorized"}},
			{"empty token", " ", takedownBody("itm-1003"), http.StatusUnauthorized, map[string]string{"error": "unauthorized"}},
		}
		wantStatus := map[int]int{}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := do(t, e.client, http.MethodPost, e.url+"/v1/takedowns", tt.tok, tt.body)
				r.want(t, tt.status, tt.fields)
				if tt.status == http.StatusUnauthorized && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate = %q, want Bearer", r.header.Get("WWW-Authenticate"))
				}
			})
			wantStatus[tt.status]++
		}
		for _, tt := range tests {
			if tt.name == "unknown item" || tt.name == "removed" || tt.name == "other token" {
				continue
			}
			if strings.Contains(tt.body, `"itm-1003"`) || strings.Contains(tt.body, `"itm-1004"`) {
				// Nothing refused was applied.
				e.do(http.MethodGet, "/v1/items/itm-1003", "", "").want(t, http.StatusOK, map[string]string{"id": "itm-1003"})
			}
		}
		for _, id := range []string{"itm-1003", "itm-1004"} {
			if r := e.do(http.MethodGet, "/v1/items/"+id, "", ""); r.body["taken_down"] != false {
				t.Errorf("%s was taken down by a refused request: %s", id, r.raw)
			}
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
		e.do(http.MethodGet, "/v1/items/itm-9999", "", "").want(t, http.StatusNotFound, map[string]string{"error": "not_found"})
		e.do(http.MethodGet, "/v1/takedowns/"+itd.TakedownID, token, "").want(t, http.StatusOK, map[string]string{"status": "removed", "item_id": "itm-1002"})
		e.do(http.MethodGet, "/v1/takedowns/td-unknown", token, "").want(t, http.StatusNotFound, map[string]string{"error": "not_found"})
		e.do(http.MethodGet, "/v1/takedowns/"+itd.TakedownID, "", "").want(t, http.StatusUnauthorized, map[string]string{"error": "unauthorized"})

		// One audit row per request, with the status it got; never a token.
		rows := auditRows(t, e)
		if len(rows) != len(tests) {
			t.Errorf("%d audit rows for %d requests", len(rows), len(tests))
		}
		gotStatus := map[int]int{}
		for _, row := range rows {
			gotStatus[int(row.status.Int64)]++
			if !row.status.Valid || row.outcome == "received" {
				t.Errorf("audit row not completed: %+v", row)
			}
			if row.takedownID.Valid && (!row.token.Valid || row.caseRef.String == "") {
				t.Errorf("audit row lacks a field: %+v", row)
			}
		}
		for status, n := range wantStatus {
			if gotStatus[status] != n {
				t.Errorf("audit: %d rows with status %d, want %d (all: %v)", gotStatus[status], status, n, gotStatus)
			}
		}
		if strings.Contains(e.audit.buf.String(), token) {
			t.Error("the audit log contains a token")
		}
	})
}

// auditRow is a row of the audit table.
type auditRow struct {
	takedownID, token, item, caseRef sql.NullString
	outcome                          string
	status                           sql.NullInt64
}

func auditRows(t *testing.T, e *env) []auditRow {
	t.Helper()
	rows, err := e.db.QueryContext(t.Context(), `SELECT takedown_id, token_id, item_id, case_ref, outcome, http_status FROM audit ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []auditRow
	for rows.Next() {
		var r auditRow
		if err := rows.Scan(&r.takedownID, &r.token, &r.item, &r.caseRef, &r.outcome, &r.status); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// auditOf returns the audit row of a takedown.
func auditOf(t *testing.T, e *env, takedownID string) auditRow {
	t.Helper()
	for _, r := range auditRows(t, e) {
		if r.takedownID.String == takedownID {
			return r
		}
	}
	t.Fatalf("no audit row for %s", takedownID)
	return auditRow{}
}

// TestTakedownAccepted: when the items service does not confirm within the
// sync timeout, the API answers 202; the takedown is pollable from this
// replica and from another, pending, then with its outcome.
func TestTakedownAccepted(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		testAccepted(t, b, setup{syncTimeout: 50 * time.Millisecond})
	})
	t.Run("postgres", func(t *testing.T) {
		testAccepted(t, backends()[0], setup{syncTimeout: 50 * time.Millisecond, dsn: dbtest.Postgres(t)})
	})
}

func testAccepted(t *testing.T, b backend, s setup) {
	e := newEnv(t, b, s)
	_, other := e.replica()
	h := e.takedowns.block(t, "itm-1003")

	r := e.do(http.MethodPost, "/v1/takedowns", token, takedownBody("itm-1003"))
	r.want(t, http.StatusAccepted, map[string]string{"status": "pending", "item_id": "itm-1003"})
	loc := r.header.Get("Location")
	id := r.str("takedown_id")
	if loc != "/v1/takedowns/"+id || id == "" {
		t.Fatalf("Location %q, takedown_id %q", loc, id)
	}
	if r.header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	if a := auditOf(t, e, id); a.outcome != "accepted" || a.status.Int64 != http.StatusAccepted {
		t.Errorf("audit row %+v, want accepted 202", a)
	}
	await(t, h.entered, b.timeout, "the takedown to reach the items service")
	// Answered, the takedown holds nothing in the replica: no admission,
	// no Call over the Bridge (its outcome will be in the database).
	deadline := time.Now().Add(b.timeout)
	for {
		hz := e.do(http.MethodGet, "/healthz", "", "")
		if hz.body["takedowns_in_flight"] == float64(0) && hz.body["bridge_in_flight"] == float64(0) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the answered takedown is still held: %s", hz.raw)
		}
	}

	// Still pending: polling says so, on both replicas, and a short
	// long-poll too.
	for _, base := range []string{e.url, other} {
		do(t, e.client, http.MethodGet, base+loc, token, "").want(t, http.StatusAccepted, map[string]string{"status": "pending", "takedown_id": id})
	}
	e.do(http.MethodGet, loc+"?wait=10ms", token, "").want(t, http.StatusAccepted, map[string]string{"status": "pending"})
	e.do(http.MethodGet, loc+"?wait=soon", token, "").want(t, http.StatusBadRequest, nil)
	e.do(http.MethodGet, loc, "", "").want(t, http.StatusUnauthorized, nil)

	// The late confirmation arrives; the long poll on the other replica
	// returns with it.
	h.Release()
	got := do(t, e.client, http.MethodGet, other+loc+"?wait=1m", token, "")
	got.want(t, http.StatusOK, map[string]string{"status": "removed", "item_id": "itm-1003", "takedown_id": id})
	e.do(http.MethodGet, loc, token, "").want(t, http.StatusOK, map[string]string{"status": "removed", "removed_at": got.str("removed_at")})
}

// TestTakedownLateFailure: a takedown answered 202 whose item does not
// exist is polled as failed, 404, from any replica.
func TestTakedownLateFailure(t *testing.T) {
	e := newEnv(t, backends()[0], setup{syncTimeout: 10 * time.Millisecond})
	_, other := e.replica()
	h := e.takedowns.block(t, "itm-9999")
	r := e.do(http.MethodPost, "/v1/takedowns", token, takedownBody("itm-9999"))
	r.want(t, http.StatusAccepted, nil)
	await(t, h.entered, 10*time.Second, "the takedown to reach the items service")
	h.Release()
	do(t, e.client, http.MethodGet, other+r.header.Get("Location")+"?wait=1m", token, "").
		want(t, http.StatusNotFound, map[string]string{"error": "not_found", "status": "failed", "item_id": "itm-9999"})
}

// dropping is a transport that drops takedown commands while drop is set:
// Publish says they were written, and nobody gets them. It keeps them, so
// that a test can deliver them late.
type dropping struct {
	syncbridge.Transport
	topic   string
	drop    atomic.Bool
	mu      sync.Mutex // protects dropped
	dropped []syncbridge.Message
}

func (d *dropping) Publish(ctx context.Context, msg syncbridge.Message) error {
	if d.drop.Load() && msg.Topic == d.topic && !strings.Contains(string(msg.Value), `"action"`) {
		d.mu.Lock()
		d.dropped = append(d.dropped, msg)
		d.mu.Unlock()
		return nil
	}
	return d.Transport.Publish(ctx, msg)
}

// TestTakedownExpired: a takedown answered 202 whose command the items
// service never takes up is, once past its expiry, recorded as expired by
// the next poll, and answered so (504, failed); delivered late, the
// command is not applied.
func TestTakedownExpired(t *testing.T) {
	var tr *dropping
	e := newEnv(t, backends()[0], setup{syncTimeout: 10 * time.Millisecond, callTimeout: 3 * time.Second, apiTransport: func(inner syncbridge.Transport) syncbridge.Transport {
		tr = &dropping{Transport: inner, topic: contract.DefaultTopics("").Takedowns}
		return tr
	}})
	tr.topic = e.topics.Takedowns
	tr.drop.Store(true)
	r := e.do(http.MethodPost, "/v1/takedowns", token, takedownBody("itm-1001"))
	r.want(t, http.StatusAccepted, nil)
	loc := r.header.Get("Location")
	e.do(http.MethodGet, loc, token, "").want(t, http.StatusAccepted, map[string]string{"status": "pending"})
	// The long poll sees the expiry pass, fences the takedown off, and
	// answers its final outcome.
	e.do(http.MethodGet, loc+"?wait=1m", token, "").want(t, http.StatusGatewayTimeout, map[string]string{"error": "expired", "status": "failed", "item_id": "itm-1001"})
	e.do(http.MethodGet, loc, token, "").want(t, http.StatusGatewayTimeout, map[string]string{"error": "expired"})

	// The command, delivered now, is not applied.
	tr.mu.Lock()
	late := tr.dropped
	tr.mu.Unlock()
	if len(late) != 1 {
		t.Fatalf("%d commands dropped, want 1", len(late))
	}
	var cmd contract.TakedownCommand
	if err := contract.Decode(&late[0], &cmd); err != nil {
		t.Fatal(err)
	}
	tr.drop.Store(false)
	late[0].Headers = nil // a copy of the command without the Bridge's deadline
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	reply, err := e.bridge.Request(ctx, late[0])
	if err != nil {
		t.Fatal(err)
	}
	var res contract.TakedownResult
	if err := contract.Decode(reply, &res); err != nil || res.Status != contract.StatusExpired || res.TakedownID != cmd.TakedownID {
		t.Errorf("late command: %+v, %v; want expired", res, err)
	}
	e.do(http.MethodGet, "/v1/items/itm-1001", "", "").want(t, http.StatusOK, map[string]string{"id": "itm-1001"})
	if it := e.do(http.MethodGet, "/v1/items/itm-1001", "", ""); it.body["taken_down"] != false {
		t.Errorf("the expired takedown was applied: %s", it.raw)
	}
}

// TestAdmission: past the takedowns' limit a takedown gets 503 and is not
// applied, while reads go on.
func TestAdmission(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, setup{maxTakedowns: 1, maxReads: 1})
		h := e.takedowns.block(t, "itm-1004")

		first := make(chan *response, 1)
		go func() { first <- e.do(http.MethodPost, "/v1/takedowns", token, takedownBody("itm-1004")) }()
		await(t, h.entered, b.timeout, "the first takedown to reach the items service")

		r := e.do(http.MethodPost, "/v1/takedowns", token, takedownBody("itm-1005"))
		r.want(t, http.StatusServiceUnavailable, map[string]string{"error": "overloaded", "status": "failed"})
		if r.header.Get("Retry-After") == "" {
			t.Error("no Retry-After")
		}
		// Reads are not starved by takedowns.
		if r := e.do(http.MethodGet, "/v1/items/itm-1005", "", ""); r.status != http.StatusOK || r.body["taken_down"] != false {
			t.Errorf("the takedown answered 503 was applied: %s", r.raw)
		}
		h.Release()
		(<-first).want(t, http.StatusOK, map[string]string{"status": "removed"})

	})
}

// TestReadsLimit: past the reads' limit a read gets 503 at once, and a
// takedown still goes through.
func TestReadsLimit(t *testing.T) {
	e := newEnv(t, backends()[0], setup{maxReads: 1, syncTimeout: 10 * time.Millisecond})
	h := e.takedowns.block(t, "itm-1002")
	r := e.do(http.MethodPost, "/v1/takedowns", token, takedownBody("itm-1002"))
	r.want(t, http.StatusAccepted, nil)
	await(t, h.entered, 10*time.Second, "the takedown to reach the items service")
	// A long poll of the pending takedown holds the only read slot.
	polled := make(chan *response, 1)
	go func() { polled <- e.do(http.MethodGet, r.header.Get("Location")+"?wait=1m", token, "") }()
	deadline := time.Now().Add(10 * time.Second)
	for e.do(http.MethodGet, "/healthz", "", "").body["reads_in_flight"] != float64(1) {
		if time.Now().After(deadline) {
			t.Fatal("the long poll did not take the read slot")
		}
	}
	e.do(http.MethodGet, "/v1/items/itm-1003", "", "").want(t, http.StatusServiceUnavailable, map[string]string{"error": "overloaded"})
	// A takedown goes on (confirmed, or accepted if its command waits
	// behind the blocked one).
	if r := e.do(http.MethodPost, "/v1/takedowns", token, takedownBody("itm-1003")); r.status != http.StatusOK && r.status != http.StatusAccepted {
		t.Errorf("takedown while reads are full: %d %s", r.status, r.raw)
	}
	h.Release()
	(<-polled).want(t, http.StatusOK, map[string]string{"status": "removed", "item_id": "itm-1002"})
}

// failingPublish is a transport whose Publish fails, certainly unwritten,
// while fail is set.
type failingPublish struct {
	syncbridge.Transport
	fail atomic.Bool
}

func (f *failingPublish) Publish(ctx context.Context, msg syncbridge.Message) error {
	if f.fail.Load() {
		return errors.Join(syncbridge.ErrNotSent, errors.New("broker unreachable"))
	}
	return f.Transport.Publish(ctx, msg)
}

// TestPublishFails: when a takedown or a report cannot be published, the
// API answers 503 with Retry-After: nothing was sent, nothing is applied,
// and the takedown's ID is polled as failed.
func TestPublishFails(t *testing.T) {
	fp := &failingPublish{}
	e := newEnv(t, backends()[0], setup{apiTransport: func(tr syncbridge.Transport) syncbridge.Transport {
		fp.Transport = tr
		return fp
	}})
	fp.fail.Store(true)
	td := e.do(http.MethodPost, "/v1/takedowns", token, takedownBody("itm-1001"))
	for _, r := range []*response{
		td,
		e.do(http.MethodPost, "/v1/items/itm-1001/reports", "", `{"reason":"spam"}`),
		e.do(http.MethodGet, "/v1/items/itm-1001", "", ""),
	} {
		r.want(t, http.StatusServiceUnavailable, nil)
		if r.header.Get("Retry-After") == "" {
			t.Errorf("no Retry-After: %s", r.raw)
		}
	}
	td.want(t, http.StatusServiceUnavailable, map[string]string{"status": "failed", "item_id": "itm-1001"})
	fp.fail.Store(false)
	if a := auditOf(t, e, td.str("takedown_id")); a.outcome != "not_sent" || a.status.Int64 != 503 {
		t.Errorf("audit %+v", a)
	}
	e.do(http.MethodGet, "/v1/takedowns/"+td.str("takedown_id"), token, "").want(t, http.StatusServiceUnavailable, map[string]string{"status": "failed"})
	if r := e.do(http.MethodGet, "/v1/items/itm-1001", "", ""); r.body["taken_down"] != false {
		t.Errorf("the takedown answered 503 was applied: %s", r.raw)
	}
	e.do(http.MethodPost, "/v1/takedowns", token, takedownBody("itm-1001")).want(t, http.StatusOK, map[string]string{"status": "removed"})
}

// TestAuditDown: a takedown that cannot be audited is not sent: 503, and
// the item stays up.
func TestAuditDown(t *testing.T) {
	e := newEnv(t, backends()[0], setup{})
	_, url, d := e.replicaDB()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	do(t, e.client, http.MethodPost, url+"/v1/takedowns", token, takedownBody("itm-1004")).
		want(t, http.StatusServiceUnavailable, map[string]string{"error": "unavailable", "status": "failed"})
	if r := e.do(http.MethodGet, "/v1/items/itm-1004", "", ""); r.status != http.StatusOK || r.body["taken_down"] != false {
		t.Errorf("the takedown that could not be audited was applied: %s", r.raw)
	}
	if rows := auditRows(t, e); len(rows) != 0 {
		t.Errorf("audit rows %+v", rows)
	}
}

// TestItemsUnavailable: when the items service fails a takedown
// (unavailable), the API cancels it, so that a redelivery of the command
// can never apply it, and answers 503; the same command delivered again
// is not applied.
func TestItemsUnavailable(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, setup{})
		var failed atomic.Pointer[syncbridge.Message]
		fail := func(cmd contract.TakedownCommand) error {
			if cmd.ItemID == "itm-1005" && failed.Load() == nil {
				msg, _ := contract.Encode(e.topics.Takedowns, cmd.ItemID, cmd)
				failed.Store(&msg)
				return errors.New("database down")
			}
			return nil
		}
		e.failTakedown.Store(&fail)
		r := e.do(http.MethodPost, "/v1/takedowns", token, takedownBody("itm-1005"))
		r.want(t, http.StatusServiceUnavailable, map[string]string{"error": "cancelled", "status": "failed", "item_id": "itm-1005"})
		id := r.str("takedown_id")
		e.do(http.MethodGet, "/v1/takedowns/"+id, token, "").want(t, http.StatusServiceUnavailable, map[string]string{"error": "cancelled", "status": "failed"})

		// The command again, as a redelivery would bring it.
		ctx, cancel := context.WithTimeout(t.Context(), b.timeout)
		defer cancel()
		reply, err := e.bridge.Request(ctx, *failed.Load())
		if err != nil {
			t.Fatal(err)
		}
		var res contract.TakedownResult
		if err := contract.Decode(reply, &res); err != nil || res.Status != contract.StatusCancelled || res.TakedownID != id {
			t.Errorf("redelivered: %+v, %v; want cancelled", res, err)
		}
		if r := e.do(http.MethodGet, "/v1/items/itm-1005", "", ""); r.body["taken_down"] != false {
			t.Errorf("the takedown answered 503 was applied: %s", r.raw)
		}
	})
}

// TestShutdown: a replica that begins shutting down refuses new takedowns
// (503, nothing sent) and answers the one in progress with 202 before its
// deadline; after it closed, another replica serves that takedown's
// outcome.
func TestShutdown(t *testing.T) {
	e := newEnv(t, backends()[0], setup{syncTimeout: time.Hour, callTimeout: 2 * time.Hour})
	_, other := e.replica()
	h := e.takedowns.block(t, "itm-1002")
	inflight := make(chan *response, 1)
	go func() { inflight <- e.do(http.MethodPost, "/v1/takedowns", token, takedownBody("itm-1002")) }()
	await(t, h.entered, 10*time.Second, "the takedown to reach the items service")

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	e.server.BeginShutdown(ctx)
	r := e.do(http.MethodPost, "/v1/takedowns", token, takedownBody("itm-1001"))
	r.want(t, http.StatusServiceUnavailable, map[string]string{"error": "shutting_down", "status": "failed"})
	e.do(http.MethodGet, "/healthz", "", "").want(t, http.StatusServiceUnavailable, map[string]string{"status": "shutting_down"})

	got := <-inflight
	got.want(t, http.StatusAccepted, map[string]string{"status": "pending"})
	if ctx.Err() != nil {
		t.Error("the takedown in progress was answered after the shutdown deadline")
	}
	e.server.Close()
	h.Release()
	do(t, e.client, http.MethodGet, other+got.header.Get("Location")+"?wait=1m", token, "").want(t, http.StatusOK, map[string]string{"status": "removed"})
	if r := do(t, e.client, http.MethodGet, other+"/v1/items/itm-1001", "", ""); r.body["taken_down"] != false {
		t.Errorf("the takedown refused during shutdown was applied: %s", r.raw)
	}
}

// TestClientGone: a client that hangs up before the answer gets no 202 in
// the audit trail: its row says client_gone, with no status; the takedown
// goes on and is applied.
func TestClientGone(t *testing.T) {
	e := newEnv(t, backends()[0], setup{})
	h := e.takedowns.block(t, "itm-1003")
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/v1/takedowns", strings.NewReader(takedownBody("itm-1003")))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	errc := make(chan error, 1)
	go func() {
		res, err := e.client.Do(req)
		if err == nil {
			res.Body.Close()
		}
		errc <- err
	}()
	await(t, h.entered, 10*time.Second, "the takedown to reach the items service")
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("the request did not fail")
	}
	e.audit.waitFor(t, 10*time.Second, `"outcome":"client_gone"`)
	h.Release()
	rows := auditRows(t, e)
	if len(rows) != 1 || rows[0].outcome != "client_gone" || rows[0].status.Valid {
		t.Fatalf("audit rows %+v, want one client_gone without status", rows)
	}
	e.do(http.MethodGet, "/v1/takedowns/"+rows[0].takedownID.String+"?wait=1m", token, "").want(t, http.StatusOK, map[string]string{"status": "removed"})
}

// TestRouterErrors: every error, the router's included, has the API's JSON
// shape.
func TestRouterErrors(t *testing.T) {
	e := newEnv(t, backends()[0], setup{})
	e.do(http.MethodGet, "/nowhere", "", "").want(t, http.StatusNotFound, map[string]string{"error": "not_found"})
	e.do(http.MethodGet, "/v1/takedowns", "", "").want(t, http.StatusMethodNotAllowed, map[string]string{"error": "method_not_allowed"})
	r := e.do(http.MethodDelete, "/v1/items/itm-1001", "", "")
	r.want(t, http.StatusMethodNotAllowed, map[string]string{"error": "method_not_allowed"})
	if r.header.Get("Allow") == "" {
		t.Error("405 without Allow")
	}
	e.do(http.MethodPost, "/v1/reports/x", "", "{}").want(t, http.StatusMethodNotAllowed, map[string]string{"error": "method_not_allowed"})
	e.do(http.MethodGet, "/v1/items/itm-1001", "", "").want(t, http.StatusOK, map[string]string{"id": "itm-1001"})
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
			{"duplicate field", "/v1/items/itm-1001/reports", `{"reason":"r","reason":"s"}`, http.StatusBadRequest},
			{"malformed", "/v1/items/itm-1001/reports", `{"reason"`, http.StatusBadRequest},
			{"too large", "/v1/items/itm-1001/reports", `{"reason":"` + strings.Repeat("r", 2<<10) + `"}`, http.StatusRequestEntityTooLarge},
			{"invalid item", "/v1/items/itm%201001/reports", `{"reason":"r"}`, http.StatusNotFound},
		} {
			t.Run(tt.name, func(t *testing.T) {
				r := e.do(http.MethodPost, tt.path, "", tt.body)
				r.want(t, tt.status, nil)
				if r.str("error") == "" {
					t.Errorf("no error code: %s", r.raw)
				}
			})
		}
		e.do(http.MethodGet, "/v1/reports/rpt-unknown", "", "").want(t, http.StatusNotFound, map[string]string{"error": "not_found"})
	})
}
