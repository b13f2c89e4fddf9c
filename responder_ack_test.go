package syncbridge_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
)

// holdingTransport is a memory transport that is an AsyncPublisher and an
// AckSubscriber, and holds what is published to "raw.replies" until the
// test releases it: a reply whose acknowledgement is slow to come. It
// counts the acks its SubscribeAck handlers give.
type holdingTransport struct {
	*memory.Transport
	mu    sync.Mutex
	held  []heldReply
	added chan struct{} // a token per reply held
	acks  atomic.Int64
}

type heldReply struct {
	ctx  context.Context
	msg  syncbridge.Message
	done func(error)
}

func newHoldingTransport(t *testing.T) *holdingTransport {
	h := &holdingTransport{Transport: &memory.Transport{}, added: make(chan struct{}, 100)}
	t.Cleanup(func() { h.Close() })
	return h
}

func (h *holdingTransport) PublishAsync(ctx context.Context, msg syncbridge.Message, done func(error)) {
	if msg.Topic == "raw.replies" {
		h.mu.Lock()
		h.held = append(h.held, heldReply{ctx, msg, done})
		h.mu.Unlock()
		h.added <- struct{}{}
		return
	}
	done(h.Publish(ctx, msg))
}

func (h *holdingTransport) SubscribeAck(ctx context.Context, cfg syncbridge.SubscribeConfig, ah syncbridge.AckHandler) (syncbridge.Subscription, error) {
	return h.Transport.SubscribeAck(ctx, cfg, func(ctx context.Context, m syncbridge.Message, ack func()) {
		ah(ctx, m, func() { h.acks.Add(1); ack() })
	})
}

// release publishes the held replies (or fails them with err), in order,
// and calls their done.
func (h *holdingTransport) release(err error) {
	h.mu.Lock()
	held := h.held
	h.held = nil
	h.mu.Unlock()
	for _, r := range held {
		if err != nil {
			r.done(err)
			continue
		}
		r.done(h.Publish(r.ctx, r.msg))
	}
}

