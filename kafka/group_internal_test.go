package kafka

import "testing"

// A Concurrent subscription commits only below the oldest call in progress.
func TestPartWorkerFinishedOutOfOrder(t *testing.T) {
	offsets := []int64{10, 11, 13, 14, 20} // gaps: compaction, control records
	tests := []struct {
		finish int64
		moved  bool
		want   int64
	}{
		{13, false, -1},
		{10, true, 11},
		{20, false, 11},
		{11, true, 14},
		{14, true, 21},
	}
	w := &partWorker{}
	w.processed.Store(-1)
	for _, o := range offsets {
		w.dispatched(o)
	}
	for _, tt := range tests {
		if moved := w.finished(tt.finish); moved != tt.moved {
			t.Errorf("finished(%d) moved = %v, want %v", tt.finish, moved, tt.moved)
		}
		if got := w.processed.Load(); got != tt.want {
			t.Errorf("after finished(%d): processed %d, want %d", tt.finish, got, tt.want)
		}
	}
	if len(w.inFlight) != 0 {
		t.Errorf("%d calls still in flight, want 0", len(w.inFlight))
	}
}
