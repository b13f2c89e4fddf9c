package kafka

import "testing"

// A group subscription commits only below the oldest record not acked
// (with Subscribe, acked when the handler returned); a second ack of a
// record does nothing.
func TestPartWorkerAckedOutOfOrder(t *testing.T) {
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
		if first, moved := w.acked(tt.finish); !first || moved != tt.moved {
			t.Errorf("acked(%d) = %v, %v, want true, %v", tt.finish, first, moved, tt.moved)
		}
		if got := w.processed.Load(); got != tt.want {
			t.Errorf("after acked(%d): processed %d, want %d", tt.finish, got, tt.want)
		}
		if first, moved := w.acked(tt.finish); first || moved {
			t.Errorf("second acked(%d) = %v, %v, want false, false", tt.finish, first, moved)
		}
	}
	if len(w.inFlight) != 0 {
		t.Errorf("%d records still in flight, want 0", len(w.inFlight))
	}
}
