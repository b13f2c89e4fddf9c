package kafka

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/segmentio/kafka-go/protocol"
)

// The Java client's murmur2, from librdkafka's and kafka-go's test vectors.
func TestMurmur2(t *testing.T) {
	tests := []struct {
		key  []byte
		want uint32
	}{
		{[]byte("kafka"), 0xd067cf64},
		{[]byte("giberish123456789"), 0x8f552b0c},
		{[]byte("1234"), 0x9fc97b14},
		{[]byte("234"), 0xe7c009ca},
		{[]byte("34"), 0x873930da},
		{[]byte("4"), 0x5a4b5ca1},
		{[]byte("PreAmbleWillBeRemoved,ThePrePartThatIs"), 0x78424f1c},
		{[]byte("reAmbleWillBeRemoved,ThePrePartThatIs"), 0x4a62b377},
		{[]byte("eAmbleWillBeRemoved,ThePrePartThatIs"), 0xe0e4e09e},
		{[]byte("AmbleWillBeRemoved,ThePrePartThatIs"), 0x62b8b43f},
		{[]byte(""), 0x106e08d9},
		{nil, 0x106e08d9},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.key), func(t *testing.T) {
			if got := murmur2(tt.key); got != tt.want {
				t.Errorf("murmur2(%q) = %#x, want %#x", tt.key, got, tt.want)
			}
		})
	}
}

// FuzzReadRecords feeds arbitrary bytes, as a fetch response's record set,
// to the record decoding: it must return records or an error, never panic.
func FuzzReadRecords(f *testing.F) {
	var buf bytes.Buffer
	rs := protocol.RecordSet{Version: 2, Records: protocol.NewRecordReader(
		protocol.Record{Offset: 0, Key: protocol.NewBytes([]byte("k")), Value: protocol.NewBytes([]byte("v")),
			Headers: []protocol.Header{{Key: "h", Value: []byte{0, 1}}}},
		protocol.Record{Offset: 1, Value: protocol.NewBytes([]byte("second"))},
	)}
	if _, err := rs.WriteTo(&buf); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes(), int64(0))
	f.Add(buf.Bytes(), int64(1))
	f.Add([]byte{0, 0, 0, 0}, int64(0))
	f.Fuzz(func(t *testing.T, b []byte, offset int64) {
		var rs protocol.RecordSet
		if _, err := rs.ReadFrom(bytes.NewReader(b)); err != nil {
			return
		}
		recs, next, err := readRecords("t", 0, rs.Records, offset, nil)
		if err != nil {
			return
		}
		for _, r := range recs {
			if r.offset < offset || r.offset >= next {
				t.Fatalf("record at %d outside [%d, %d)", r.offset, offset, next)
			}
		}
	})
}
