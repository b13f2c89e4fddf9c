package items

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/contract"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/db"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/dbtest"
	"github.com/syncbridge/syncbridge/memory"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// openDB opens dsn and seeds n items.
func openDB(t *testing.T, dsn string, n int) *db.DB {
	t.Helper()
	d := dbtest.Open(t, dsn)
	if _, err := Seed(t.Context(), d, n); err != nil {
		t.Fatal(err)
	}
	return d
}

// newService starts a Service on tr and d, closed when the test ends.
func newService(t *testing.T, tr syncbridge.Transport, d *db.DB, opts Options) *Service {
	t.Helper()
	opts.DB = d
	s, err := New(t.Context(), tr, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func newTransport(t *testing.T) *memory.Transport {
	tr := &memory.Transport{}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func newBridge(t *testing.T, tr syncbridge.Transport) *syncbridge.Bridge {
	b, err := syncbridge.New(t.Context(), tr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// request sends v to topic over b and decodes the reply into out.
func request(t *testing.T, b *syncbridge.Bridge, topic, key string, v, out any) error {
	t.Helper()
	msg, err := contract.Encode(topic, key, v)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	reply, err := b.Request(ctx, msg)
	if err != nil {
		return err
	}
	return contract.Decode(reply, out)
}

func code(err error) string {
	var re *syncbridge.RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

var topics = contract.DefaultTopics("")

func cmd(takedownID, itemID string) contract.TakedownCommand {
	return contract.TakedownCommand{TakedownID: takedownID, ItemID: itemID, Reason: "counterfeit", CaseRef: "PJ-1", RequestedBy: "tok-test", RequestedAt: db.Now(), ExpiresAt: time.Now().Add(time.Hour)}
}

// TestTakedownIdempotent: a takedown removes the item once; a second
// takedown says already_removed; a redelivered command (the same takedown
// ID) gets its first answer again, byte for byte; an unknown item is
// recorded as not_found, and stays so.
func TestTakedownIdempotent(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, dsn string) {
		tr := newTransport(t)
		d := openDB(t, dsn, 5)
		s := newService(t, tr, d, Options{})
		b := newBridge(t, tr)

		tests := []struct {
			name       string
			cmd        contract.TakedownCommand
			wantStatus string
			wantCode   string
		}{
			{"first", cmd("td-1", "itm-1001"), contract.StatusRemoved, ""},
			{"second", cmd("td-2", "itm-1001"), contract.StatusAlreadyRemoved, ""},
			{"first redelivered", cmd("td-1", "itm-1001"), contract.StatusRemoved, ""},
			{"second redelivered", cmd("td-2", "itm-1001"), contract.StatusAlreadyRemoved, ""},
			{"unknown item", cmd("td-3", "itm-0000"), contract.StatusNotFound, ""},
			{"unknown item redelivered", cmd("td-3", "itm-0000"), contract.StatusNotFound, ""},
			{"invalid ID", cmd("td 4", "itm-1002"), "", contract.CodeInvalid},
			{"unknown action", contract.TakedownCommand{TakedownID: "td-5", ItemID: "itm-1002", Action: "undo"}, "", contract.CodeInvalid},
		}
		first := map[string]contract.TakedownResult{}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var res contract.TakedownResult
				err := request(t, b, topics.Takedowns, tt.cmd.ItemID, tt.cmd, &res)
				if got := code(err); got != tt.wantCode {
					t.Fatalf("error code %q, want %q", got, tt.wantCode)
				}
				if res.Status != tt.wantStatus {
					t.Errorf("status %q, want %q", res.Status, tt.wantStatus)
				}
				if tt.wantCode != "" {
					return
				}
				if f, ok := first[tt.cmd.TakedownID]; ok {
					if fmt.Sprint(f) != fmt.Sprint(res) {
						t.Errorf("redelivered: %+v, first answer %+v", res, f)
					}
				}
				first[tt.cmd.TakedownID] = res
			})
		}
		if a, b := first["td-1"], first["td-2"]; a.RemovedAt == nil || b.RemovedAt == nil || !a.RemovedAt.Equal(*b.RemovedAt) || b.RemovedBy != "td-1" {
			t.Errorf("already_removed %+v does not name the first removal %+v", b, a)
		}

		// The handler itself, called twice with the same message, as a
		// redelivery after a crash between commit and reply would.
		msg, err := contract.Encode(topics.Takedowns, "itm-1002", cmd("td-6", "itm-1002"))
		if err != nil {
			t.Fatal(err)
		}
		r1, err1 := s.takedown(t.Context(), &msg)
		r2, err2 := s.takedown(t.Context(), &msg)
		if err1 != nil || err2 != nil || !bytes.Equal(r1.Value, r2.Value) {
			t.Errorf("redelivery: %s, %v; then %s, %v", r1.Value, err1, r2.Value, err2)
		}

		it, found, err := s.Item(t.Context(), "itm-1001")
		if err != nil || !found || !it.TakenDown || it.TakedownID != "td-1" {
			t.Errorf("item = %+v, %v, %v; want taken down by td-1", it, found, err)
		}
		var got contract.Item
		if err := request(t, b, topics.Queries, "itm-1001", contract.Query{Kind: contract.QueryItem, ID: "itm-1001"}, &got); err != nil || got.TakedownID != "td-1" {
			t.Errorf("query item: %+v, %v", got, err)
		}
		var res contract.TakedownResult
		if err := request(t, b, topics.Queries, "td-1", contract.Query{Kind: contract.QueryTakedown, ID: "td-1"}, &res); err != nil || fmt.Sprint(res) != fmt.Sprint(first["td-1"]) {
			t.Errorf("query takedown: %+v, %v; want %+v", res, err, first["td-1"])
		}
		for _, q := range []contract.Query{{Kind: "colour", ID: "x"}, {Kind: contract.QueryReport, ID: "rpt-0"}, {Kind: contract.QueryTakedown, ID: "td-0"}, {Kind: contract.QueryItem, ID: "../x"}} {
			if err := request(t, b, topics.Queries, q.ID, q, &got); err == nil {
				t.Errorf("query %+v: no error", q)
			}
		}
	})
}

// TestFences: a fence recorded before the command keeps it from ever
// being applied; a fence after it answers the command's outcome; an
// expire fence before the command's expiry changes nothing; a command
// taken up after its expiry is recorded as expired, not applied.
func TestFences(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, dsn string) {
		tr := newTransport(t)
		d := openDB(t, dsn, 5)
		newService(t, tr, d, Options{})
		b := newBridge(t, tr)
		fence := func(action, id, item string, expires time.Time) contract.TakedownResult {
			t.Helper()
			var res contract.TakedownResult
			if err := request(t, b, topics.Takedowns, id, contract.TakedownCommand{TakedownID: id, ItemID: item, Action: action, ExpiresAt: expires}, &res); err != nil {
				t.Fatal(err)
			}
			return res
		}
		take := func(c contract.TakedownCommand) contract.TakedownResult {
			t.Helper()
			var res contract.TakedownResult
			if err := request(t, b, topics.Takedowns, c.ItemID, c, &res); err != nil {
				t.Fatal(err)
			}
			return res
		}
		future := time.Now().Add(time.Hour)

		if r := fence(contract.ActionCancel, "td-c1", "itm-1001", future); r.Status != contract.StatusCancelled {
			t.Errorf("cancel first: %+v", r)
		}
		if r := take(cmd("td-c1", "itm-1001")); r.Status != contract.StatusCancelled {
			t.Errorf("command after its cancel: %+v, want cancelled", r)
		}
		if r := take(cmd("td-c2", "itm-1002")); r.Status != contract.StatusRemoved {
			t.Errorf("command: %+v", r)
		}
		if r := fence(contract.ActionCancel, "td-c2", "itm-1002", future); r.Status != contract.StatusRemoved {
			t.Errorf("cancel after the command: %+v, want removed", r)
		}
		if r := fence(contract.ActionExpire, "td-c3", "itm-1003", future); r.Status != contract.StatusPending {
			t.Errorf("expire before the expiry: %+v, want pending", r)
		}
		if r := take(cmd("td-c3", "itm-1003")); r.Status != contract.StatusRemoved {
			t.Errorf("command after an early expire: %+v, want removed", r)
		}
		if r := fence(contract.ActionExpire, "td-c4", "itm-1004", time.Now().Add(-time.Second)); r.Status != contract.StatusExpired {
			t.Errorf("expire after the expiry: %+v", r)
		}
		if r := take(cmd("td-c4", "itm-1004")); r.Status != contract.StatusExpired {
			t.Errorf("command after its expiry was fenced: %+v, want expired", r)
		}
		late := cmd("td-c5", "itm-1005")
		late.ExpiresAt = time.Now().Add(-time.Millisecond)
		if r := take(late); r.Status != contract.StatusExpired {
			t.Errorf("command taken up after its expiry: %+v, want expired", r)
		}
		for _, id := range []string{"itm-1001", "itm-1004", "itm-1005"} {
			var it contract.Item
			if err := request(t, b, topics.Queries, id, contract.Query{Kind: contract.QueryItem, ID: id}, &it); err != nil || it.TakenDown {
				t.Errorf("%s: %+v, %v; want not taken down", id, it, err)
			}
		}
	})
}

