package kafka

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go/compress"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/fetch"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/syncbridge/syncbridge"
)

// The fetch response decoder (fetchdec.go) against kafka-go's, on record
// sets written by three encoders: ours (batch.go), kafka-go's and
// franz-go's (kmsg), with every codec.

var codecs = []Codec{NoCompression, Gzip, Snappy, LZ4, Zstd}

// ourBatch encodes recs with the producer's encoder, at base offset base.
func ourBatch(t testing.TB, base int64, codec Codec, recs ...*pending) []byte {
	t.Helper()
	b, err := appendBatch(nil, &batch{recs: recs, pid: -1, epoch: -1, baseSeq: -1, ts: 1_700_000_000_123}, codec)
	if err != nil {
		t.Fatal(err)
	}
	b = b[4:] // the length of the produce request's records field
	binary.BigEndian.PutUint64(b, uint64(base))
	return b
}

func msgPending(key, value string, headers ...string) *pending {
	m := syncbridge.Message{Topic: "t"}
	if key != "" {
		m.Key = []byte(key)
	}
	if value != "-" {
		m.Value = []byte(value)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		h := syncbridge.Header{Key: headers[i]}
		if headers[i+1] != "-" {
			h.Value = []byte(headers[i+1])
		}
		m.Headers = append(m.Headers, h)
	}
	return newPending(&m)
}

// kafkaGoSet encodes records with kafka-go (version 2, or 1 for the old
// message format), at base offset base.
func kafkaGoSet(t testing.TB, version int8, base int64, c compress.Compression, control bool, recs ...protocol.Record) []byte {
	t.Helper()
	attrs := protocol.Attributes(c)
	if control {
		attrs |= protocol.Control
	}
	rs := protocol.RecordSet{Version: version, Attributes: attrs, Records: protocol.NewRecordReader(recs...)}
	var buf bytes.Buffer
	if _, err := rs.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()[4:]
	if version == 2 {
		binary.BigEndian.PutUint64(b, uint64(base))
	} else {
		// Message sets v0/v1: each message carries its offset.
		for off := 0; off+12 <= len(b); {
			binary.BigEndian.PutUint64(b[off:], uint64(base))
			base++
			off += 12 + int(binary.BigEndian.Uint32(b[off+8:]))
		}
	}
	return b
}

func kgRec(key, value string, ms int64, headers ...protocol.Header) protocol.Record {
	r := protocol.Record{Time: time.UnixMilli(ms), Headers: headers}
	if key != "" {
		r.Key = protocol.NewBytes([]byte(key))
	}
	if value != "-" {
		r.Value = protocol.NewBytes([]byte(value))
	}
	return r
}

// franzBatch encodes records with franz-go's kmsg (compressed with
// kafka-go's codecs, as kmsg leaves compression to its caller).
func franzBatch(t testing.TB, base int64, c compress.Compression, attrs int16, recs ...kmsg.Record) []byte {
	t.Helper()
	var raw []byte
	for i := range recs {
		recs[i].OffsetDelta = int32(i)
		recs[i].Length = int32(len(recs[i].AppendTo(nil)) - varintLen(int64(recs[i].Length)))
		raw = recs[i].AppendTo(raw)
	}
	if c != 0 {
		var buf bytes.Buffer
		w := c.Codec().NewWriter(&buf)
		if _, err := w.Write(raw); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		raw = buf.Bytes()
	}
	rb := kmsg.RecordBatch{
		FirstOffset: base, PartitionLeaderEpoch: -1, Magic: 2,
		Attributes: attrs | int16(c), LastOffsetDelta: int32(len(recs) - 1),
		FirstTimestamp: 1_700_000_000_000, MaxTimestamp: 1_700_000_009_999,
		ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1,
		NumRecords: int32(len(recs)), Records: raw,
	}
	b := rb.AppendTo(nil)
	binary.BigEndian.PutUint32(b[batchLengthAt:], uint32(len(b)-batchLengthAt-4))
	binary.BigEndian.PutUint32(b[batchCRCAt:], crc32.Checksum(b[batchAttrsAt:], crc32c))
	return b
}

