// Command syncbridge debugs request/reply flows on Kafka, the way `nats req`
// and `nats reply` are used on NATS:
//
//	syncbridge request -brokers host:9092 -topic orders.commands '{"id":1}'
//	syncbridge request -topic orders.commands -count 1000 -concurrency 16 x
//	syncbridge respond -topic orders.commands                  # echo
//	syncbridge respond -topic orders.commands -exec 'jq .id'   # a command per request
//	syncbridge watch   -topic orders.commands -reply-topic syncbridge.replies
//
// request sends a request (the value from the argument, or stdin when the
// argument is "-" or absent), prints the reply, its headers decoded
// (correlation ID, reply partition, deadline, error code) and the round
// trip; with -count it sends many and prints throughput, p50 and p99.
// respond serves a topic as a syncbridge Responder: it echoes, or runs
// -exec's command per request with the request value on stdin, replies
// with its stdout, and turns a non-zero exit status into an error reply
// (code "exit_N", description from stderr). watch prints the requests and
// replies flowing on a topic pair with their headers decoded, and flags
// replies nobody waits for (no request seen within -grace, or its deadline
// passed).
//
// Flags for the connection: -brokers, -tls, -tls-ca, -tls-cert, -tls-key,
// -tls-insecure, -sasl (plain, scram-sha-256, scram-sha-512), -sasl-user,
// -sasl-password (or $SYNCBRIDGE_SASL_PASSWORD), -create-topics.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
