package syncbridge

import (
	"math/rand/v2"
	"testing"
)

// TestRegistryModel: the registry agrees with a map through bursts of
// many Calls in flight (the tables grow, then shrink), stragglers that
// stay while a million newer ones pass (they move aside instead of
// growing the tables), resolves, removes, and close.
func TestRegistryModel(t *testing.T) {
	r := newRegistry()
	model := map[uint64]*Call{}
	var seq uint64
	check := func(when string) {
		t.Helper()
		if got := r.len(); got != len(model) {
			t.Fatalf("%s: len %d, want %d", when, got, len(model))
		}
	}
	add := func() *Call {
		seq++
		c := &Call{seq: seq}
		if !r.add(seq, c) {
			t.Fatalf("add(%d) refused", seq)
		}
		model[seq] = c
		return c
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var stragglers []*Call
	for round := range 40 {
		burst := 1 + rng.IntN(20000)
		if round%10 == 9 {
			burst = 200000
		}
		var live []*Call
		for range burst {
			c := add()
			if rng.IntN(5000) == 0 {
				stragglers = append(stragglers, c)
			} else {
				live = append(live, c)
			}
			if len(live) > 0 && rng.IntN(3) > 0 && round%10 != 9 { // mostly in order
				i := rng.IntN(min(len(live), 8))
				c := live[i]
				live = append(live[:i], live[i+1:]...)
				var got *Call
				if rng.IntN(2) == 0 {
					got = r.remove(c.seq)
				} else {
					got, _ = r.resolve(c.seq)
				}
				if got != c {
					t.Fatalf("round %d: took %p for seq %d, want %p", round, got, c.seq, c)
				}
				delete(model, c.seq)
			}
		}
		check("after burst")
		for _, c := range live {
			if got := r.remove(c.seq); got != c {
				t.Fatalf("round %d: remove(%d) = %p, want %p", round, c.seq, got, c)
			}
			if got := r.remove(c.seq); got != nil {
				t.Fatalf("round %d: second remove(%d) = %p, want nil", round, c.seq, got)
			}
			delete(model, c.seq)
		}
		check("after drain")
	}
	for i := range r.shards {
		if n := len(r.shards[i].slots); n > 4*minSlots {
			t.Errorf("shard %d keeps %d slots with %d Calls", i, n, r.shards[i].n)
		}
	}
	if len(stragglers) == 0 {
		t.Fatal("no stragglers: the test does not test them")
	}
	for _, c := range stragglers[:len(stragglers)/2] {
		if got, dup := r.resolve(c.seq); got != c || dup {
			t.Fatalf("resolve straggler %d = %p, %v", c.seq, got, dup)
		}
		if got, dup := r.resolve(c.seq); got != nil || !dup {
			t.Fatalf("resolve answered straggler %d again = %p, dup %v; want nil, true", c.seq, got, dup)
		}
		delete(model, c.seq)
	}
	check("after stragglers")
	got := map[uint64]*Call{}
	for _, c := range r.close() {
		got[c.seq] = c
	}
	if len(got) != len(model) {
		t.Fatalf("close returned %d Calls, want %d", len(got), len(model))
	}
	for s, c := range model {
		if got[s] != c {
			t.Fatalf("close did not return %d", s)
		}
	}
	if r.add(seq+1, &Call{seq: seq + 1}) {
		t.Fatal("add after close accepted")
	}
	clear(model)
	check("after close")
}