func fzRec(key, value string, tsDelta int64, headers ...kmsg.Header) kmsg.Record {
	r := kmsg.Record{TimestampDelta64: tsDelta, Headers: headers}
	if key != "" {
		r.Key = []byte(key)
	}
	if value != "-" {
		r.Value = []byte(value)
	}
	return r
}

// controlRecord is a transaction marker's record: key version 0, type
// (0 abort, 1 commit); value version, coordinator epoch.
func controlRecord(commit bool) kmsg.Record {
	typ := byte(0)
	if commit {
		typ = 1
	}
	return kmsg.Record{Key: []byte{0, 0, 0, typ}, Value: []byte{0, 0, 0, 0, 0, 7}}
}

// recordSets are record sets (one partition's bytes in a fetch response)
// with the offset a fetch would ask for.
type recordSet struct {
	name   string
	b      []byte
	offset int64
}

func recordSets(t testing.TB) []recordSet {
	var sets []recordSet
	add := func(name string, offset int64, parts ...[]byte) {
		sets = append(sets, recordSet{name, bytes.Join(parts, nil), offset})
	}
	for _, c := range codecs {
		cn := compress.Compression(c).String()
		add("ours/"+cn, 0,
			ourBatch(t, 0, c, msgPending("k", "v", "kafka_correlationId", "abc", "h2", "-", "h3", "")),
			ourBatch(t, 1, c, msgPending("", "second"), msgPending("", "", "x", "y"), msgPending("key", "-")))
		add("ours-skip/"+cn, 2,
			ourBatch(t, 0, c, msgPending("a", "1"), msgPending("b", "2"), msgPending("c", "3"), msgPending("d", "4")))
		add("kafka-go/"+cn, 5, kafkaGoSet(t, 2, 5, compress.Compression(c), false,
			kgRec("k", "v", 1_700_000_000_001, protocol.Header{Key: "a", Value: []byte("b")}, protocol.Header{Key: "", Value: nil}),
			kgRec("", "-", 1_700_000_000_002),
			kgRec("kk", "", 1_699_000_000_000, protocol.Header{Key: "e", Value: []byte{}})))
		add("franz-go/"+cn, 10,
			franzBatch(t, 10, compress.Compression(c), 0,
				fzRec("k1", "v1", 0, kmsg.Header{Key: "h", Value: []byte("1")}),
				fzRec("", "v2", 5),
				fzRec("k3", "-", 9999, kmsg.Header{Key: "n", Value: nil}, kmsg.Header{Key: "e", Value: []byte{}})),
			franzBatch(t, 13, compress.Compression(c), attrControl, controlRecord(true)),
			franzBatch(t, 14, compress.Compression(c), 0, fzRec("after", "control", 0)))
		add("franz-go-partial-tail/"+cn, 0,
			franzBatch(t, 0, compress.Compression(c), 0, fzRec("a", "1", 0), fzRec("b", "2", 1)),
			franzBatch(t, 2, compress.Compression(c), 0, fzRec("c", "3", 0))[:40])
	}
	add("empty", 0)
	add("control-only", 0, franzBatch(t, 0, 0, attrControl, controlRecord(false)))
	add("below-offset", 100, ourBatch(t, 50, 0, msgPending("a", "1"), msgPending("b", "2")))
	add("log-append-time", 0, franzBatch(t, 0, 0, attrLogAppend, fzRec("a", "1", 3), fzRec("b", "2", 4)))
	add("tail-shorter-than-header", 0, ourBatch(t, 0, 0, msgPending("a", "1")), []byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0})
	add("v1", 0, kafkaGoSet(t, 1, 0, 0, false, kgRec("k", "v", 1_700_000_000_001), kgRec("", "w", 1_700_000_000_002)))
	add("v1-gzip", 3, kafkaGoSet(t, 1, 3, compress.Gzip, false, kgRec("k", "v", 1_700_000_000_001)))
	add("v2-then-v1", 0, ourBatch(t, 0, 0, msgPending("a", "1")), kafkaGoSet(t, 1, 1, 0, false, kgRec("k", "v", 1_700_000_000_001)))
	return sets
}

