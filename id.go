package syncbridge

import (
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
	const digits = "0123456789abcdef"
	dst = append(dst, g.prefix[:]...)
	var b [17]byte
	j := len(b) - 1
	for i := 0; i < 16; i++ {
		if j == 4 {
			b[j] = '-'
			j--
		}
		b[j] = digits[seq&0xf]
		seq >>= 4
		j--
	}
	return append(dst, b[:]...)
}

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
	for i := idPrefixLen; i < idLen; i++ {
		c := id[i]
		if i == idPrefixLen+4 {
			continue
		}
		var v byte
		switch {
		case '0' <= c && c <= '9':
			v = c - '0'
		case 'a' <= c && c <= 'f':
			v = c - 'a' + 10
		default:
			return 0, false
		}
		seq = seq<<4 | uint64(v)
	}
	return seq, true
}
