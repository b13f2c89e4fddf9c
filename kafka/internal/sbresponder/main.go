// Command sbresponder is an echo Responder in a process of its own, for the
// tests that kill a responder with SIGKILL (kafka/responderkill_test.go).
// It prints "ready" once subscribed, and serves until killed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/kafka"
)

func main() {
	brokers := flag.String("brokers", "", "comma-separated broker addresses")
	topic := flag.String("topic", "", "request topic")
	group := flag.String("group", "", "consumer group")
	name := flag.String("name", "", "client ID")
	flag.Parse()
	if err := run(strings.Split(*brokers, ","), *topic, *group, *name); err != nil {
		fmt.Fprintln(os.Stderr, "sbresponder:", err)
		os.Exit(1)
	}
}

func run(brokers []string, topic, group, name string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	tr, err := kafka.New(brokers, kafka.ClientID(name))
	if err != nil {
		return err
	}
	defer tr.Close()
	echo := func(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
		return syncbridge.Message{Value: req.Value}, nil
	}
	r, err := syncbridge.NewResponder(ctx, tr, topic, echo, syncbridge.WithGroup(group), syncbridge.WithConcurrentHandlers())
	if err != nil {
		return err
	}
	defer r.Close()
	fmt.Println("ready")
	<-ctx.Done()
	return nil
}