// kafkaGoRecords decodes rs with kafka-go's decoder and readRecords, the
// decoding the fetch loop used before.
func kafkaGoRecords(rs []byte, offset int64) (recs []record, next int64, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("kafka-go panicked: %v", p)
		}
	}()
	var size [4]byte
	binary.BigEndian.PutUint32(size[:], uint32(len(rs)))
	var set protocol.RecordSet
	if len(rs) > 0 {
		if _, err := set.ReadFrom(bytes.NewReader(append(size[:], rs...))); err != nil {
			return nil, offset, err
		}
	}
	return readRecords("t", 3, set.Records, offset, nil)
}

// batchEnds returns the offset after the last complete v2 batch of rs, or
// math.MinInt64 for none: the decoder moves the next offset past a batch whose last records
// compaction removed.
func batchEnds(rs []byte) int64 {
	end := int64(math.MinInt64)
	for len(rs) > batchMagicAt && rs[batchMagicAt] == 2 {
		size := int64(int32(binary.BigEndian.Uint32(rs[batchLengthAt:])))
		if size > int64(len(rs)-batchLengthAt-4) || size < batchRecordsAt-batchLengthAt-4 {
			break
		}
		base := int64(binary.BigEndian.Uint64(rs))
		if d := int32(binary.BigEndian.Uint32(rs[batchLastDeltAt:])); d >= 0 {
			end = max(end, base+int64(d)+1)
		}
		rs = rs[batchLengthAt+4+size:]
	}
	return end
}

func sameRecord(a, b record, timeToo bool) bool {
	ma, mb := a.msg, b.msg
	if a.offset != b.offset || ma.Offset != mb.Offset || ma.Topic != mb.Topic || ma.Partition != mb.Partition ||
		(ma.Key == nil) != (mb.Key == nil) || !bytes.Equal(ma.Key, mb.Key) ||
		(ma.Value == nil) != (mb.Value == nil) || !bytes.Equal(ma.Value, mb.Value) ||
		len(ma.Headers) != len(mb.Headers) || (timeToo && !ma.Time.Equal(mb.Time)) {
		return false
	}
	for i := range ma.Headers {
		ha, hb := ma.Headers[i], mb.Headers[i]
		if ha.Key != hb.Key || (ha.Value == nil) != (hb.Value == nil) || !bytes.Equal(ha.Value, hb.Value) {
			return false
		}
	}
	return true
}

