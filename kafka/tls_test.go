package kafka_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

// selfSigned returns a server certificate for 127.0.0.1 and a pool that
// trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kfake"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool
}

func TestTLS(t *testing.T) {
	if newEnvIsReal() {
		t.Skip("TLS is tested on kfake only")
	}
	cert, pool := selfSigned(t)
	e := newEnv(t, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}}), kfake.SeedTopics(2, "tls"),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "admin", "secret"))
	tr := e.transport(t, kafka.TLS(&tls.Config{RootCAs: pool}), kafka.SASLScram(kafka.ScramSHA512, "admin", "secret"))
	ctx := testCtx(t, 20*time.Second)
	var c collector
	sub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: "tls"}, c.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	g := newCounter()
	gsub, err := tr.Subscribe(ctx, syncbridge.SubscribeConfig{Topic: "tls", Group: "tls"}, g.handler("g"))
	if err != nil {
		t.Fatal(err)
	}
	defer gsub.Close()
	if err := tr.Publish(ctx, syncbridge.Message{Topic: "tls", Value: []byte("secret")}); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, 1, 10*time.Second)
	g.waitDistinct(t, 1, 20*time.Second)
}
