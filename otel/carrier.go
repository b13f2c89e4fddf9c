package otel

import (
	"github.com/syncbridge/syncbridge"
	"go.opentelemetry.io/otel/propagation"
)

// HeaderCarrier adapts a message's headers to a propagator, to inject
// trace context into a message or extract it from one. Keys are matched
// exactly (W3C propagators use lower-case keys); the first header of a
// key wins, as in syncbridge.Message.Header.
type HeaderCarrier struct {
	Headers *[]syncbridge.Header
}

var _ propagation.TextMapCarrier = HeaderCarrier{}

// Get returns the value of the first header named key, or "".
func (c HeaderCarrier) Get(key string) string {
	for _, h := range *c.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Set sets the header named key to value: it replaces the value of the
// first header of that name, or appends a header. It replaces the header
// in the slice, never the memory of its value, which may be shared.
func (c HeaderCarrier) Set(key, value string) {
	hs := *c.Headers
	for i := range hs {
		if hs[i].Key == key {
			hs[i].Value = []byte(value)
			return
		}
	}
	*c.Headers = append(hs, syncbridge.Header{Key: key, Value: []byte(value)})
}

// Keys returns the keys of the headers, in order, repeats included.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, len(*c.Headers))
	for i, h := range *c.Headers {
		keys[i] = h.Key
	}
	return keys
}
