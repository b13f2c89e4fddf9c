package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/components/requestreply"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/bench/internal/floor"
	"github.com/syncbridge/syncbridge/memory"
)

// responders is the number of echo goroutines (or partitions, or queue
// subscribers) of every in-process contender.
const responders = 8

// inprocNames lists the in-process contenders in table order.
var inprocNames = []string{"floor", "syncbridge", "nats", "watermill"}

// newInproc builds the named in-process contender.
func newInproc(name string) (*contender, error) {
	switch name {
	case "floor":
		return newFloor(), nil
	case "syncbridge":
		return newSyncbridgeMemory()
	case "nats":
		return newNATS()
	case "watermill":
		return newWatermill()
	}
	return nil, fmt.Errorf("unknown in-process contender %q", name)
}

// echo is the handler of every in-process responder.
func echo(p []byte) []byte { return p }

// --- floor ---

type floorReq struct{ b *floor.Bridge }

func (f floorReq) Request(ctx context.Context, p []byte) ([]byte, error) { return f.b.Request(ctx, p) }

func newFloor() *contender {
	b := floor.New(responders, echo)
	return &contender{
		name: "floor",
		desc: fmt.Sprintf("internal/floor: channel + 64-shard map, %d responder goroutines", responders),
		r:    floorReq{b},
		close: func() error {
			b.Close()
			return nil
		},
	}
}

// --- syncbridge over memory.Transport ---

type bridgeReq struct {
	b     *syncbridge.Bridge
	topic string
}

func (s bridgeReq) Request(ctx context.Context, p []byte) ([]byte, error) {
	reply, err := s.b.Request(ctx, syncbridge.Message{Topic: s.topic, Value: p})
	if err != nil {
		return nil, err
	}
	return reply.Value, nil
}

// echoHandler is the syncbridge.Responder handler of every syncbridge
// contender.
func echoHandler(_ context.Context, req *syncbridge.Message) (syncbridge.Message, error) {
	return syncbridge.Message{Value: req.Value}, nil
}

func newSyncbridgeMemory() (*contender, error) {
	t := &memory.Transport{Partitions: responders}
	resp, err := syncbridge.NewResponder(context.Background(), t, "echo", echoHandler)
	if err != nil {
		return nil, err
	}
	b, err := syncbridge.New(context.Background(), t)
	if err != nil {
		resp.Close()
		return nil, err
	}
	return &contender{
		name: "syncbridge",
		desc: fmt.Sprintf("syncbridge Bridge.Request + Responder over memory.Transport (%d partitions)", responders),
		r:    bridgeReq{b: b, topic: "echo"},
		close: func() error {
			return errors.Join(b.Close(), resp.Close(), t.Close())
		},
	}, nil
}

// --- NATS ---

type natsReq struct{ nc *nats.Conn }

func (n natsReq) Request(ctx context.Context, p []byte) ([]byte, error) {
	m, err := n.nc.RequestWithContext(ctx, "echo", p)
	if err != nil {
		return nil, err
	}
	return m.Data, nil
}

// startNATS starts an embedded nats-server on a random loopback port, without
// logging or signal handlers.
func startNATS() (*server.Server, error) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		return nil, err
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("nats-server did not start")
	}
	return s, nil
}

func newNATS() (*contender, error) {
	s, err := startNATS()
	if err != nil {
		return nil, err
	}
	rc, err := nats.Connect(s.ClientURL())
	if err != nil {
		s.Shutdown()
		return nil, err
	}
	for range responders {
		if _, err := rc.QueueSubscribe("echo", "echo", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
			rc.Close()
			s.Shutdown()
			return nil, err
		}
	}
	if err := rc.Flush(); err != nil {
		rc.Close()
		s.Shutdown()
		return nil, err
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		rc.Close()
		s.Shutdown()
		return nil, err
	}
	return &contender{
		name: "nats",
		desc: fmt.Sprintf("nats.go RequestWithContext (mux) → embedded nats-server on loopback, %d echo queue subscribers", responders),
		r:    natsReq{nc},
		close: func() error {
			nc.Close()
			rc.Close()
			s.Shutdown()
			s.WaitForShutdown()
			return nil
		},
	}, nil
}

