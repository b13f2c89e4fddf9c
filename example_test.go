package syncbridge_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/memory"
)

// A Bridge and a Responder over the in-process transport: the request is
// published, handled asynchronously, and its reply returned to the caller.
func ExampleBridge_Request() {
	tr := &memory.Transport{}
	defer tr.Close()

	// The asynchronous side: a service answering on the "upper" topic.
	r, err := syncbridge.NewResponder(context.Background(), tr, "upper", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		return syncbridge.Message{Value: []byte(strings.ToUpper(string(req.Value)))}, nil
	})
	if err != nil {
		panic(err)
	}
	defer r.Close()

	// The synchronous side.
	b, err := syncbridge.New(context.Background(), tr)
	if err != nil {
		panic(err)
	}
	defer b.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reply, err := b.Request(ctx, syncbridge.Message{Topic: "upper", Value: []byte("take item 42 down")})
	if err != nil {
		panic(err)
	}
	fmt.Println(string(reply.Value))
	// Output: TAKE ITEM 42 DOWN
}

// A responder's error reaches the caller as a *RemoteError.
func ExampleRemoteError() {
	tr := &memory.Transport{}
	defer tr.Close()
	r, _ := syncbridge.NewResponder(context.Background(), tr, "items", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		return syncbridge.Message{}, syncbridge.NewRemoteError("not_found", "no item "+string(req.Value))
	})
	defer r.Close()
	b, _ := syncbridge.New(context.Background(), tr)
	defer b.Close()

	_, err := b.Request(context.Background(), syncbridge.Message{Topic: "items", Value: []byte("itm-7")})
	var re *syncbridge.RemoteError
	if errors.As(err, &re) {
		fmt.Println(re.Code, "-", re.Description)
	}
	// Output: not_found - no item itm-7
}

// When the reply is slower than the caller will wait, keep the Call and
// serve its outcome later: the 202 Accepted strategy as the fall-back of
// the synchronous one.
func ExampleBridge_Go() {
	tr := &memory.Transport{}
	defer tr.Close()
	release := make(chan struct{})
	r, _ := syncbridge.NewResponder(context.Background(), tr, "slow", func(ctx context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		<-release // a slow service
		return syncbridge.Message{Value: []byte("removed")}, nil
	})
	defer r.Close()
	b, _ := syncbridge.New(context.Background(), tr)
	defer b.Close()

	call := b.Go(context.Background(), syncbridge.Message{Topic: "slow"})
	wait, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := call.Wait(wait); errors.Is(err, context.DeadlineExceeded) {
		fmt.Println("202 Accepted: poll", call.ID() != "")
	}

	close(release) // later, the reply arrives
	<-call.Done()
	reply, err := call.Result()
	fmt.Println(string(reply.Value), err)
	// Output:
	// 202 Accepted: poll true
	// removed <nil>
}

// Requests beyond the in-flight limit fail at once, so that a server can
// answer 503 instead of queueing.
func ExampleWithMaxInFlight() {
	tr := &memory.Transport{}
	defer tr.Close()
	b, _ := syncbridge.New(context.Background(), tr, syncbridge.WithMaxInFlight(1))
	defer b.Close()

	first := b.Go(context.Background(), syncbridge.Message{Topic: "nobody-answers"})
	_, err := b.Request(context.Background(), syncbridge.Message{Topic: "nobody-answers"})
	fmt.Println(errors.Is(err, syncbridge.ErrOverloaded))
	first.Cancel()
	// Output: true
}

// Options common to a Bridge and a Responder live in one slice, spread
// into either constructor; a Responder's option given to New is refused.
func ExampleOption() {
	tr := &memory.Transport{}
	defer tr.Close()
	ctx := context.Background()
	h := syncbridge.DefaultHeaderNames()
	h.Deadline = "x-deadline" // the header name the whole system agrees on
	common := []syncbridge.Option{syncbridge.WithHeaderNames(h), syncbridge.WithDefaultTimeout(2 * time.Second)}

	r, err := syncbridge.NewResponder(ctx, tr, "echo", func(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		return syncbridge.Message{Value: req.Value}, nil
	}, append(common, syncbridge.WithGroup("echoes"))...)
	if err != nil {
		panic(err)
	}
	defer r.Close()
	b, err := syncbridge.New(ctx, tr, append(common, syncbridge.WithReplyTopic("echo.replies"))...)
	if err != nil {
		panic(err)
	}
	defer b.Close()
	reply, err := b.Request(ctx, syncbridge.Message{Topic: "echo", Value: []byte("hi")})
	fmt.Println(string(reply.Value), err)

	_, err = syncbridge.New(ctx, tr, syncbridge.WithGroup("echoes"))
	fmt.Println(err)
	// Output:
	// hi <nil>
	// syncbridge: New: option WithGroup applies to a Responder, not a Bridge
}