// A Responder on a transport that is an AsyncPublisher and an
// AckSubscriber does not wait for a reply's acknowledgement before it
// handles the next request of the partition: handler calls go on, in
// order, while replies are held; each request is acked, and counts in
// progress, until its reply is acknowledged.
func TestResponderPipelinesReplies(t *testing.T) {
	tr := newHoldingTransport(t)
	got := replies(t, tr.Transport)
	var (
		mu    sync.Mutex
		order []string
	)
	r, err := syncbridge.NewResponder(context.Background(), tr, "req", func(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		mu.Lock()
		order = append(order, string(req.Value))
		mu.Unlock()
		return syncbridge.Message{Value: req.Value}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ids := []string{"a", "b", "c", "d"}
	for _, id := range ids { // keyless: memory spreads them; one partition below
		rawRequest(t, tr, id, time.Now().Add(time.Minute))
	}
	for range ids {
		select {
		case <-tr.added:
		case <-time.After(30 * time.Second):
			tr.mu.Lock()
			defer tr.mu.Unlock()
			t.Fatalf("%d replies handed to the transport while none was acknowledged, want %d", len(tr.held), len(ids))
		}
	}
	if st := r.Stats(); st.InProgress != len(ids) || st.Handled != uint64(len(ids)) {
		t.Errorf("replies unacknowledged: InProgress %d, Handled %d; want %d and %d", st.InProgress, st.Handled, len(ids), len(ids))
	}
	if n := tr.acks.Load(); n != 0 {
		t.Errorf("%d requests acked before their replies were acknowledged", n)
	}
	tr.release(nil)
	for range ids {
		<-got
	}
	if n := tr.acks.Load(); n != int64(len(ids)) {
		t.Errorf("%d requests acked, want %d", n, len(ids))
	}
	if st := r.Stats(); st.InProgress != 0 {
		t.Errorf("InProgress %d after every reply was acknowledged", st.InProgress)
	}

	// Per key, handler calls keep the order of the requests.
	mu.Lock()
	order = nil
	mu.Unlock()
	keyed := []string{"1", "2", "3", "4", "5", "6"}
	h := syncbridge.DefaultHeaderNames()
	for _, id := range keyed {
		hdrs := []syncbridge.Header{{Key: h.CorrelationID, Value: []byte(id)}, {Key: h.ReplyTopic, Value: []byte("raw.replies")}}
		if err := tr.Publish(context.Background(), syncbridge.Message{Topic: "req", Key: []byte("k"), Value: []byte(id), Headers: hdrs}); err != nil {
			t.Fatal(err)
		}
	}
	for range keyed {
		<-tr.added
	}
	tr.release(nil)
	for range keyed {
		<-got
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range keyed {
		if order[i] != keyed[i] {
			t.Fatalf("handler calls for one key in order %v, want %v", order, keyed)
		}
	}
}

// A reply that fails is counted as for a synchronous Publish, and its
// request is acked all the same: it was handled. HandleEndHook sees the
// transport's error, once the reply's fate is known.
func TestResponderPipelinedReplyFails(t *testing.T) {
	tr := newHoldingTransport(t)
	ends := make(chan *syncbridge.HandleInfo, 1)
	r, err := syncbridge.NewResponder(context.Background(), tr, "req", func(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		return syncbridge.Message{Value: req.Value}, nil
	}, syncbridge.WithHooks(handleEndFunc(func(hi *syncbridge.HandleInfo) { ends <- hi })))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rawRequest(t, tr, "x", time.Now().Add(time.Minute))
	<-tr.added
	select {
	case <-ends:
		t.Fatal("HandleEndHook called before the reply's fate was known")
	default:
	}
	boom := errors.New("boom")
	tr.release(boom)
	hi := <-ends
	if !errors.Is(hi.ReplyErr, boom) {
		t.Errorf("HandleInfo.ReplyErr = %v, want %v", hi.ReplyErr, boom)
	}
	if st := r.Stats(); st.ReplyFailed != 1 || st.InProgress != 0 {
		t.Errorf("ReplyFailed %d, InProgress %d; want 1 and 0", st.ReplyFailed, st.InProgress)
	}
	if n := tr.acks.Load(); n != 1 {
		t.Errorf("%d requests acked, want 1", n)
	}
}

type handleEndFunc func(*syncbridge.HandleInfo)

func (f handleEndFunc) OnHandleEnd(hi *syncbridge.HandleInfo) { f(hi) }

// Close, and Shutdown, with replies not yet acknowledged: they wait for
// them (the replies of handled requests are still sent), and the reply's
// context is not cancelled by Close.
func TestResponderCloseWaitsForReplies(t *testing.T) {
	for _, how := range []string{"Close", "Shutdown"} {
		t.Run(how, func(t *testing.T) {
			tr := newHoldingTransport(t)
			got := replies(t, tr.Transport)
			r, err := syncbridge.NewResponder(context.Background(), tr, "req", func(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
				return syncbridge.Message{Value: req.Value}, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			rawRequest(t, tr, "x", time.Now().Add(time.Minute))
			<-tr.added
			closed := make(chan error, 1)
			go func() {
				if how == "Close" {
					closed <- r.Close()
				} else {
					closed <- r.Shutdown(context.Background())
				}
			}()
			select {
			case err := <-closed:
				t.Fatalf("%s returned (%v) with a reply not acknowledged", how, err)
			case <-time.After(500 * time.Millisecond):
			}
			tr.mu.Lock()
			ctxErr := tr.held[0].ctx.Err()
			tr.mu.Unlock()
			if ctxErr != nil {
				t.Errorf("%s cancelled the reply's context: %v", how, ctxErr)
			}
			tr.release(nil)
			if err := <-closed; err != nil {
				t.Errorf("%s: %v", how, err)
			}
			select { // published before its done, so before Close returned
			case m := <-got:
				if string(m.Value) != "x" {
					t.Errorf("reply %q, want x", m.Value)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("the reply was not delivered")
			}
		})
	}
}