// --- Watermill requestreply over gochannel ---

// wmEcho is the Watermill command; wmReply its result.
type wmEcho struct {
	Payload []byte `json:"payload"`
}

type wmReply struct {
	Payload []byte `json:"payload"`
}

type wmReq struct {
	bus     *cqrs.CommandBus
	backend *requestreply.PubSubBackend[wmReply]
}

func (w wmReq) Request(ctx context.Context, p []byte) ([]byte, error) {
	reply, err := requestreply.SendWithReply[wmReply](ctx, w.bus, w.backend, &wmEcho{Payload: p})
	if err != nil {
		return nil, err
	}
	if reply.Error != nil {
		return nil, reply.Error
	}
	return reply.HandlerResult.Payload, nil
}

// newWatermill lays Watermill out as its requestreply tests do: one
// gochannel Pub/Sub for commands and replies, cqrs.CommandBus and
// CommandProcessor with the JSON marshaler, a PubSubBackend whose every
// request subscribes to the "reply" topic, and NewCommandHandlerWithResult
// on a message.Router. Logging is off (NopLogger).
func newWatermill() (*contender, error) {
	logger := watermill.NopLogger{}
	marshaler := cqrs.JSONMarshaler{}
	pubSub := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: false}, logger)
	backend, err := requestreply.NewPubSubBackend[wmReply](requestreply.PubSubBackendConfig{
		Publisher: pubSub,
		SubscriberConstructor: func(requestreply.PubSubBackendSubscribeParams) (message.Subscriber, error) {
			return pubSub, nil
		},
		GenerateSubscribeTopic: func(requestreply.PubSubBackendSubscribeParams) (string, error) { return "reply", nil },
		GeneratePublishTopic:   func(requestreply.PubSubBackendPublishParams) (string, error) { return "reply", nil },
		Logger:                 logger,
		AckCommandErrors:       true,
	}, requestreply.BackendPubsubJSONMarshaler[wmReply]{})
	if err != nil {
		return nil, err
	}
	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		return nil, err
	}
	bus, err := cqrs.NewCommandBusWithConfig(pubSub, cqrs.CommandBusConfig{
		GeneratePublishTopic: func(cqrs.CommandBusGeneratePublishTopicParams) (string, error) { return "commands", nil },
		Marshaler:            marshaler,
		Logger:               logger,
	})
	if err != nil {
		return nil, err
	}
	proc, err := cqrs.NewCommandProcessorWithConfig(router, cqrs.CommandProcessorConfig{
		GenerateSubscribeTopic: func(cqrs.CommandProcessorGenerateSubscribeTopicParams) (string, error) { return "commands", nil },
		SubscriberConstructor: func(cqrs.CommandProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return pubSub, nil
		},
		Marshaler: marshaler,
		Logger:    logger,
	})
	if err != nil {
		return nil, err
	}
	if err := proc.AddHandlers(requestreply.NewCommandHandlerWithResult[wmEcho, wmReply](
		"echo", backend,
		func(_ context.Context, cmd *wmEcho) (wmReply, error) { return wmReply{Payload: cmd.Payload}, nil },
	)); err != nil {
		return nil, err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(context.Background()) }()
	select {
	case <-router.Running():
	case err := <-runErr:
		return nil, fmt.Errorf("watermill router: %w", err)
	}
	return &contender{
		name: "watermill",
		desc: "Watermill requestreply.SendWithReply + NewCommandHandlerWithResult, cqrs JSON, pubsub/gochannel",
		r:    wmReq{bus: bus, backend: backend},
		close: func() error {
			err := router.Close()
			<-runErr
			return errors.Join(err, pubSub.Close())
		},
	}, nil
}
