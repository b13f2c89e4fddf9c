// Package items is the asynchronous side of the takedown example: the items
// service of a classified-ads platform. It keeps an in-memory catalogue of
// items, serves takedown commands and queries as syncbridge Responders,
// records users' reports from a topic, and publishes domain events.
//
// Several instances may run against one Kafka cluster. Requests are keyed by
// item ID, so the commands for one item reach one instance in order; every
// instance applies every domain event to its own catalogue, so the
// instances converge (eventually: a query answered by another instance may
// not see a takedown for a few milliseconds). The catalogue is not
// persisted: it is seeded afresh at start-up, which is what a demonstration
// needs and nothing more.
package items

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/contract"
)

// Options configure a Service. The zero value is a prompt service over the
// seeded catalogue, logging nothing.
type Options struct {
	// Items is the catalogue to start with. Nil means Seed().
	Items []contract.Item
	// Delay makes every takedown wait this long before it is applied: a slow
	// service, to demonstrate the API's 202 Accepted path. Zero means none.
	Delay time.Duration
	// BeforeTakedown, when set, is called before each takedown command is
	// applied, before Delay; the command waits until it returns. An error
	// makes the command fail with contract.CodeUnavailable, unapplied.
	// Meant for tests, which block it on a channel. It must return by the
	// time ctx ends.
	BeforeTakedown func(ctx context.Context, cmd contract.TakedownCommand) error
	// BeforeReport is BeforeTakedown for reports; an error drops the
	// report. Meant for tests.
	BeforeReport func(ctx context.Context, r contract.Report) error
	// Topics names the topics. Zero means contract.DefaultTopics("").
	Topics contract.Topics
	// AfterEvent, when set, is called after each domain event read from the
	// events topic was applied (or found to be applied already), with its
	// type. Meant for tests and metrics; it must be fast.
	AfterEvent func(eventType string)
	// Group is the consumer group prefix of the instances of one service.
	// Default "items-service".
	Group string
	// Logger receives one line per takedown and report. Nil logs nothing.
	Logger *slog.Logger
}

// Service is a running items service. Create it with New and stop it with
// Close.
type Service struct {
	t     syncbridge.Transport
	opts  Options
	log   *slog.Logger
	stop  chan struct{} // closed by Close, to cut delays short
	close sync.Once
	err   error // Close's result

	// The running subscriptions, closed in reverse order by Close.
	subs []interface{ Close() error }

	mu        sync.Mutex                         // protects items, reports, takedowns
	items     map[string]*contract.Item          // by item ID
	reports   map[string]contract.ReportStatus   // by report ID
	takedowns map[string]contract.TakedownResult // by takedown ID
}

// Seed returns the sample catalogue: a few items, some of them dubious,
// shared with groups, with their owner's followers, or both.
func Seed() []contract.Item {
	return []contract.Item{
		{ID: "itm-1001", Owner: "alice", Title: "Vintage road bike, 56 cm frame", Audience: contract.Audience{Groups: []string{"cycling-lyon"}, Followers: true}},
		{ID: "itm-1002", Owner: "quickdeals_77", Title: "iPhone 16 Pro, sealed, half price, cash only", Audience: contract.Audience{Groups: []string{"bargains-paris", "phones"}}},
		{ID: "itm-1003", Owner: "petlover2024", Title: "Puppies for sale, no papers, ready now", Audience: contract.Audience{Followers: true}},
		{ID: "itm-1004", Owner: "bob", Title: "Two concert tickets at face value", Audience: contract.Audience{Groups: []string{"music-fans"}, Followers: true}},
		{ID: "itm-1005", Owner: "luxe_outlet", Title: "Designer handbag, 90% off, no receipt", Audience: contract.Audience{Groups: []string{"fashion-swap"}, Followers: true}},
	}
}

// New starts a Service on t: it subscribes to the events, the reports, the
// queries and the takedown commands, in that order, and returns once every
// subscription is positioned. It does not own t.
func New(t syncbridge.Transport, opts Options) (*Service, error) {
	if opts.Items == nil {
		opts.Items = Seed()
	}
	if opts.Topics == (contract.Topics{}) {
		opts.Topics = contract.DefaultTopics("")
	}
	if opts.Group == "" {
		opts.Group = "items-service"
	}
	s := &Service{
		t:         t,
		opts:      opts,
		log:       opts.Logger,
		stop:      make(chan struct{}),
		items:     make(map[string]*contract.Item, len(opts.Items)),
		reports:   make(map[string]contract.ReportStatus),
		takedowns: make(map[string]contract.TakedownResult),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, it := range opts.Items {
		it.Audience.Groups = slices.Clone(it.Audience.Groups)
		s.items[it.ID] = &it
	}
	if err := s.start(); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Service) start() error {
	ctx, cancel := context.WithTimeout(context.Background(), syncbridge.DefaultTimeout)
	defer cancel()
	// Events first: a broadcast subscription, so that this instance sees
	// the events of every instance, from now on.
	sub, err := s.t.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: s.opts.Topics.Events}, s.onEvent)
	if err != nil {
		return fmt.Errorf("items: subscribe to %s: %w", s.opts.Topics.Events, err)
	}
	s.subs = append(s.subs, sub)
	sub, err = s.t.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: s.opts.Topics.Reports, Group: s.opts.Group + ".reports"}, s.onReport)
	if err != nil {
		return fmt.Errorf("items: subscribe to %s: %w", s.opts.Topics.Reports, err)
	}
	s.subs = append(s.subs, sub)
	r, err := syncbridge.NewResponder(context.Background(), s.t, s.opts.Topics.Queries, s.query, syncbridge.WithGroup(s.opts.Group+".queries"))
	if err != nil {
		return fmt.Errorf("items: %w", err)
	}
	s.subs = append(s.subs, r)
	r, err = syncbridge.NewResponder(context.Background(), s.t, s.opts.Topics.Takedowns, s.takedown, syncbridge.WithGroup(s.opts.Group+".takedowns"))
	if err != nil {
		return fmt.Errorf("items: %w", err)
	}
	s.subs = append(s.subs, r)
	return nil
}

