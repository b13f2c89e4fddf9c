package kafka

import "net"

// WithConnWrapper wraps every connection the Transport dials: tests use it
// to lose a broker's answers.
func WithConnWrapper(w func(net.Conn) net.Conn) Option {
	return optFunc(func(c *config) error { c.connWrap = w; return nil })
}
