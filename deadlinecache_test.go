package syncbridge

import (
	"sync"
	"testing"
	"time"
)

// TestDeadlineCache: the cached deadline text is always the deadline's own,
// also when goroutines append different deadlines at once (each writes the
// cache in turn and reads what another wrote).
func TestDeadlineCache(t *testing.T) {
	var c deadlineCache
	base := time.UnixMilli(1764102531123)
	deadlines := []time.Time{base, base.Add(time.Millisecond), base.Add(time.Hour), time.UnixMilli(-5), time.Unix(0, -1), time.Unix(0, -1e6), time.UnixMilli(0), time.Unix(0, 1<<62+7)}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20000 {
				d := deadlines[(g+i/(g+1))%len(deadlines)]
				got := c.append([]byte("x"), d.UnixNano())
				if want := appendDeadline([]byte("x"), d); string(got) != string(want) {
					t.Errorf("append(%v) = %q, want %q", d, got, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}