// TestConcurrentInstances: two instances on one database, each with its
// own transport and Bridge, take one item down 40 times at once: exactly
// one takedown removes it, every other says already_removed and names it,
// and one ItemTakenDown event is published.
func TestConcurrentInstances(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, dsn string) {
		tr := newTransport(t)
		d1 := openDB(t, dsn, 5)
		d2 := dbtest.Open(t, dsn) // another pool, as another process would have
		newService(t, tr, d1, Options{Group: "g"})
		newService(t, tr, d2, Options{Group: "g"})
		events := make(chan syncbridge.Message, 100)
		sub, err := tr.Subscribe(t.Context(), syncbridge.SubscribeConfig{Topic: topics.Events}, func(_ context.Context, m syncbridge.Message) { events <- m })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sub.Close() })
		b := newBridge(t, tr)

		const n = 40
		results := make([]contract.TakedownResult, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				// Keyed by takedown, so that both instances take part.
				c := cmd(fmt.Sprintf("td-%d", i), "itm-1003")
				msg, err := contract.Encode(topics.Takedowns, c.TakedownID, c)
				if err != nil {
					t.Error(err)
					return
				}
				reply, err := b.Request(t.Context(), msg)
				if err == nil {
					err = contract.Decode(reply, &results[i])
				}
				if err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		var removed []string
		for _, r := range results {
			if r.Status == contract.StatusRemoved {
				removed = append(removed, r.TakedownID)
			}
		}
		if len(removed) != 1 {
			t.Fatalf("removed by %v, want exactly one", removed)
		}
		for _, r := range results {
			if r.Status == contract.StatusAlreadyRemoved && r.RemovedBy != removed[0] {
				t.Errorf("%+v does not name %s", r, removed[0])
			}
		}
		var rows int
		if err := d1.QueryRowContext(t.Context(), `SELECT count(*) FROM takedowns WHERE item_id = 'itm-1003'`).Scan(&rows); err != nil || rows != n {
			t.Errorf("%d takedown rows, %v; want %d", rows, err, n)
		}
		ev := <-events
		if typ, _ := ev.Header(contract.EventHeader); string(typ) != contract.EventItemTakenDown || !bytes.Contains(ev.Value, []byte(removed[0])) {
			t.Errorf("event %s %s", typ, ev.Value)
		}
		waitOutboxEmpty(t, d1)
		select {
		case ev := <-events:
			t.Errorf("a second event: %s", ev.Value)
		default:
		}
	})
}