// checkRecords decodes rs with both decoders and compares. Where kafka-go
// decodes without an error: when ours met no error either, the records
// are the same and so is the next offset (or past it, to the end of the
// last complete batch); when ours stopped at an error, its records are a
// prefix of kafka-go's (kafka-go skips a batch's records after a bad one
// and goes on with the next batch: records lost). Whatever the bytes: no
// panic, keys and values have no room to append into their neighbours,
// and every record lies in [offset, next).
func checkRecords(t *testing.T, rs []byte, offset int64, strict bool) {
	t.Helper()
	var dc decoder
	ours, next, stop := dc.decodeRecordSet("t", 3, rs, offset, nil)
	for _, r := range ours {
		m := r.msg
		if cap(m.Key) != len(m.Key) || cap(m.Value) != len(m.Value) {
			t.Fatalf("record %d: key or value with spare capacity", r.offset)
		}
		for _, h := range m.Headers {
			if cap(h.Value) != len(h.Value) {
				t.Fatalf("record %d: header value with spare capacity", r.offset)
			}
		}
		if cap(m.Headers) != len(m.Headers) {
			t.Fatalf("record %d: headers with spare capacity", r.offset)
		}
		if r.offset < offset || r.offset >= next {
			t.Fatalf("record at %d outside [%d, %d)", r.offset, offset, next)
		}
	}
	// From a frame larger than maxAliased, the records are copied out: the
	// same records, which no longer change with the frame.
	frame := slices.Clone(rs)
	big := decoder{frame: maxAliased + 1}
	copied, copiedNext, copiedStop := big.decodeRecordSet("t", 3, frame, offset, nil)
	for i := range frame {
		frame[i] = 0xaa
	}
	if len(copied) != len(ours) || copiedNext != next || (copiedStop == nil) != (stop == nil) {
		t.Fatalf("copied out: %d records, next %d, err %v; aliased: %d, %d, %v", len(copied), copiedNext, copiedStop, len(ours), next, stop)
	}
	for i := range ours {
		if !sameRecord(copied[i], ours[i], true) {
			t.Fatalf("record %d: copied out %+v, aliased %+v", i, copied[i].msg, ours[i].msg)
		}
	}
	// decodeRecords is decodeRecordSet with the error dropped once some
	// records were read.
	got, gotNext, err := dc.decodeRecords("t", 3, rs, offset, nil)
	if len(got) != len(ours) || gotNext != next || (err == nil) != (stop == nil || len(ours) > 0) {
		t.Fatalf("decodeRecords: %d records, next %d, err %v; decodeRecordSet: %d, %d, %v", len(got), gotNext, err, len(ours), next, stop)
	}
	want, wantNext, kerr := kafkaGoRecords(rs, offset)
	if kerr != nil {
		if strict {
			t.Fatalf("kafka-go: %v", kerr)
		}
		return
	}
	logAppend := false
	for b := rs; len(b) > batchAttrsAt+2 && b[batchMagicAt] == 2; {
		logAppend = logAppend || binary.BigEndian.Uint16(b[batchAttrsAt:])&attrLogAppend != 0
		size := int64(int32(binary.BigEndian.Uint32(b[batchLengthAt:])))
		if size < 0 || size > int64(len(b)-batchLengthAt-4) {
			break
		}
		b = b[batchLengthAt+4+size:]
	}
	if stop != nil {
		if strict {
			t.Fatalf("ours: %v", stop)
		}
		if len(ours) > len(want) {
			t.Fatalf("ours stopped at %v with %d records, kafka-go read %d", stop, len(ours), len(want))
		}
		for i := range ours {
			if !sameRecord(ours[i], want[i], !logAppend) {
				t.Fatalf("record %d: ours %+v, kafka-go %+v", i, ours[i].msg, want[i].msg)
			}
		}
		return
	}
	if len(ours) != len(want) {
		t.Fatalf("ours %d records, kafka-go %d", len(ours), len(want))
	}
	for i := range ours {
		if !sameRecord(ours[i], want[i], !logAppend) {
			t.Fatalf("record %d: ours %+v, kafka-go %+v", i, ours[i].msg, want[i].msg)
		}
	}
	// kafka-go's next offset is the last delivered record's plus one, even
	// when offsets go back (malformed); ours never goes back.
	want1 := max(wantNext, batchEnds(rs))
	for _, r := range want {
		want1 = max(want1, r.offset+1)
	}
	if next < want1 || (strict && next != want1) {
		t.Fatalf("next offset: ours %d, want %d (kafka-go %d, end of the last batch %d)", next, want1, wantNext, batchEnds(rs))
	}
}

func TestDecodeRecordsLikeKafkaGo(t *testing.T) {
	for _, s := range recordSets(t) {
		t.Run(s.name, func(t *testing.T) {
			checkRecords(t, s.b, s.offset, true)
		})
	}
}

