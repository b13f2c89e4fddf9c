package syncbridge

import (
	"context"
	"sync"
)

// watches watches the contexts that Calls started by Go share: one
// context.AfterFunc per context, however many Calls share it, and not one
// per Call. A Call waiting for its reply then costs an entry in its
// context's set (about 16 bytes) instead of an AfterFunc registration
// (about 150 bytes). A batch of requests started with one context is the
// common case for many Calls in flight; a Call whose context is not the
// one of the Call before it (a context per HTTP request) has an AfterFunc
// of its own, as that costs less than a set for one.
type watches struct {
	mu   sync.Mutex // protects m, last and the ctxWatches in m
	m    map[context.Context]*ctxWatch
	last context.Context // the context of the last Call given its own AfterFunc
}

// ctxWatch is the watch of one context.
type ctxWatch struct {
	ctx   context.Context
	stop  func() bool        // stops the context.AfterFunc
	calls map[*Call]struct{} // the Calls to expire when ctx ends
	fired bool               // ctx ended: the Calls were taken, w is no longer in m
}

// add makes c expire when its context (c.parent, which can end) ends, with
// other Calls on the same context, and returns the watch to give remove
// once c has ended; or it returns nil: the context is not shared (yet),
// and c should watch it with an AfterFunc of its own.
func (ws *watches) add(c *Call) *ctxWatch {
	ctx := c.parent
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.m[ctx]
	if w == nil {
		if ws.last != ctx {
			ws.last = ctx
			return nil
		}
		w = &ctxWatch{ctx: ctx, calls: make(map[*Call]struct{})}
		ws.m[ctx] = w
		// When ctx has ended already, fire runs at once, in a goroutine
		// of its own: after this function lets go of mu.
		w.stop = context.AfterFunc(ctx, func() { ws.fire(w) })
	}
	w.calls[c] = struct{}{}
	return w
}

// remove stops watching the context of c, which has ended. The last Call
// of a context stops its AfterFunc.
func (ws *watches) remove(w *ctxWatch, c *Call) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if w.fired {
		return
	}
	delete(w.calls, c)
	if len(w.calls) == 0 {
		w.stop()
		delete(ws.m, w.ctx)
	}
}

// fire expires the Calls of w, whose context ended.
func (ws *watches) fire(w *ctxWatch) {
	ws.mu.Lock()
	if w.fired || ws.m[w.ctx] != w { // removed: its last Call ended first
		ws.mu.Unlock()
		return
	}
	w.fired = true
	delete(ws.m, w.ctx)
	calls := w.calls
	w.calls = nil
	ws.mu.Unlock()
	for c := range calls {
		c.expireCtx()
	}
}

// len returns the number of contexts watched.
func (ws *watches) len() int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return len(ws.m)
}