// waitOutboxEmpty waits until every event of the outbox is published.
func waitOutboxEmpty(t *testing.T, d *db.DB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := d.QueryRowContext(t.Context(), `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events still in the outbox", n)
		}
		time.Sleep(10 * time.Millisecond) // polls the database: no event to wait on
	}
}

// TestRestartKeepsTakedowns: a takedown survives closing the service and
// the database and starting again (seeding included); the same command
// after the restart gets the same answer.
func TestRestartKeepsTakedowns(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, dsn string) {
		tr := newTransport(t)
		c := cmd("td-r1", "itm-1004")
		var first contract.TakedownResult
		func() {
			d := openDB(t, dsn, 5)
			s, err := New(t.Context(), tr, Options{DB: d})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			b := newBridge(t, tr)
			if err := request(t, b, topics.Takedowns, c.ItemID, c, &first); err != nil || first.Status != contract.StatusRemoved {
				t.Fatalf("takedown: %+v, %v", first, err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		}()
		d := openDB(t, dsn, 7)
		newService(t, tr, d, Options{})
		b := newBridge(t, tr)
		var it contract.Item
		if err := request(t, b, topics.Queries, c.ItemID, contract.Query{Kind: contract.QueryItem, ID: c.ItemID}, &it); err != nil || !it.TakenDown || it.TakedownID != c.TakedownID {
			t.Errorf("after the restart: %+v, %v", it, err)
		}
		var again contract.TakedownResult
		if err := request(t, b, topics.Takedowns, c.ItemID, c, &again); err != nil || fmt.Sprint(again) != fmt.Sprint(first) {
			t.Errorf("redelivered after the restart: %+v, %v; first %+v", again, err, first)
		}
		var n int
		if err := d.QueryRowContext(t.Context(), `SELECT count(*) FROM items`).Scan(&n); err != nil || n != 7 {
			t.Errorf("%d items, %v; want 7", n, err)
		}
	})
}

// TestDatabaseDown: with the database gone, a takedown fails with
// CodeUnavailable and changes nothing.
func TestDatabaseDown(t *testing.T) {
	tr := newTransport(t)
	d := openDB(t, dbtest.SQLite(t), 5)
	s := newService(t, tr, d, Options{})
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	msg, err := contract.Encode(topics.Takedowns, "itm-1001", cmd("td-d1", "itm-1001"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.takedown(t.Context(), &msg); code(err) != contract.CodeUnavailable {
		t.Errorf("takedown with the database closed: %v, want %s", err, contract.CodeUnavailable)
	}
}

// TestOutboxLeftByACrash: events that a crashed instance claimed and did
// not publish are published once its claim lapses; events it did not
// claim, at once.
func TestOutboxLeftByACrash(t *testing.T) {
	tr := newTransport(t)
	d := openDB(t, dbtest.SQLite(t), 5)
	past := db.Now().Add(-time.Minute)
	for i, claimedUntil := range []any{nil, past} {
		if _, err := d.ExecContext(t.Context(), `INSERT INTO outbox (topic, msg_key, event_type, payload, created_at, claimed_by, claimed_until) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			topics.Events, "itm-1001", contract.EventItemTakenDown, fmt.Sprintf(`{"takedown_id":"td-crash-%d"}`, i), past, "claim-dead", claimedUntil); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan string, 2)
	sub, err := tr.Subscribe(t.Context(), syncbridge.SubscribeConfig{Topic: topics.Events}, func(_ context.Context, m syncbridge.Message) { got <- string(m.Value) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	newService(t, tr, d, Options{OutboxInterval: 10 * time.Millisecond})
	for i := range 2 {
		if v := <-got; v != fmt.Sprintf(`{"takedown_id":"td-crash-%d"}`, i) {
			t.Errorf("event %d: %s", i, v)
		}
	}
	waitOutboxEmpty(t, d)
}

// TestDelayCutShortByClose: Close does not wait for Delay; the takedown
// waiting in it fails, unapplied and unrecorded.
func TestDelayCutShortByClose(t *testing.T) {
	tr := newTransport(t)
	d := openDB(t, dbtest.SQLite(t), 5)
	entered := make(chan struct{})
	s := newService(t, tr, d, Options{Delay: time.Hour, BeforeTakedown: func(context.Context, contract.TakedownCommand) error {
		close(entered)
		return nil
	}})
	b := newBridge(t, tr)
	msg, err := contract.Encode(topics.Takedowns, "itm-1001", cmd("td-1", "itm-1001"))
	if err != nil {
		t.Fatal(err)
	}
	call := b.Go(t.Context(), msg)
	<-entered
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := call.Wait(t.Context()); code(err) != contract.CodeUnavailable {
		t.Errorf("takedown during Close: %v, want %s", err, contract.CodeUnavailable)
	}
	if it, _, _ := s.Item(t.Context(), "itm-1001"); it.TakenDown {
		t.Error("the item was taken down")
	}
	var n int
	if err := d.QueryRowContext(t.Context(), `SELECT count(*) FROM takedowns`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d takedowns recorded, %v", n, err)
	}
}

// TestReportsOnce: a report delivered twice is recorded and counted once,
// and one event says so; a report of an unknown item is rejected.
func TestReportsOnce(t *testing.T) {
	dbtest.Each(t, func(t *testing.T, dsn string) {
		tr := newTransport(t)
		d := openDB(t, dsn, 5)
		s := newService(t, tr, d, Options{})
		events := make(chan syncbridge.Message, 10)
		sub, err := tr.Subscribe(t.Context(), syncbridge.SubscribeConfig{Topic: topics.Events}, func(_ context.Context, m syncbridge.Message) { events <- m })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sub.Close() })
		rep := contract.Report{ReportID: "rpt-1", ItemID: "itm-1005", Reason: "fake", SubmittedAt: db.Now()}
		msg, err := contract.Encode(topics.Reports, rep.ItemID, rep)
		if err != nil {
			t.Fatal(err)
		}
		s.onReport(t.Context(), msg)
		s.onReport(t.Context(), msg)
		unknown, err := contract.Encode(topics.Reports, "itm-0", contract.Report{ReportID: "rpt-2", ItemID: "itm-0", Reason: "spam", SubmittedAt: db.Now()})
		if err != nil {
			t.Fatal(err)
		}
		s.onReport(t.Context(), unknown)
		it, _, err := s.Item(t.Context(), "itm-1005")
		if err != nil || it.Reports != 1 {
			t.Errorf("item reports = %d, %v; want 1", it.Reports, err)
		}
		for _, want := range []string{`"status":"recorded"`, `"status":"rejected"`} {
			if ev := <-events; !bytes.Contains(ev.Value, []byte(want)) {
				t.Errorf("event %s, want %s", ev.Value, want)
			}
		}
		waitOutboxEmpty(t, d)
		select {
		case ev := <-events:
			t.Errorf("a third event: %s", ev.Value)
		default:
		}
		for id, want := range map[string]string{"rpt-1": contract.StatusRecorded, "rpt-2": contract.StatusRejected} {
			st, found, err := s.getReport(t.Context(), id)
			if err != nil || !found || st.Status != want {
				t.Errorf("%s: %+v, %v, %v; want %s", id, st, found, err, want)
			}
		}
	})
}

