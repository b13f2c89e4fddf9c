package syncbridge_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
)

// TestGatherDuplicates: a reply delivered twice (at-least-once) counts
// once, and the second is dropped as a duplicate.
func TestGatherDuplicates(t *testing.T) {
	// In a bubble: both groups' replies and their duplicates come within
	// the quiet gap, however busy the machine.
	synctest.Test(t, func(t *testing.T) {
		tr := newMemory(t)
		tr.SetFaults(func(m *syncbridge.Message) memory.Fault {
			if m.Topic == syncbridge.DefaultReplyTopic {
				return memory.Duplicate
			}
			return memory.Deliver
		})
		for i := range 2 {
			newResponder(t, tr, "req", echo, syncbridge.WithGroup(fmt.Sprint("g", i)))
		}
		b := newBridge(t, tr)
		g, err := b.Gather(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req", Value: []byte("v")}, syncbridge.GatherOptions{Count: 3, Quiet: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if g.Len() != 2 || g.Stop != syncbridge.GatherQuiet {
			t.Errorf("gathered %d replies, stopped by %v; want 2 (one per group), by the quiet gap", g.Len(), g.Stop)
		}
		if d := b.Stats().Dropped.Duplicate; d != 2 {
			t.Errorf("%d duplicates dropped, want 2", d)
		}
	})
}

// TestGatherInvalid: bad options and messages are refused at once.
func TestGatherInvalid(t *testing.T) {
	e := newEnv(t, echo)
	for _, tc := range []struct {
		msg  syncbridge.Message
		opts syncbridge.GatherOptions
	}{{syncbridge.Message{}, syncbridge.GatherOptions{}}, {syncbridge.Message{Topic: "req"}, syncbridge.GatherOptions{Count: -1}}} {
		if _, err := e.b.Gather(context.Background(), tc.msg, tc.opts); err == nil {
			t.Errorf("Gather(%+v, %+v) succeeded", tc.msg, tc.opts)
		}
	}
}

func ExampleBridge_Gather() {
	tr := &memory.Transport{}
	defer tr.Close()
	ctx := context.Background()
	// Three price services, each in a group of its own, so that each
	// receives every request.
	for _, shop := range []string{"north", "south", "east"} {
		r, err := syncbridge.NewResponder(ctx, tr, "prices", func(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
			return syncbridge.Message{Value: []byte(shop + ": 12 EUR")}, nil
		}, syncbridge.WithGroup("prices."+shop))
		if err != nil {
			panic(err)
		}
		defer r.Close()
	}
	b, err := syncbridge.New(ctx, tr)
	if err != nil {
		panic(err)
	}
	defer b.Close()

	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	g, err := b.Gather(ctx, syncbridge.Message{Topic: "prices", Value: []byte("bike")}, syncbridge.GatherOptions{Count: 3})
	if err != nil {
		panic(err)
	}
	var got []string
	for _, r := range g.Replies {
		got = append(got, string(r.Value))
	}
	slices.Sort(got)
	fmt.Println(got, "stopped by", g.Stop)
	// Output: [east: 12 EUR north: 12 EUR south: 12 EUR] stopped by count
}

// BenchmarkGather8 gathers the replies of 8 responders (8 groups) to one
// request, over the memory transport.
func BenchmarkGather8(b *testing.B) {
	tr := &memory.Transport{}
	defer tr.Close()
	for i := range 8 {
		r, err := syncbridge.NewResponder(context.Background(), tr, "req", echo, syncbridge.WithGroup(fmt.Sprint("g", i)))
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
	}
	br, err := syncbridge.New(context.Background(), tr)
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	b.ReportAllocs()
	for b.Loop() {
		g, err := br.Gather(ctx, syncbridge.Message{Topic: "req", Value: benchPayload}, syncbridge.GatherOptions{Count: 8})
		if err != nil || g.Len() != 8 {
			b.Fatalf("%v, %d replies", err, g.Len())
		}
	}
}

