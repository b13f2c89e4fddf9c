package syncbridge

import (
	"context"
	"testing"
	"time"
)

// A reply's context ends at the deadline, and only then: Done closes,
// Err says DeadlineExceeded, and the functions registered with
// context.AfterFunc run, but for the stopped ones.
func TestReplyCtx(t *testing.T) {
	c := &replyCtx{deadline: time.Now().Add(50 * time.Millisecond).UnixNano()}
	if err := c.Err(); err != nil {
		t.Fatalf("Err before the deadline: %v", err)
	}
	ran := make(chan int, 3)
	context.AfterFunc(c, func() { ran <- 1 })
	stop := context.AfterFunc(c, func() { ran <- 2 })
	context.AfterFunc(c, func() { ran <- 3 })
	if !stop() {
		t.Error("stop before the deadline reported false")
	}
	<-c.Done()
	if err := c.Err(); err != context.DeadlineExceeded {
		t.Errorf("Err after Done: %v", err)
	}
	got := map[int]bool{<-ran: true, <-ran: true}
	if !got[1] || !got[3] {
		t.Errorf("AfterFuncs run: %v, want 1 and 3", got)
	}
	select {
	case n := <-ran:
		t.Errorf("AfterFunc %d ran after it was stopped", n)
	default:
	}
	// Registered after the end: runs at once.
	context.AfterFunc(c, func() { ran <- 4 })
	if n := <-ran; n != 4 {
		t.Errorf("late AfterFunc: %d", n)
	}
	// A context asked nothing of, with its deadline passed: Err and Done agree.
	d := &replyCtx{deadline: time.Now().Add(-time.Second).UnixNano()}
	if d.Err() != context.DeadlineExceeded {
		t.Error("Err of a past deadline is nil")
	}
	select {
	case <-d.Done():
	default:
		t.Error("Done of a past deadline is not closed")
	}
}
