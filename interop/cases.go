package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syncbridge/syncbridge"
)

// result is the outcome of one case: one peer, one direction, one mode.
type result struct {
	Peer      string `json:"peer"`
	Direction string `json:"direction"`
	Mode      string `json:"mode"`
	// Sent requests, every other one asking for an error.
	Sent int `json:"sent"`
	// Correct: a success that arrived as the success it asked for (the
	// payload echoed), or an error that arrived as an error with its own
	// code and description, both at the caller that sent the request (and
	// on its partition, when pinned).
	Correct int `json:"correct"`
	// Misrouted: replies that reached another request (its payload), or
	// another replica (a reply topic partition the request did not name).
	Misrouted int `json:"misrouted"`
	// ErrorsSent: requests that asked for an error.
	ErrorsSent int `json:"errorsSent"`
	// ErrorsAsErrors: of those, the ones whose error reached the caller as
	// an error (in its language: *RemoteError, an exception, a failed
	// observable) with the right code and description.
	ErrorsAsErrors int `json:"errorsAsErrors"`
	// Lost: requests that got no reply in time (or could not be sent).
	Lost int `json:"lost"`
	// Wrong: replies of the right request but the wrong kind (an error as a
	// success, empty or not, or a success as an error, or the wrong code).
	Wrong int `json:"wrong"`
	// Took is how long the case ran, as the driver measured it.
	Took time.Duration `json:"-"`
}

func (r result) ok() bool {
	return r.Sent > 0 && r.Correct == r.Sent && r.Misrouted == 0 && r.ErrorsAsErrors == r.ErrorsSent && r.Lost == 0 && r.Wrong == 0
}

// payload returns the i-th request's payload of a case: unique (a nonce per
// run), and asking for an error for odd i.
func payload(tag string, i int, nonce string) (p string, fail bool) {
	fail = i%2 == 1
	kind := "ok"
	if fail {
		kind = "fail"
	}
	return fmt.Sprintf("%s-%s-%d-%s", kind, tag, i, nonce), fail
}

// echoOrFail is the handler of the Go Responders, and what the Spring and
// NestJS responders do too: "echo:" + value, or, for values starting with
// "fail", an error with code "refused" and description "no: " + value.
func echoOrFail(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
	if bytes.HasPrefix(req.Value, []byte("fail")) {
		return syncbridge.Message{}, syncbridge.NewRemoteError("refused", "no: "+string(req.Value))
	}
	return syncbridge.Message{Value: append([]byte("echo:"), req.Value...)}, nil
}

// foreignCounter is a DroppedReplyHook counting the replies a Bridge drops
// as another's. With pinned reply partitions every such reply reached a
// partition its request did not name: misrouted.
type foreignCounter struct{ foreign, other atomic.Int64 }

func (f *foreignCounter) OnDroppedReply(reason syncbridge.DropReason, _ *syncbridge.Message) {
	if reason == syncbridge.DropForeign {
		f.foreign.Add(1)
	} else {
		f.other.Add(1)
	}
}

// goCase describes requests sent by syncbridge Bridges to a peer.
type goCase struct {
	peer, mode   string
	requestTopic string
	replyTopic   string
	pinned       bool
	dialect      syncbridge.Dialect
	n            int
	window       int           // requests in flight at most
	timeout      time.Duration // of each request
	// transport returns a Transport for one Bridge, and how to close it.
	transport func() (syncbridge.Transport, func(), error)
	nonce     string
}

// run sends c.n requests from two Bridges (replicas of one service)
// sharing the reply topic: in mode "default" each reads every partition and
// drops the other's replies; when pinned, they are pinned to partitions 1
// and 2 (not 0, which a responder ignoring the header would likely use).
func (c goCase) run(ctx context.Context) (result, error) {
	res := result{Peer: c.peer, Direction: "go->" + c.peer, Mode: c.mode, Sent: c.n}
	type replica struct {
		b    *syncbridge.Bridge
		part int32
		drop *foreignCounter
	}
	var replicas []replica
	defer func() {
		for _, r := range replicas {
			r.b.Close()
		}
	}()
	for i := range 2 {
		tr, closeTr, err := c.transport()
		if err != nil {
			return res, err
		}
		defer closeTr()
		drop := &foreignCounter{}
		opts := []syncbridge.Option{syncbridge.WithReplyTopic(c.replyTopic), syncbridge.WithHooks(drop), syncbridge.WithDialect(c.dialect)}
		part := int32(-1)
		if c.pinned {
			part = int32(i + 1)
			opts = append(opts, syncbridge.WithReplyPartitions(part))
		}
		b, err := syncbridge.New(ctx, tr, opts...)
		if err != nil {
			return res, fmt.Errorf("bridge %d: %w", i, err)
		}
		replicas = append(replicas, replica{b, part, drop})
	}
	var mu sync.Mutex // protects res
	var next atomic.Int64
	var wg sync.WaitGroup
	window := max(c.window, 1)
	for range window {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < c.n; i = int(next.Add(1) - 1) {
				p, fail := payload("go-"+c.peer+"-"+c.mode, i, c.nonce)
				r := replicas[(i/2)%2] // each replica sends successes and errors
				rctx, cancel := context.WithTimeout(ctx, c.timeout)
				reply, err := r.b.Request(rctx, syncbridge.Message{Topic: c.requestTopic, Key: fmt.Appendf(nil, "k%d", i), Value: []byte(p)})
				cancel()
				mu.Lock()
				classify(&res, p, fail, reply, err, r.part)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for i := range replicas {
		if c.pinned {
			res.Misrouted += int(replicas[i].drop.foreign.Load())
		}
	}
	for i := range res.Sent {
		if i%2 == 1 {
			res.ErrorsSent++
		}
	}
	return res, nil
}

// classify counts one request's outcome at a syncbridge caller.
func classify(res *result, p string, fail bool, reply *syncbridge.Message, err error, part int32) {
	var re *syncbridge.RemoteError
	switch {
	case err == nil:
		switch v := string(reply.Value); {
		case v == "echo:"+p && part >= 0 && reply.Partition != part:
			res.Misrouted++ // on a partition the request did not name
		case v != "echo:"+p && strings.HasPrefix(v, "echo:"):
			res.Misrouted++ // another request's reply
		case v != "echo:"+p || fail:
			res.Wrong++ // not an echo (an error turned into an empty success), or a success for an error
		default:
			res.Correct++
		}
	case errors.As(err, &re):
		switch {
		case re.Description != "no: "+p:
			res.Misrouted++
		case fail && re.Code == "refused" && (part < 0 || re.Reply.Partition == part):
			res.Correct++
			res.ErrorsAsErrors++
		default:
			res.Wrong++
		}
	default:
		res.Lost++
	}
}

// table formats results as the CI log shows them.
func table(rs []result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-7s %-11s %-8s %6s %8s %10s %12s %17s %5s %6s %6s  %s\n",
		"peer", "direction", "mode", "sent", "correct", "misrouted", "errors sent", "errors as errors", "lost", "wrong", "time", "result")
	for _, r := range rs {
		verdict := "ok"
		if !r.ok() {
			verdict = "FAIL"
		}
		fmt.Fprintf(&b, "%-7s %-11s %-8s %6d %8d %10d %12d %17d %5d %6d %5.1fs  %s\n",
			r.Peer, r.Direction, r.Mode, r.Sent, r.Correct, r.Misrouted, r.ErrorsSent, r.ErrorsAsErrors, r.Lost, r.Wrong, r.Took.Seconds(), verdict)
	}
	return b.String()
}