// What the decoder reads, spelled out, beyond agreeing with kafka-go.
func TestDecodeRecords(t *testing.T) {
	var dc decoder
	rs := slices.Concat(
		franzBatch(t, 10, 0, 0,
			fzRec("k1", "v1", 0, kmsg.Header{Key: "h", Value: []byte("1")}),
			fzRec("", "v2", 5),
			fzRec("k3", "-", 9999, kmsg.Header{Key: "n", Value: nil}, kmsg.Header{Key: "e", Value: []byte{}})),
		franzBatch(t, 13, compress.Zstd, attrControl, controlRecord(true)),
		franzBatch(t, 20, compress.Zstd, attrLogAppend, fzRec("after", "control", 7)),
	)
	recs, next, err := dc.decodeRecords("t", 3, rs, 11, nil)
	if err != nil {
		t.Fatal(err)
	}
	if next != 21 {
		t.Errorf("next = %d, want 21", next)
	}
	var got []string
	for _, r := range recs {
		m := r.msg
		got = append(got, fmt.Sprintf("%d %s/%d@%d key=%q(nil %v) value=%q(nil %v) %d headers=%v",
			r.offset, m.Topic, m.Partition, m.Offset, m.Key, m.Key == nil, m.Value, m.Value == nil, m.Time.UnixMilli(), m.Headers))
	}
	want := []string{
		`11 t/3@11 key=""(nil true) value="v2"(nil false) 1700000000005 headers=[]`,
		`12 t/3@12 key="k3"(nil false) value=""(nil true) 1700000009999 headers=[{n []} {e []}]`,
		`20 t/3@20 key="after"(nil false) value="control"(nil false) 1700000009999 headers=[]`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("records:\n%s\nwant:\n%s", got, want)
	}
	if recs[1].msg.Headers[0].Value != nil || recs[1].msg.Headers[1].Value == nil {
		t.Errorf("header values: null must stay nil and empty must not: %#v", recs[1].msg.Headers)
	}

	// A CRC mismatch after a good batch: the good one is delivered, the
	// next fetch starts at the bad one, which is then an error.
	good := ourBatch(t, 0, 0, msgPending("a", "1"))
	bad := ourBatch(t, 1, 0, msgPending("b", "2"))
	bad[len(bad)-1] ^= 1
	recs, next, err = dc.decodeRecords("t", 0, slices.Concat(good, bad), 0, nil)
	if err != nil || len(recs) != 1 || next != 1 {
		t.Errorf("good then bad batch: %d records, next %d, err %v; want 1, 1, nil", len(recs), next, err)
	}
	if recs, next, err = dc.decodeRecords("t", 0, bad, 1, nil); err == nil || len(recs) != 0 || next != 1 {
		t.Errorf("bad batch: %d records, next %d, err %v; want 0, 1, an error", len(recs), next, err)
	}
	// Unknown codec.
	b := ourBatch(t, 0, 0, msgPending("a", "1"))
	b[batchAttrsAt+1] |= 7
	binary.BigEndian.PutUint32(b[batchCRCAt:], crc32.Checksum(b[batchAttrsAt:], crc32c))
	if _, _, err := dc.decodeRecords("t", 0, b, 0, nil); err == nil {
		t.Error("codec 7: no error")
	}
}

// Records own their bytes: decoding again (the next fetch) leaves the
// records of the last one as they were.
func TestDecodedRecordsOwnTheirBytes(t *testing.T) {
	var dc decoder
	rs := ourBatch(t, 0, 0, msgPending("key", "value", "kafka_correlationId", "id"))
	frame := slices.Clone(rs)
	recs, _, err := dc.decodeRecords("t", 0, frame, 0, nil)
	if err != nil || len(recs) != 1 {
		t.Fatal(len(recs), err)
	}
	m := recs[0].msg
	m.Key = append(m.Key, "-appended"...)
	if _, _, err := dc.decodeRecords("t", 0, frame, 0, nil); err != nil {
		t.Fatalf("an append to a key wrote into the frame: %v", err)
	}
	if string(m.Value) != "value" || string(m.Headers[0].Value) != "id" {
		t.Errorf("value %q, header %q", m.Value, m.Headers[0].Value)
	}
}

