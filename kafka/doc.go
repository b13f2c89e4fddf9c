// Package kafka is a syncbridge.Transport on Apache Kafka, built on
// segmentio/kafka-go's low-level protocol API.
//
//	tr, err := kafka.New([]string{"127.0.0.1:9092"})
//	if err != nil { ... }
//	defer tr.Close()
//	bridge, err := syncbridge.New(context.Background(), tr, syncbridge.WithReplyTopic("app.replies"))
//
// # Publishing
//
// PublishAsync hands a message to the produce loop of its partition's
// leader and returns at once (Publish is PublishAsync plus a wait); its
// callback gets the broker's acknowledgement (from every in-sync replica
// by default, see RequiredAcks). There is no linger: each broker has one
// produce loop, which sends at once when no produce request is in flight,
// and otherwise gathers everything published meanwhile into the next
// request, across partitions and topics. A lone request pays one network
// round trip; under load, requests grow as fat as the load makes them
// (capped by MaxProduceBytes). Messages with a key go to the partition the
// Java client's default partitioner picks (murmur2), keyless ones round
// robin, and UsePartition pins one. Retriable errors are retried in the
// background with fresh metadata, on the partition first chosen, until the
// caller's context ends.
//
// Errors say whether a message may have been written. A message whose
// context ends while it waits in a queue is dropped and never sent: its
// error wraps syncbridge.ErrNotSent. So do the broker's refusals (message
// too large, unknown topic or partition, authorization) and errors after
// Close for messages not yet sent. A message whose context ends while a
// produce request carrying it is in flight, or whose request got no
// answer, may have been written: its error does not wrap ErrNotSent.
//
// # Subscribing
//
// A broadcast subscription (no group) reads its partitions directly,
// starting at the end offsets resolved before Subscribe returns, with one
// fetch request per broker and round for all its partitions (and for every
// other broadcast subscription of the same Transport to the same
// partitions). A group subscription joins a Kafka consumer group; each
// assigned partition has its own handler goroutine, and an offset is
// committed only after the handler returned for its message, so delivery
// is at least once. See Transport.Subscribe.
//
// # Reply routing
//
// A syncbridge Bridge reads replies from a reply topic through a broadcast
// subscription. Two routing modes exist:
//
//   - Default: every Bridge reads every partition of the shared reply topic
//     and drops the replies that carry a correlation ID it does not know
//     (counted as foreign in Bridge.Stats). Simple and elastic: any number of
//     Bridges share one topic, responders reply to the topic and Kafka
//     spreads the replies. The cost is that each Bridge reads every reply, so
//     fetch traffic grows with the number of Bridges.
//   - Pinned (syncbridge.WithReplyPartitions): each Bridge reads only its own
//     partitions of the reply topic and names the partition in each request
//     (the kafka_replyPartition header); the responder publishes the reply to
//     exactly that partition with Message.UsePartition. This is Spring
//     Kafka's ReplyingKafkaTemplate scheme: no Bridge reads another's
//     replies, but partitions must be handed out so that no two Bridges share
//     one, and the reply topic needs as many partitions as there are Bridges.
//
// # Defaults
//
// The defaults are chosen for request/reply: acks from all in-sync
// replicas, no linger, a 250 ms fetch wait (a fetch returns as soon as one
// record arrives; the wait only bounds idle polling), consumer group
// session 10 s and heartbeat 500 ms (kafka-go's 30 s and 3 s make
// rebalances slow), a group that never committed starts at the earliest
// offset. Logging is off unless Logger is given.
package kafka
