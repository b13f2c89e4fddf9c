package kafka

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"slices"

	"github.com/segmentio/kafka-go/compress"
)

// This file encodes record batches (format v2, the only one Kafka 4 reads)
// for produce requests. kafka-go's own encoder always writes producer ID
// -1, so the idempotent producer encodes its batches itself and sends them
// with kafka-go's raw produce request.

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// appendBatch appends b as the records field of a produce request: the
// batch's length (int32), then the batch.
func appendBatch(dst []byte, b *batch, codec Codec) ([]byte, error) {
	if codec == 0 {
		n := 4 + batchRecordsAt
		for i, r := range b.recs {
			n += recordLen(i, r)
		}
		dst = slices.Grow(dst, n)
	}
	start := len(dst)
	dst = binary.BigEndian.AppendUint32(dst, 0)          // length of what follows, set below
	dst = binary.BigEndian.AppendUint64(dst, 0)          // base offset
	dst = binary.BigEndian.AppendUint32(dst, 0)          // batch length, set below
	dst = binary.BigEndian.AppendUint32(dst, 0xffffffff) // partition leader epoch: -1
	dst = append(dst, 2)                                 // magic
	crcAt := len(dst)
	dst = binary.BigEndian.AppendUint32(dst, 0) // CRC, set below
	attrsAt := len(dst)
	dst = binary.BigEndian.AppendUint16(dst, uint16(codec)) // attributes: the codec
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b.recs)-1))
	dst = binary.BigEndian.AppendUint64(dst, uint64(b.ts)) // first timestamp
	dst = binary.BigEndian.AppendUint64(dst, uint64(b.ts)) // max timestamp
	dst = binary.BigEndian.AppendUint64(dst, uint64(b.pid))
	dst = binary.BigEndian.AppendUint16(dst, uint16(b.epoch))
	dst = binary.BigEndian.AppendUint32(dst, uint32(b.baseSeq))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b.recs)))
	if codec == 0 {
		for i, r := range b.recs {
			dst = appendRecord(dst, i, r)
		}
	} else {
		var raw []byte
		for i, r := range b.recs {
			raw = appendRecord(raw, i, r)
		}
		buf := bytes.NewBuffer(dst)
		w := compress.Compression(codec).Codec().NewWriter(buf)
		if _, err := w.Write(raw); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		dst = buf.Bytes()
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	binary.BigEndian.PutUint32(dst[start+4+8:], uint32(len(dst)-start-4-8-4))
	binary.BigEndian.PutUint32(dst[crcAt:], crc32.Checksum(dst[attrsAt:], crc32c))
	return dst, nil
}

// recordLen is the encoded size of record r, the i-th of its batch.
func recordLen(i int, r *pending) int {
	n := 1 + 1 + varintLen(int64(i)) + len(r.tail)
	return varintLen(int64(n)) + n
}

// appendRecord appends record r, the i-th of its batch. Every record of a
// batch has the batch's timestamp: its timestamp delta is 0.
func appendRecord(dst []byte, i int, r *pending) []byte {
	n := 1 + 1 + varintLen(int64(i)) + len(r.tail)
	dst = binary.AppendVarint(dst, int64(n))
	dst = append(dst, 0)                     // attributes
	dst = binary.AppendVarint(dst, 0)        // timestamp delta
	dst = binary.AppendVarint(dst, int64(i)) // offset delta
	return append(dst, r.tail...)            // key, value, headers
}

func appendVarBytes(dst, b []byte) []byte {
	if b == nil {
		return binary.AppendVarint(dst, -1)
	}
	dst = binary.AppendVarint(dst, int64(len(b)))
	return append(dst, b...)
}

// bytesLen is the encoded size of a nullable byte string.
func bytesLen(b []byte) int {
	if b == nil {
		return 1
	}
	return varintLen(int64(len(b))) + len(b)
}

// varintLen is the size of x as a zigzag varint.
func varintLen(x int64) int {
	ux := uint64(x<<1) ^ uint64(x>>63)
	n := 1
	for ux >= 0x80 {
		ux >>= 7
		n++
	}
	return n
}