// FuzzDecodeRecords feeds arbitrary bytes, as one partition's record set,
// to both decoders (see checkRecords). Mutated batches mostly fail their
// CRC: with fixCRC set, the CRC of every batch is made right first, so
// that the fuzzer gets past it into the records.
func FuzzDecodeRecords(f *testing.F) {
	for _, s := range recordSets(f) {
		f.Add(s.b, s.offset, false)
		f.Add(s.b, s.offset, true)
	}
	f.Add([]byte{0, 0, 0, 0}, int64(0), false)
	f.Fuzz(func(t *testing.T, b []byte, offset int64, fixCRC bool) {
		if fixCRC {
			b = slices.Clone(b)
			for rs := b; len(rs) > batchRecordsAt && rs[batchMagicAt] == 2; {
				size := int64(int32(binary.BigEndian.Uint32(rs[batchLengthAt:])))
				if size < batchRecordsAt-batchLengthAt-4 || size > int64(len(rs)-batchLengthAt-4) {
					break
				}
				binary.BigEndian.PutUint32(rs[batchCRCAt:], crc32.Checksum(rs[batchAttrsAt:batchLengthAt+4+size], crc32c))
				rs = rs[batchLengthAt+4+size:]
			}
		}
		if !kafkaGoSafe(b) {
			var dc decoder
			dc.decodeRecords("t", 3, b, offset, nil)
			return
		}
		checkRecords(t, b, offset, false)
	})
}

// fetchFrames are fetch response bodies (after the correlation id) of
// every version, written by kafka-go and by franz-go, with their version.
type fetchFrame struct {
	b []byte
	v int16
}

func fetchFrames(t testing.TB) []fetchFrame {
	var frames []fetchFrame
	sets := recordSets(t)
	for v := int16(0); v <= 11; v++ {
		// kafka-go, its own records.
		set := func(recs ...protocol.Record) protocol.RecordSet {
			return protocol.RecordSet{Version: 2, Records: protocol.NewRecordReader(recs...)}
		}
		res := &fetch.Response{ThrottleTimeMs: 7, ErrorCode: 0, Topics: []fetch.ResponseTopic{
			{Topic: "t", Partitions: []fetch.ResponsePartition{
				{Partition: 0, HighWatermark: 9, AbortedTransactions: []fetch.ResponseTransaction{{ProducerID: 1, FirstOffset: 2}},
					RecordSet: set(kgRec("k", "v", 1_700_000_000_000), kgRec("", "w", 1_700_000_000_001, protocol.Header{Key: "h", Value: []byte("x")}))},
				{Partition: 1, ErrorCode: 6, RecordSet: set(kgRec("e", "-", 1_700_000_000_000))},
			}},
			{Topic: "other", Partitions: []fetch.ResponsePartition{{Partition: 2, RecordSet: set(kgRec("o", "o", 1_700_000_000_000))}}},
		}}
		var buf bytes.Buffer
		if err := protocol.WriteResponse(&buf, v, 1, res); err != nil {
			t.Fatal(err)
		}
		frames = append(frames, fetchFrame{buf.Bytes()[8:], v})
		// franz-go, with our record sets.
		kr := kmsg.NewPtrFetchResponse()
		kr.Version = v
		kr.ThrottleMillis = 3
		kt := kmsg.NewFetchResponseTopic()
		kt.Topic = "t"
		for i, s := range sets[:min(len(sets), 6)] {
			kp := kmsg.NewFetchResponseTopicPartition()
			kp.Partition = int32(i)
			kp.RecordBatches = s.b
			kp.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{{ProducerID: 5, FirstOffset: 6}}
			kt.Partitions = append(kt.Partitions, kp)
		}
		kr.Topics = append(kr.Topics, kt)
		frames = append(frames, fetchFrame{kr.AppendTo(nil), v})
	}
	return frames
}

// The response's fields, against kafka-go's decoder.
func TestDecodeFetchResponseLikeKafkaGo(t *testing.T) {
	for i, fr := range fetchFrames(t) {
		t.Run(fmt.Sprintf("%d-v%d", i, fr.v), func(t *testing.T) {
			checkFetchResponse(t, fr.b, fr.v, true)
		})
	}
}

