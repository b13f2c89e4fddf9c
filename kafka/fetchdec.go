package kafka

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/segmentio/kafka-go/compress"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/fetch"

	"github.com/syncbridge/syncbridge"
)

// This file decodes fetch responses itself: kafka-go's decoder reads a
// response a few bytes at a time through io.ReadFull, copies every record
// into pooled pages and allocates per record, which made decoding the
// largest cost of a round trip. Here the response frame is read in one
// piece into a buffer of its own, and the records' keys, values and header
// values are sliced out of it (or out of a batch's decompressed bytes):
// the buffer is never reused, so the messages handed to handlers own their
// bytes, as they did when they were copied. A message kept by its handler
// keeps the whole buffer alive: past maxAliased bytes, each record is
// copied out instead, so that a kept message never holds more than that
// besides its own bytes.

// maxAliased is the largest buffer records are sliced out of.
const maxAliased = 64 << 10

// maxFetchFrame bounds the size of a fetch response frame: a larger size
// field is garbage, not a response.
const maxFetchFrame = 1 << 30

// rawFetch is a fetch request that reads and decodes its own response
// (kafka-go's RawExchanger): brokerConn.roundTrip sends it as any request
// and gets res back. One per fetch loop, reused.
type rawFetch struct {
	req      fetch.Request
	clientID string
	version  int16 // negotiated, set by Required
	corr     int32
	res      fetchResponse
}

func (f *rawFetch) ApiKey() protocol.ApiKey { return protocol.Fetch }

// Required records the negotiated version; the exchange is always raw.
func (f *rawFetch) Required(versions map[protocol.ApiKey]int16) bool {
	f.version = versions[protocol.Fetch]
	return true
}

