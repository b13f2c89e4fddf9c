package syncbridge

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestIDFormat: an ID is the prefix, then the sequence number's 16 hex
// digits, lowercase, split 4-12 by a dash; parse takes back exactly those
// and refuses any other byte in a digit's place.
func TestIDFormat(t *testing.T) {
	g := newIDGen()
	seqs := []uint64{0, 1, 9, 10, 15, 16, 0xabcdef, 1<<48 - 1, 1 << 48, 1<<64 - 1, 0x0123456789abcdef, 0xfedcba9876543210}
	for range 1000 {
		seqs = append(seqs, rand.Uint64())
	}
	for _, seq := range seqs {
		want := fmt.Sprintf("%s%04x-%012x", g.prefix[:], seq>>48, seq&(1<<48-1))
		id := g.appendID([]byte("x"), seq)[1:]
		if string(id) != want {
			t.Fatalf("appendID(%#x) = %q, want %q", seq, id, want)
		}
		if got, ok := g.parse(id); !ok || got != seq {
			t.Fatalf("parse(%q) = %#x, %v; want %#x", id, got, ok, seq)
		}
		for i := idPrefixLen; i < idLen; i++ {
			if i == idPrefixLen+4 {
				continue
			}
			for _, c := range []byte{'A', 'F', 'g', '/', ':', '`', '-', 0, 0xff} {
				bad := []byte(want)
				bad[i] = c
				if _, ok := g.parse(bad); ok {
					t.Fatalf("parse(%q) accepted %q in place of a digit", bad, c)
				}
			}
		}
	}
}