func checkFetchResponse(t *testing.T, b []byte, v int16, strict bool) {
	t.Helper()
	var res fetchResponse
	err := res.decode(b, v)
	var dc decoder
	for _, p := range res.parts {
		dc.decodeRecords(string(p.topic), p.partition, p.records, 0, nil)
	}
	if err != nil {
		if strict {
			t.Fatalf("ours: %v", err)
		}
		return
	}
	// Where ours decoded the response, its array lengths fit in the bytes:
	// kafka-go allocates what they claim.
	for _, p := range res.parts {
		if !kafkaGoSafe(p.records) {
			return
		}
	}
	// kafka-go's decoder reads the whole frame, header included.
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(b)+4))
	frame = binary.BigEndian.AppendUint32(frame, 1)
	frame = append(frame, b...)
	var kres protocol.Message
	kerr := func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("kafka-go panicked: %v", p)
			}
		}()
		_, kres, err = protocol.ReadResponse(bytes.NewReader(frame), protocol.Fetch, v)
		return err
	}()
	if kerr != nil {
		if strict {
			t.Fatalf("kafka-go: %v", kerr)
		}
		return
	}
	kr := kres.(*fetch.Response)
	if res.throttleMs != kr.ThrottleTimeMs || res.errorCode != kr.ErrorCode {
		t.Fatalf("throttle %d, error %d; kafka-go %d, %d", res.throttleMs, res.errorCode, kr.ThrottleTimeMs, kr.ErrorCode)
	}
	i := 0
	for _, kt := range kr.Topics {
		for _, kp := range kt.Partitions {
			if i >= len(res.parts) {
				t.Fatalf("ours %d partitions, kafka-go more", len(res.parts))
			}
			p := res.parts[i]
			if string(p.topic) != kt.Topic || p.partition != kp.Partition || p.errorCode != kp.ErrorCode {
				t.Fatalf("partition %d: %s/%d error %d; kafka-go %s/%d error %d", i, p.topic, p.partition, p.errorCode, kt.Topic, kp.Partition, kp.ErrorCode)
			}
			if kp.RecordSet.Records != nil {
				want, _, kerr := readRecords(kt.Topic, kp.Partition, kp.RecordSet.Records, 0, nil)
				got, _, err := dc.decodeRecords(string(p.topic), p.partition, p.records, 0, nil)
				if kerr == nil && err == nil && strict {
					if len(got) != len(want) {
						t.Fatalf("partition %d: %d records, kafka-go %d", i, len(got), len(want))
					}
					for j := range got {
						if !sameRecord(got[j], want[j], true) {
							t.Fatalf("partition %d record %d: %+v; kafka-go %+v", i, j, got[j].msg, want[j].msg)
						}
					}
				}
			}
			i++
		}
	}
	if i != len(res.parts) {
		t.Fatalf("ours %d partitions, kafka-go %d", len(res.parts), i)
	}
}

// FuzzDecodeFetchResponse feeds arbitrary bytes, as a fetch response of
// each version, to the decoder: an error or partitions, never a panic, and
// the same fields as kafka-go's decoder where both decode.
func FuzzDecodeFetchResponse(f *testing.F) {
	for _, fr := range fetchFrames(f) {
		f.Add(fr.b, fr.v)
	}
	f.Fuzz(func(t *testing.T, b []byte, v int16) {
		if v < 0 || v > 11 {
			v &= 7
		}
		checkFetchResponse(t, b, v, false)
	})
}