// RawExchange writes the request on rw (the connection) and reads the
// response frame.
func (f *rawFetch) RawExchange(rw io.ReadWriter) (protocol.Message, error) {
	f.corr++
	if err := protocol.WriteRequest(rw, f.version, f.corr, f.clientID, &f.req); err != nil {
		return nil, err
	}
	var hdr [4]byte
	if _, err := io.ReadFull(rw, hdr[:]); err != nil {
		return nil, noEOF(err)
	}
	size := int32(binary.BigEndian.Uint32(hdr[:]))
	if size < 4 || size > maxFetchFrame {
		return nil, fmt.Errorf("fetch response of %d bytes", size)
	}
	frame := make([]byte, size)
	if _, err := io.ReadFull(rw, frame); err != nil {
		return nil, noEOF(err)
	}
	if id := int32(binary.BigEndian.Uint32(frame)); id != f.corr {
		return nil, fmt.Errorf("fetch response: correlation id mismatch (expected=%d, found=%d)", f.corr, id)
	}
	if err := f.res.decode(frame[4:], f.version); err != nil {
		return nil, err
	}
	f.res.frameSize = len(frame)
	return &f.res, nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// fetchResponse is a decoded fetch response (versions 0 to 11, the ones
// kafka-go negotiates). Its slices alias the response's frame.
type fetchResponse struct {
	frameSize  int // bytes of the frame the slices alias
	throttleMs int32
	errorCode  int16
	parts      []fetchPart // every partition of every topic, in order
}

func (r *fetchResponse) ApiKey() protocol.ApiKey { return protocol.Fetch }

// fetchPart is one partition of a fetch response.
type fetchPart struct {
	topic     []byte
	partition int32
	errorCode int16
	records   []byte // the record set: record batches, back to back
}

// decode decodes the body of a fetch response of version v (what follows
// the correlation id). Bytes after the last field are ignored.
func (r *fetchResponse) decode(b []byte, v int16) error {
	clear(r.parts)
	r.parts = r.parts[:0]
	r.throttleMs, r.errorCode = 0, 0
	d := wireReader{b: b}
	if v >= 1 {
		r.throttleMs = d.int32()
	}
	if v >= 7 {
		r.errorCode = d.int16()
		d.skip(4) // session id
	}
	for range d.count(6) {
		topic := d.str()
		for range d.count(14) {
			p := fetchPart{topic: topic}
			p.partition = d.int32()
			p.errorCode = d.int16()
			d.skip(8) // high watermark
			if v >= 4 {
				d.skip(8) // last stable offset
			}
			if v >= 5 {
				d.skip(8) // log start offset
			}
			if v >= 4 {
				// Aborted transactions: ignored, as kafka-go's reader
				// does (read uncommitted).
				n := d.count(16)
				d.skip(16 * n)
			}
			if v >= 11 {
				d.skip(4) // preferred read replica
			}
			p.records = d.bytes()
			if d.err != nil {
				return fmt.Errorf("fetch response: %w", d.err)
			}
			r.parts = append(r.parts, p)
		}
	}
	if d.err != nil {
		return fmt.Errorf("fetch response: %w", d.err)
	}
	return nil
}

func (d *wireReader) skip(n int) { d.take(n) }

// str reads a (nullable) string, aliasing b.
func (d *wireReader) str() []byte {
	n := int(d.int16())
	if n < 0 {
		return nil
	}
	return d.take(n)
}

// bytes reads nullable bytes, aliasing b: nil for null.
func (d *wireReader) bytes() []byte {
	n := int(d.int32())
	if d.err != nil || n < 0 {
		return nil
	}
	return d.take(n)
}

// Offsets in a record batch's header (v2), from the start of the batch.
const (
	batchLengthAt   = 8  // int32: the bytes after it
	batchMagicAt    = 16 // int8
	batchCRCAt      = 17 // uint32: CRC-32C of the bytes from attributes on
	batchAttrsAt    = 21 // int16
	batchLastDeltAt = 23 // int32: last offset delta
	batchFirstTSAt  = 27 // int64
	batchMaxTSAt    = 35 // int64
	batchCountAt    = 57 // int32: number of records
	batchRecordsAt  = 61 // records (compressed as a whole when the codec says so)
)

// Attribute bits of a record batch.
const (
	attrCodec     = 0x07
	attrLogAppend = 0x08
	attrControl   = 0x20
)

// decoder holds what outlives one call of decodeRecords within a fetch
// loop: the header keys seen lately, reused as strings instead of
// allocating one per header.
type decoder struct {
	keys [8]string
	next int
	// frame is the size of the buffer the record sets to decode alias
	// (the response frame): past maxAliased, records are copied out.
	frame int
}

// key returns b as a string, from the keys seen lately when it is one.
func (dc *decoder) key(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	for _, k := range dc.keys {
		if k == string(b) {
			return k
		}
	}
	k := string(b)
	dc.keys[dc.next] = k
	dc.next = (dc.next + 1) % len(dc.keys)
	return k
}

// decodeRecords appends the records of the record set rs (one partition
// of a fetch response) at or past offset to recs, and returns the offset
// after the last record seen (control records, and records below offset,
// included; the highest, should offsets go back), or offset if none; past
// a complete batch, the offset after the batch's last offset (records
// removed by compaction included). Keys, values and header values alias
// rs (or a batch's decompressed bytes), which nothing else writes or
// reuses, or are copied out of it (see maxAliased).
//
// A batch cut short at the end of rs (the broker sends whole batches up
// to its size limit, and may cut the last) ends the records. A decoding
// error ends them too: the records before it are returned without an
// error, the next fetch starts at the bad batch; with none, the error is
// returned. Batches of the message formats older than v2 are decoded by
// kafka-go.
func (dc *decoder) decodeRecords(topic string, partition int32, rs []byte, offset int64, recs []record) ([]record, int64, error) {
	recs, next, err := dc.decodeRecordSet(topic, partition, rs, offset, recs)
	if err != nil && len(recs) > 0 {
		// Deliver what was read; the next fetch starts after it.
		return recs, next, nil
	}
	return recs, next, err
}

// decodeRecordSet is decodeRecords, returning the error that ended the
// records even after some records.
func (dc *decoder) decodeRecordSet(topic string, partition int32, rs []byte, offset int64, recs []record) ([]record, int64, error) {
	next := offset
	var hdrs []syncbridge.Header // room for the headers of the records to come
	for len(rs) > batchMagicAt {
		if magic := rs[batchMagicAt]; magic != 2 {
			return legacyRecords(topic, partition, rs, offset, next, recs)
		}
		base := int64(binary.BigEndian.Uint64(rs))
		size := int64(int32(binary.BigEndian.Uint32(rs[batchLengthAt:])))
		if size > int64(len(rs)-batchLengthAt-4) {
			break // cut short: the rest comes with the next fetch
		}
		if size < batchRecordsAt-batchLengthAt-4 {
			return recs, next, fmt.Errorf("record batch at offset %d: length %d", base, size)
		}
		b := rs[:batchLengthAt+4+size]
		rs = rs[len(b):]
		if sum := crc32.Checksum(b[batchAttrsAt:], crc32c); sum != binary.BigEndian.Uint32(b[batchCRCAt:]) {
			return recs, next, fmt.Errorf("record batch at offset %d: CRC mismatch", base)
		}
		attrs := binary.BigEndian.Uint16(b[batchAttrsAt:])
		lastDelta := int32(binary.BigEndian.Uint32(b[batchLastDeltAt:]))
		firstTS := int64(binary.BigEndian.Uint64(b[batchFirstTSAt:]))
		maxTS := int64(binary.BigEndian.Uint64(b[batchMaxTSAt:]))
		n := int64(int32(binary.BigEndian.Uint32(b[batchCountAt:])))
		body := b[batchRecordsAt:]
		if n < 0 {
			return recs, next, fmt.Errorf("record batch at offset %d: %d records", base, n)
		}
		if codec := attrs & attrCodec; codec != 0 {
			var err error
			if body, err = decompress(compress.Compression(codec), body); err != nil {
				return recs, next, fmt.Errorf("record batch at offset %d: %w", base, err)
			}
		}
		copyOut := dc.frame > maxAliased
		if attrs&attrCodec != 0 {
			copyOut = len(body) > maxAliased
		}
		control := attrs&attrControl != 0
		logAppend := attrs&attrLogAppend != 0
		d := recordReader{b: body}
		for i := range n {
			d.varint() // record length
			d.skip(1)  // attributes
			tsDelta := d.varint()
			offDelta := d.varint()
			key := d.varbytes()
			value := d.varbytes()
			nh := d.varint()
			if d.err != nil {
				return recs, next, fmt.Errorf("record batch at offset %d: record %d: %w", base, i, d.err)
			}
			off := base + offDelta
			if off == math.MaxInt64 {
				// No offset after it: the next offset could not move on.
				return recs, next, fmt.Errorf("record batch at offset %d: record %d at offset %d", base, i, off)
			}
			if off < offset || control {
				for range max(nh, 0) {
					d.varbytes()
					d.varbytes()
					if d.err != nil {
						return recs, next, fmt.Errorf("record batch at offset %d: record %d: %w", base, i, d.err)
					}
				}
				if off >= next {
					next = off + 1
				}
				continue
			}
			msg := syncbridge.Message{Topic: topic, Partition: partition, Offset: off, Key: key, Value: value}
			ts := firstTS + tsDelta
			if logAppend {
				ts = maxTS // the broker's time, the same for every record
			}
			msg.Time = time.Unix(ts/1000, (ts%1000)*int64(time.Millisecond))
			if nh > 0 {
				if nh > int64(len(d.b))/2 {
					return recs, next, fmt.Errorf("record batch at offset %d: record %d: %d headers", base, i, nh)
				}
				if int64(cap(hdrs)-len(hdrs)) < nh {
					// Records of a batch tend to have as many headers
					// each: room for the rest of the batch's.
					hdrs = make([]syncbridge.Header, 0, min(nh*(n-i), int64(len(d.b))/2))
				}
				start := len(hdrs)
				for range nh {
					k := d.varbytes()
					v := d.varbytes()
					hdrs = append(hdrs, syncbridge.Header{Key: dc.key(k), Value: v})
				}
				if d.err != nil {
					return recs, next, fmt.Errorf("record batch at offset %d: record %d: %w", base, i, d.err)
				}
				msg.Headers = hdrs[start:len(hdrs):len(hdrs)]
			}
			if copyOut {
				ownBytes(&msg)
			}
			recs = append(recs, record{msg: msg, offset: off})
			// Offsets only grow in a well-formed batch; in a malformed
			// one, the next offset still never goes back.
			next = max(next, off+1)
		}
		if lastDelta >= 0 && base <= math.MaxInt64-int64(lastDelta)-1 {
			next = max(next, base+int64(lastDelta)+1)
		}
	}
	return recs, next, nil
}

// ownBytes copies the key, value and header values of m into one buffer
// of their own (nil stays nil, empty stays empty).
func ownBytes(m *syncbridge.Message) {
	n := len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += len(h.Value)
	}
	buf := make([]byte, 0, n)
	own := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		start := len(buf)
		buf = append(buf, b...)
		return buf[start:len(buf):len(buf)]
	}
	m.Key = own(m.Key)
	m.Value = own(m.Value)
	for i := range m.Headers {
		m.Headers[i].Value = own(m.Headers[i].Value)
	}
}

