package syncbridge

import (
	"encoding/binary"
	"encoding/hex"

	"github.com/google/uuid"
)

// idLen is the length of a correlation ID: a UUID-shaped string.
const idLen = 36

// idPrefixLen is the length of the part of an ID that names its Bridge.
const idPrefixLen = 19

// idGen makes correlation IDs: the Bridge's random 8-byte instance prefix
// followed by a sequence number, shaped as a UUID
// ("pppppppp-pppp-pppp-ssss-ssssssssssss"). Making one costs no syscall and
// no lock; the prefix lets a Bridge drop replies meant for other Bridges
// with one comparison.
type idGen struct {
	prefix [idPrefixLen]byte
}

func newIDGen() idGen {
	u := uuid.New() // one read from crypto/rand per Bridge
	var g idGen
	hex.Encode(g.prefix[0:8], u[0:4])
	g.prefix[8] = '-'
	hex.Encode(g.prefix[9:13], u[4:6])
	g.prefix[13] = '-'
	hex.Encode(g.prefix[14:18], u[6:8])
	g.prefix[18] = '-'
	return g
}

// appendID appends the ID of seq to dst.
func (g *idGen) appendID(dst []byte, seq uint64) []byte {
	dst = append(dst, g.prefix[:]...)
	hi, lo := hex8(uint32(seq>>32)), hex8(uint32(seq))
	var b [idLen - idPrefixLen]byte // "ssss-ssssssssssss"
	binary.BigEndian.PutUint32(b[0:4], uint32(hi>>32))
	b[4] = '-'
	binary.BigEndian.PutUint32(b[5:9], uint32(hi))
	binary.BigEndian.PutUint64(b[9:17], lo)
	return append(dst, b[:]...)
}

// hex8 returns the 8 lowercase hex digits of x as the bytes of a uint64,
// the first digit in the most significant byte: a few arithmetic
// operations instead of a loop over the digits.
func hex8(x uint32) uint64 {
	// Spread the nibbles of x, one per byte.
	v := uint64(x)
	v = (v | v<<16) & 0x0000ffff0000ffff
	v = (v | v<<8) & 0x00ff00ff00ff00ff
	v = (v | v<<4) & 0x0f0f0f0f0f0f0f0f
	// 1 in each byte whose nibble is 10 or more (nibble+6 carries into bit 4).
	letters := (v + 0x0606060606060606) >> 4 & 0x0101010101010101
	return v + 0x3030303030303030 + letters*('a'-'0'-10)
}

// unhex maps a lowercase hex digit to its value, and any other byte to 0xff.
var unhex = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range []byte("0123456789abcdef") {
		t[c] = byte(i)
	}
	return t
}()

// own reports whether id was made by this generator's Bridge.
func (g *idGen) own(id []byte) bool {
	return len(id) == idLen && string(id[:idPrefixLen]) == string(g.prefix[:])
}

// parse returns the sequence number of an ID for which own is true.
func (g *idGen) parse(id []byte) (uint64, bool) {
	if len(id) != idLen || id[idPrefixLen+4] != '-' {
		return 0, false
	}
	var seq uint64
	var bad byte // any digit's 0xff shows here
	for _, c := range id[idPrefixLen : idPrefixLen+4] {
		v := unhex[c]
		bad |= v
		seq = seq<<4 | uint64(v&0xf)
	}
	for _, c := range id[idPrefixLen+5 : idLen] {
		v := unhex[c]
		bad |= v
		seq = seq<<4 | uint64(v&0xf)
	}
	return seq, bad <= 0xf
}