// Close stops the service: delays and takedowns waiting in Delay end at
// once with contract.CodeUnavailable, then the subscriptions close, each
// once its handlers have returned. Close is idempotent and returns the
// same error every time.
func (s *Service) Close() error {
	s.close.Do(func() {
		close(s.stop)
		var errs []error
		for _, sub := range slices.Backward(s.subs) {
			errs = append(errs, sub.Close())
		}
		s.err = errors.Join(errs...)
	})
	return s.err
}

// Item returns the service's view of an item, and whether it exists.
func (s *Service) Item(id string) (contract.Item, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.items[id]
	if !ok {
		return contract.Item{}, false
	}
	return s.view(it), true
}

// view copies it; s.mu must be held.
func (s *Service) view(it *contract.Item) contract.Item {
	v := *it
	v.Audience.Groups = slices.Clone(it.Audience.Groups)
	if it.RemovedAt != nil {
		t := *it.RemovedAt
		v.RemovedAt = &t
	}
	return v
}

// takedown is the Responder's handler for the takedowns topic.
func (s *Service) takedown(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
	var cmd contract.TakedownCommand
	if err := contract.Decode(req, &cmd); err != nil {
		return syncbridge.Message{}, syncbridge.NewRemoteError(contract.CodeInvalid, err.Error())
	}
	if !contract.ValidID(cmd.TakedownID) || !contract.ValidID(cmd.ItemID) {
		return syncbridge.Message{}, syncbridge.NewRemoteError(contract.CodeInvalid, "takedown_id and item_id must be valid IDs")
	}
	if err := s.wait(ctx, cmd); err != nil {
		return syncbridge.Message{}, syncbridge.NewRemoteError(contract.CodeUnavailable, err.Error())
	}

	s.mu.Lock()
	res, done := s.takedowns[cmd.TakedownID]
	it, found := s.items[cmd.ItemID]
	var ev contract.ItemTakenDown
	if found {
		ev = contract.ItemTakenDown{
			ItemID: it.ID, Owner: it.Owner, Audience: s.view(it).Audience,
			TakedownID: cmd.TakedownID, Reason: cmd.Reason, CaseRef: cmd.CaseRef,
			RemovedAt: time.Now().UTC(),
		}
	}
	switch {
	case done:
		// A redelivered command: the same answer as the first time.
	case !found:
		s.mu.Unlock()
		return syncbridge.Message{}, syncbridge.NewRemoteError(contract.CodeNotFound, fmt.Sprintf("no item %q", cmd.ItemID))
	case it.TakenDown:
		res = contract.TakedownResult{TakedownID: cmd.TakedownID, ItemID: it.ID, Status: contract.StatusAlreadyRemoved, RemovedAt: *it.RemovedAt}
		s.takedowns[cmd.TakedownID] = res
		done = true
	}
	s.mu.Unlock()

	if !done {
		// Publish the event before applying the takedown: when the event
		// cannot be published, nothing changed and the caller may retry.
		// (A crash between the two would lose the takedown but not the
		// event; a real service would use a transactional outbox.)
		msg, err := contract.Encode(s.opts.Topics.Events, ev.ItemID, ev, syncbridge.Header{Key: contract.EventHeader, Value: []byte(contract.EventItemTakenDown)})
		if err != nil {
			return syncbridge.Message{}, err
		}
		if err := s.t.Publish(ctx, msg); err != nil {
			return syncbridge.Message{}, syncbridge.NewRemoteError(contract.CodeUnavailable, "event not published: "+err.Error())
		}
		res = s.applyTakedown(ev)
		if res.TakedownID == cmd.TakedownID {
			s.log.Info("item taken down", "item_id", ev.ItemID, "owner", ev.Owner, "takedown_id", ev.TakedownID, "case_ref", ev.CaseRef)
		}
	}
	return contract.Encode("", cmd.ItemID, res)
}

// wait applies BeforeTakedown and Delay.
func (s *Service) wait(ctx context.Context, cmd contract.TakedownCommand) error {
	if f := s.opts.BeforeTakedown; f != nil {
		if err := f(ctx, cmd); err != nil {
			return err
		}
	}
	if d := s.opts.Delay; d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stop:
			return errors.New("items service stopping")
		}
	}
	return nil
}