// TestFailFastNoResponders: with the option, a request to a topic without
// responder fails at once with ErrNoResponders and publishes nothing; once
// a responder runs it goes through; without the option it waits.
func TestFailFastNoResponders(t *testing.T) {
	tr := &memory.Transport{}
	defer tr.Close()
	published := make(chan syncbridge.Message, 10)
	sub, err := tr.Subscribe(context.Background(), syncbridge.SubscribeConfig{Topic: "req"}, func(_ context.Context, m syncbridge.Message) { published <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	b, err := syncbridge.New(context.Background(), tr, syncbridge.WithFailFastNoResponders())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, topic := range []string{"req", "never-used"} {
		_, err = b.Request(ctxTimeout(t, time.Hour), syncbridge.Message{Topic: topic})
		if !errors.Is(err, syncbridge.ErrNoResponders) {
			t.Fatalf("Request to %s without responder: %v, want ErrNoResponders", topic, err)
		}
	}
	if _, err := b.Gather(ctxTimeout(t, time.Hour), syncbridge.Message{Topic: "req"}, syncbridge.GatherOptions{}); !errors.Is(err, syncbridge.ErrNoResponders) {
		t.Errorf("Gather without responder: %v, want ErrNoResponders", err)
	}
	r, err := syncbridge.NewResponder(context.Background(), tr, "req", echo)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Request(ctxTimeout(t, 10*time.Second), syncbridge.Message{Topic: "req", Value: []byte("now")}); err != nil {
		t.Fatalf("with a responder: %v", err)
	}
	r.Close()
	if _, err := b.Request(ctxTimeout(t, time.Hour), syncbridge.Message{Topic: "req"}); !errors.Is(err, syncbridge.ErrNoResponders) {
		t.Errorf("after the responder closed: %v, want ErrNoResponders", err)
	}
	// Only the request made while the responder ran was published.
	if m := <-published; string(m.Value) != "now" || len(published) != 0 {
		t.Errorf("published %q and %d more, want only the request made with a responder", m.Value, len(published))
	}
	if st := b.Stats(); st.NoResponders != 4 || st.Replies != 1 {
		t.Errorf("stats %+v, want 4 refused for no responders, 1 reply", st)
	}
	// Off by default: the request is published and waits.
	plain, err := syncbridge.New(context.Background(), tr, syncbridge.WithReplyTopic("plain.replies"))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.Request(ctxTimeout(t, 20*time.Millisecond), syncbridge.Message{Topic: "req"}); !errors.Is(err, syncbridge.ErrNoReply) {
		t.Errorf("without the option: %v, want ErrNoReply", err)
	}
}

// TestGatherClosed: a Gather the Bridge's Close ends returns ErrClosed
// and says so in its stop reason.
func TestGatherClosed(t *testing.T) {
	tr := newMemory(t)
	started := make(chan struct{})
	newResponder(t, tr, "req", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		close(started)
		<-ctx.Done() // the Responder's Close
		return syncbridge.Message{}, ctx.Err()
	})
	b := newBridge(t, tr)
	type result struct {
		g   *syncbridge.Gathered
		err error
	}
	res := make(chan result, 1)
	go func() {
		g, err := b.Gather(ctxTimeout(t, time.Minute), syncbridge.Message{Topic: "req"}, syncbridge.GatherOptions{Count: 2})
		res <- result{g, err}
	}()
	<-started
	b.Close()
	got := <-res
	if !errors.Is(got.err, syncbridge.ErrClosed) || got.g == nil || got.g.Len() != 0 || got.g.Stop != syncbridge.GatherClosed {
		t.Fatalf("Gather after Close: %+v, %v; want no replies, stopped by %v, ErrClosed", got.g, got.err, syncbridge.GatherClosed)
	}
	if got.g.Stop.String() != "closed" {
		t.Errorf("GatherClosed.String() = %q", got.g.Stop.String())
	}
}