// kafkaGoSafe reports whether kafka-go can decode the record set rs
// without allocating what garbage lengths claim: kafka-go allocates as
// many records as a batch header says, and as many headers, and as long
// header keys and values, as a record says, before it reads them (a few
// bytes can ask for terabytes, which no recover catches). It walks the v2
// batches of rs as kafka-go reads them.
func kafkaGoSafe(rs []byte) bool {
	for len(rs) > batchMagicAt && rs[batchMagicAt] == 2 {
		size := int64(int32(binary.BigEndian.Uint32(rs[batchLengthAt:])))
		if size > int64(len(rs)-batchLengthAt-4) {
			return true // kafka-go stops at a cut batch
		}
		if size < batchRecordsAt-batchLengthAt-4 {
			return size >= 0 && len(rs) < batchRecordsAt // it fails reading the header
		}
		b := rs[:batchLengthAt+4+size]
		rs = rs[len(b):]
		n := int64(int32(binary.BigEndian.Uint32(b[batchCountAt:])))
		if n < 0 || n > int64(len(b)) {
			return false
		}
		body := b[batchRecordsAt:]
		if c := binary.BigEndian.Uint16(b[batchAttrsAt:]) & attrCodec; c != 0 {
			var err error
			if body, err = decompress(compress.Compression(c), body); err != nil {
				// kafka-go's snappy allocates the length a frame claims
				// before it reads it; ours looks first.
				return false
			}
		}
		d := kgVarReader{b: body}
		for range n {
			d.varint()
			d.skip(1)
			d.varint()
			d.varint()
			if k := d.varint(); k > 0 {
				d.skip(k)
			}
			if v := d.varint(); v > 0 {
				d.skip(v)
			}
			nh := d.varint()
			if nh > int64(len(d.b)) {
				return false
			}
			for range max(nh, 0) {
				if k := d.varint(); k > int64(len(d.b)) {
					return false
				} else if k > 0 {
					d.skip(k)
				}
				if v := d.varint(); v > int64(len(d.b)) {
					return false
				} else if v > 0 {
					d.skip(v)
				}
			}
			if d.bad {
				break
			}
		}
	}
	return true
}

// kgVarReader reads varints as kafka-go does: up to 11 bytes, high bits
// dropped; after an error, zeros.
type kgVarReader struct {
	b   []byte
	bad bool
}

func (d *kgVarReader) skip(n int64) {
	if d.bad || n > int64(len(d.b)) {
		d.bad = true
		return
	}
	d.b = d.b[n:]
}

func (d *kgVarReader) varint() int64 {
	if d.bad {
		return 0
	}
	var x uint64
	var s uint
	for i := 0; i < 11 && i < len(d.b); i++ {
		c := d.b[i]
		if c&0x80 == 0 {
			x |= uint64(c) << s
			d.b = d.b[i+1:]
			return int64(x>>1) ^ -(int64(x) & 1)
		}
		x |= uint64(c&0x7f) << s
		s += 7
	}
	d.bad = true
	return 0
}

// Records of a response frame over maxAliased bytes are copied out: a
// message kept by its handler does not hold the frame. Under it, they
// alias the frame (which nothing reuses).
func TestDecodedRecordsCopiedOutOfLargeFrames(t *testing.T) {
	rs := ourBatch(t, 0, 0, msgPending("key", "value", "kafka_correlationId", "id"))
	for _, c := range []struct {
		frame   int
		aliased bool
	}{{len(rs), true}, {maxAliased + 1, false}} {
		frame := slices.Clone(rs)
		dc := decoder{frame: c.frame}
		recs, _, err := dc.decodeRecords("t", 0, frame, 0, nil)
		if err != nil || len(recs) != 1 {
			t.Fatal(len(recs), err)
		}
		m := recs[0].msg
		clear(frame) // what a reused buffer would do
		if aliased := string(m.Value) != "value"; aliased != c.aliased {
			t.Errorf("frame of %d bytes: value %q after the frame was cleared, aliased %v, want %v", c.frame, m.Value, aliased, c.aliased)
		}
		if !c.aliased && (string(m.Key) != "key" || string(m.Headers[0].Value) != "id") {
			t.Errorf("frame of %d bytes: key %q, header %q after the frame was cleared", c.frame, m.Key, m.Headers[0].Value)
		}
	}
}
