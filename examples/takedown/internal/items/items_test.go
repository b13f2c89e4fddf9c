package items

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/contract"
	"github.com/syncbridge/syncbridge/memory"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newService starts a Service on a memory transport, closed when the test
// ends.
func newService(t *testing.T, tr *memory.Transport, opts Options) *Service {
	t.Helper()
	s, err := New(tr, opts)
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

// request sends v to topic over a Bridge on tr and decodes the reply into
// out.
func request(t *testing.T, b *syncbridge.Bridge, topic, key string, v, out any) error {
	t.Helper()
	msg, err := contract.Encode(topic, key, v)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	reply, err := b.Request(ctx, msg)
	if err != nil {
		return err
	}
	return contract.Decode(reply, out)
}

func newBridge(t *testing.T, tr *memory.Transport) *syncbridge.Bridge {
	b, err := syncbridge.New(context.Background(), tr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
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

// TestTakedownIdempotent: a takedown removes the item once; a second
// takedown says already_removed; a redelivered command (the same takedown
// ID) gets its first answer again; an unknown item is not_found.
func TestTakedownIdempotent(t *testing.T) {
	tr := newTransport(t)
	topics := contract.DefaultTopics("")
	newService(t, tr, Options{})
	b := newBridge(t, tr)

	tests := []struct {
		name       string
		cmd        contract.TakedownCommand
		wantStatus string
		wantCode   string
	}{
		{"first", contract.TakedownCommand{TakedownID: "td-1", ItemID: "itm-1001"}, contract.StatusRemoved, ""},
		{"second", contract.TakedownCommand{TakedownID: "td-2", ItemID: "itm-1001"}, contract.StatusAlreadyRemoved, ""},
		{"first redelivered", contract.TakedownCommand{TakedownID: "td-1", ItemID: "itm-1001"}, contract.StatusRemoved, ""},
		{"unknown item", contract.TakedownCommand{TakedownID: "td-3", ItemID: "itm-0000"}, "", contract.CodeNotFound},
		{"invalid ID", contract.TakedownCommand{TakedownID: "td 4", ItemID: "itm-1002"}, "", contract.CodeInvalid},
	}
	var removedAt time.Time
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
			if res.Status != "" {
				if removedAt.IsZero() {
					removedAt = res.RemovedAt
				}
				if !res.RemovedAt.Equal(removedAt) {
					t.Errorf("removed_at %v, want the first removal's %v", res.RemovedAt, removedAt)
				}
			}
		})
	}

	var it contract.Item
	if err := request(t, b, topics.Queries, "itm-1001", contract.Query{Kind: contract.QueryItem, ID: "itm-1001"}, &it); err != nil {
		t.Fatal(err)
	}
	if !it.TakenDown || it.TakedownID != "td-1" {
		t.Errorf("item = %+v, want taken down by td-1", it)
	}
	for _, q := range []contract.Query{{Kind: "colour", ID: "x"}, {Kind: contract.QueryReport, ID: "rpt-0"}} {
		if err := request(t, b, topics.Queries, q.ID, q, &it); err == nil {
			t.Errorf("query %+v: no error", q)
		}
	}
}

// TestInstancesConverge: two instances on one transport share the
// commands, and each applies the other's events.
func TestInstancesConverge(t *testing.T) {
	tr := newTransport(t)
	topics := contract.DefaultTopics("")
	applied := []chan string{make(chan string, 10), make(chan string, 10)}
	a := newService(t, tr, Options{AfterEvent: func(typ string) { applied[0] <- typ }})
	c := newService(t, tr, Options{AfterEvent: func(typ string) { applied[1] <- typ }})
	b := newBridge(t, tr)
	ids := []string{"itm-1001", "itm-1002", "itm-1003", "itm-1004", "itm-1005"}
	for i, id := range ids {
		var res contract.TakedownResult
		if err := request(t, b, topics.Takedowns, id, contract.TakedownCommand{TakedownID: "td-" + id, ItemID: id}, &res); err != nil {
			t.Fatal(err)
		}
		if res.Status != contract.StatusRemoved {
			t.Errorf("takedown %d: %+v", i, res)
		}
	}
	// Each instance applies every event, its own and the other's.
	for _, ch := range applied {
		for range ids {
			if typ := <-ch; typ != contract.EventItemTakenDown {
				t.Errorf("applied %s, want %s", typ, contract.EventItemTakenDown)
			}
		}
	}
	for _, id := range ids {
		for i, s := range []*Service{a, c} {
			if it, _ := s.Item(id); !it.TakenDown || it.TakedownID != "td-"+id {
				t.Errorf("instance %d: %s = %+v", i, id, it)
			}
		}
	}
}

// TestDelayCutShortByClose: Close does not wait for Delay; the takedown
// waiting in it fails, unapplied.
func TestDelayCutShortByClose(t *testing.T) {
	tr := newTransport(t)
	entered := make(chan struct{})
	s := newService(t, tr, Options{Delay: time.Hour, BeforeTakedown: func(context.Context, contract.TakedownCommand) error {
		close(entered)
		return nil
	}})
	b := newBridge(t, tr)
	msg, err := contract.Encode(contract.DefaultTopics("").Takedowns, "itm-1001", contract.TakedownCommand{TakedownID: "td-1", ItemID: "itm-1001"})
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
	if it, _ := s.Item("itm-1001"); it.TakenDown {
		t.Error("the item was taken down")
	}
}

// FuzzHandlers feeds arbitrary bytes to every handler of the service: none
// may panic, and the Responders' handlers must answer an error or a reply.
func FuzzHandlers(f *testing.F) {
	f.Add([]byte(`{"takedown_id":"td-1","item_id":"itm-1001","reason":"r","case_ref":"c"}`), []byte(contract.EventItemTakenDown))
	f.Add([]byte(`{"kind":"item","id":"itm-1001"}`), []byte(contract.EventReportProcessed))
	f.Add([]byte(`{"report_id":"rpt-1","item_id":"itm-1001","status":"recorded"}`), []byte(contract.EventReportProcessed))
	f.Add([]byte(`{"item_id":"itm-1001","takedown_id":"td-9","removed_at":"2025-01-01T00:00:00Z"}`), []byte(contract.EventItemTakenDown))
	f.Add([]byte(`null`), []byte(""))
	f.Fuzz(func(t *testing.T, value, eventType []byte) {
		tr := &memory.Transport{}
		defer tr.Close()
		s := &Service{t: tr, opts: Options{Topics: contract.DefaultTopics("")}, stop: make(chan struct{})}
		s.log = slog.New(slog.DiscardHandler)
		s.items, s.reports, s.takedowns = map[string]*contract.Item{}, map[string]contract.ReportStatus{}, map[string]contract.TakedownResult{}
		for _, it := range Seed() {
			s.items[it.ID] = &it
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		msg := syncbridge.Message{Topic: "fuzz", Value: value, Headers: []syncbridge.Header{{Key: contract.EventHeader, Value: eventType}}}
		for _, h := range []syncbridge.ReplyHandler{s.takedown, s.query} {
			if reply, err := h(ctx, &msg); err == nil && reply.Value == nil {
				t.Errorf("no error and no reply for %q", value)
			}
		}
		s.onReport(ctx, msg)
		s.onEvent(ctx, msg)
	})
}