// legacyRecords decodes message sets v0 and v1 (brokers before 0.11, or
// topics still holding them) with kafka-go, after the v2 batches before
// them. kafka-go's decoder panics on some malformed message sets (a
// negative message size): that is an error here, and the records before
// it are kept.
func legacyRecords(topic string, partition int32, rs []byte, offset, next int64, recs []record) (out []record, outNext int64, err error) {
	defer func() {
		if p := recover(); p != nil {
			out, outNext, err = recs, next, fmt.Errorf("malformed message set (v0/v1): %v", p)
		}
	}()
	var size [4]byte
	binary.BigEndian.PutUint32(size[:], uint32(len(rs)))
	var set protocol.RecordSet
	if _, err := set.ReadFrom(io.MultiReader(bytes.NewReader(size[:]), bytes.NewReader(rs))); err != nil {
		return recs, next, err
	}
	out, n, err := readRecords(topic, partition, set.Records, offset, recs)
	return out, max(next, n), err
}

// recordReader reads the fields of records (v2) off b; the first error
// sticks.
type recordReader struct {
	b   []byte
	err error
}

var errBadRecord = errors.New("record truncated or malformed")

func (d *recordReader) skip(n int) {
	if d.err != nil {
		return
	}
	if n > len(d.b) {
		d.err = errBadRecord
		return
	}
	d.b = d.b[n:]
}