// TestSeed: Seed inserts what is missing and never changes what exists.
func TestSeed(t *testing.T) {
	d := dbtest.Open(t, dbtest.SQLite(t))
	ctx := t.Context()
	if n, err := Seed(ctx, d, 1200); err != nil || n != 1200 {
		t.Fatalf("Seed(1200) = %d, %v", n, err)
	}
	if _, err := d.ExecContext(ctx, `UPDATE items SET taken_down = TRUE WHERE id = 'itm-2000'`); err != nil {
		t.Fatal(err)
	}
	if n, err := Seed(ctx, d, 1300); err != nil || n != 100 {
		t.Fatalf("Seed(1300) after Seed(1200) = %d, %v; want 100", n, err)
	}
	var down bool
	if err := d.QueryRowContext(ctx, `SELECT taken_down FROM items WHERE id = 'itm-2000'`).Scan(&down); err != nil || !down {
		t.Errorf("itm-2000 taken_down = %v, %v; Seed changed it", down, err)
	}
	for _, n := range []int{-1, MaxSeed + 1} {
		if _, err := Seed(ctx, d, n); err == nil {
			t.Errorf("Seed(%d): no error", n)
		}
	}
	if it := SeedItem(0); it.ID != "itm-1001" || it.Owner != "alice" {
		t.Errorf("SeedItem(0) = %+v", it)
	}
	if it := SeedItem(1299); it.ID != "itm-2300" || !contract.ValidID(it.ID) {
		t.Errorf("SeedItem(1299) = %+v", it)
	}
}