// applyTakedown applies ev to the catalogue, unless the item was taken down
// already, and returns the result of ev's takedown: removed when it was
// applied now or before, already_removed when another takedown came first.
func (s *Service) applyTakedown(ev contract.ItemTakenDown) contract.TakedownResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	if res, ok := s.takedowns[ev.TakedownID]; ok {
		return res
	}
	res := contract.TakedownResult{TakedownID: ev.TakedownID, ItemID: ev.ItemID, Status: contract.StatusRemoved, RemovedAt: ev.RemovedAt}
	if it, ok := s.items[ev.ItemID]; ok {
		if it.TakenDown {
			res.Status, res.RemovedAt = contract.StatusAlreadyRemoved, *it.RemovedAt
		} else {
			t := ev.RemovedAt
			it.TakenDown, it.RemovedAt, it.TakedownID = true, &t, ev.TakedownID
		}
	}
	s.takedowns[ev.TakedownID] = res
	return res
}

// query is the Responder's handler for the queries topic.
func (s *Service) query(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
	var q contract.Query
	if err := contract.Decode(req, &q); err != nil {
		return syncbridge.Message{}, syncbridge.NewRemoteError(contract.CodeInvalid, err.Error())
	}
	s.mu.Lock()
	var v any
	switch q.Kind {
	case contract.QueryItem:
		if it, ok := s.items[q.ID]; ok {
			v = s.view(it)
		}
	case contract.QueryReport:
		if r, ok := s.reports[q.ID]; ok {
			v = r
		}
	case contract.QueryTakedown:
		if r, ok := s.takedowns[q.ID]; ok {
			v = r
		}
	default:
		s.mu.Unlock()
		return syncbridge.Message{}, syncbridge.NewRemoteError(contract.CodeInvalid, fmt.Sprintf("unknown query kind %q", q.Kind))
	}
	s.mu.Unlock()
	if v == nil {
		return syncbridge.Message{}, syncbridge.NewRemoteError(contract.CodeNotFound, fmt.Sprintf("no %s %q", q.Kind, q.ID))
	}
	return contract.Encode("", q.ID, v)
}

// onReport records a user's report from the reports topic and
// publishes its outcome as an event. Reports are fire-and-forget: nobody
// waits for an answer, and a malformed one is only logged.
func (s *Service) onReport(ctx context.Context, msg syncbridge.Message) {
	var r contract.Report
	if err := contract.Decode(&msg, &r); err != nil || !contract.ValidID(r.ReportID) {
		s.log.Warn("malformed report dropped", "err", err)
		return
	}
	if f := s.opts.BeforeReport; f != nil {
		if err := f(ctx, r); err != nil {
			s.log.Warn("report dropped", "report_id", r.ReportID, "err", err)
			return
		}
	}
	s.mu.Lock()
	_, seen := s.reports[r.ReportID]
	_, found := s.items[r.ItemID]
	s.mu.Unlock()
	if seen {
		return // redelivered
	}
	now := time.Now().UTC()
	st := contract.ReportStatus{ReportID: r.ReportID, ItemID: r.ItemID, Status: contract.StatusRecorded, SubmittedAt: r.SubmittedAt, ProcessedAt: &now}
	if !found {
		st.Status = contract.StatusRejected
	}
	// Record it here first, so that this instance knows of it once the
	// event is out; then tell the other instances.
	s.applyReport(st)
	s.log.Info("report processed", "report_id", r.ReportID, "item_id", r.ItemID, "status", st.Status)
	ev, err := contract.Encode(s.opts.Topics.Events, r.ItemID, st, syncbridge.Header{Key: contract.EventHeader, Value: []byte(contract.EventReportProcessed)})
	if err == nil {
		err = s.t.Publish(ctx, ev)
	}
	if err != nil {
		// The other instances will not know of it; this one does.
		s.log.Warn("report event not published", "report_id", r.ReportID, "err", err)
	}
}

// applyReport records st, once.
func (s *Service) applyReport(st contract.ReportStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.reports[st.ReportID]; ok {
		return
	}
	s.reports[st.ReportID] = st
	if it, ok := s.items[st.ItemID]; ok && st.Status == contract.StatusRecorded {
		it.Reports++
	}
}

// onEvent applies the domain events of every instance, this one's
// included, to the catalogue.
func (s *Service) onEvent(_ context.Context, msg syncbridge.Message) {
	typ, _ := msg.Header(contract.EventHeader)
	switch string(typ) {
	case contract.EventItemTakenDown:
		var ev contract.ItemTakenDown
		if err := contract.Decode(&msg, &ev); err != nil || ev.TakedownID == "" {
			return
		}
		s.applyTakedown(ev)
	case contract.EventReportProcessed:
		var st contract.ReportStatus
		if err := contract.Decode(&msg, &st); err != nil || st.ReportID == "" {
			return
		}
		s.applyReport(st)
	default:
		return
	}
	if f := s.opts.AfterEvent; f != nil {
		f(string(typ))
	}
}