func (d *recordReader) varint() int64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errBadRecord
		return 0
	}
	d.b = d.b[n:]
	return x
}

// varbytes reads a length-prefixed byte string, aliasing b with its
// capacity cut to its length (an append never writes over the next
// field); nil for a negative length.
func (d *recordReader) varbytes() []byte {
	n := d.varint()
	if d.err != nil || n < 0 {
		return nil
	}
	if n > int64(len(d.b)) {
		d.err = errBadRecord
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

// decompress returns the decompressed records of a batch, in a buffer of
// their own.
func decompress(c compress.Compression, body []byte) ([]byte, error) {
	if c == compress.Snappy {
		return unsnappy(body)
	}
	codec := c.Codec()
	if codec == nil {
		return nil, fmt.Errorf("unsupported compression codec (%d)", c)
	}
	r := codec.NewReader(bytes.NewReader(body))
	defer r.Close()
	buf := bytes.NewBuffer(make([]byte, 0, 4*len(body)+64))
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, fmt.Errorf("%s: %w", codec.Name(), err)
	}
	return buf.Bytes(), nil
}

// xerialMagic starts the xerial framing of snappy (the Java client's):
// 8 bytes of magic, version and compatible version (int32 each), then
// blocks, each with its length (int32).
var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

// unsnappy decompresses snappy, xerial-framed or a single block, as
// kafka-go's codec reads it; but where kafka-go allocates the length a
// frame or a block claims before looking (4 bytes can ask for 4 GiB),
// frames must lie within b and blocks claim no more than snappy can
// expand to.
func unsnappy(b []byte) ([]byte, error) {
	if len(b) < 16 || !bytes.Equal(b[:8], xerialMagic) {
		return appendSnappy(nil, b)
	}
	b = b[16:]
	var out []byte
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errors.New("snappy: truncated xerial frame")
		}
		n := int64(binary.BigEndian.Uint32(b))
		b = b[4:]
		if n > int64(len(b)) {
			return nil, fmt.Errorf("snappy: xerial frame of %d bytes in %d", n, len(b))
		}
		var err error
		if out, err = appendSnappy(out, b[:n]); err != nil {
			return nil, err
		}
		b = b[n:]
	}
	return out, nil
}

// appendSnappy appends the decompressed snappy block to dst.
func appendSnappy(dst, block []byte) ([]byte, error) {
	n, err := snappy.DecodedLen(block)
	if err != nil {
		return nil, fmt.Errorf("snappy: %w", err)
	}
	// A snappy element of 2 bytes at least yields at most 64 bytes.
	if n > 32*len(block)+64 {
		return nil, fmt.Errorf("snappy: block of %d bytes claims %d", len(block), n)
	}
	dst = slices.Grow(dst, n)
	out, err := snappy.Decode(dst[len(dst):len(dst)+n], block)
	if err != nil {
		return nil, fmt.Errorf("snappy: %w", err)
	}
	return dst[:len(dst)+len(out)], nil
}