// FuzzHandlers feeds arbitrary bytes to every handler of the service: none
// may panic, the Responders' handlers must answer an error or a reply, and
// a reply to a takedown is a recorded outcome.
func FuzzHandlers(f *testing.F) {
	f.Add([]byte(`{"takedown_id":"td-1","item_id":"itm-1001","reason":"r","case_ref":"c"}`))
	f.Add([]byte(`{"takedown_id":"td-1","item_id":"itm-1001","action":"cancel"}`))
	f.Add([]byte(`{"takedown_id":"td-2","item_id":"itm-1001","takedown_id":"td-3"}`))
	f.Add([]byte(`{"kind":"item","id":"itm-1001"}`))
	f.Add([]byte(`{"report_id":"rpt-1","item_id":"itm-1001","reason":"x","submitted_at":"2025-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"takedown_id":"td-1","item_id":"itm-1001","reason":"\u0000"}`))
	f.Add([]byte(`null`))
	d := dbtest.Open(f, dbtest.SQLite(f))
	if _, err := Seed(context.Background(), d, 5); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		tr := &memory.Transport{}
		defer tr.Close()
		s := &Service{t: tr, db: d, opts: Options{Topics: topics}, stop: make(chan struct{}), nudge: make(chan struct{}, 1), log: slog.New(slog.DiscardHandler)}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		msg := syncbridge.Message{Topic: "fuzz", Value: value}
		reply, err := s.takedown(ctx, &msg)
		switch {
		case err == nil:
			var res contract.TakedownResult
			if derr := contract.Decode(&reply, &res); derr != nil || res.Status == "" {
				t.Errorf("takedown of %q: reply %s, %v", value, reply.Value, derr)
			}
		case code(err) != contract.CodeInvalid && code(err) != contract.CodeUnavailable:
			t.Errorf("takedown of %q: %v", value, err)
		}
		if reply, err := s.query(ctx, &msg); err == nil && reply.Value == nil {
			t.Errorf("query: no error and no reply for %q", value)
		}
		s.onReport(ctx, msg)
		close(s.stop)
	})
}

var _ = sql.ErrNoRows
