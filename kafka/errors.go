package kafka

import (
	kafkago "github.com/segmentio/kafka-go"
)

// Error is an error code returned by a Kafka broker, numbered as in the
// Kafka protocol (https://kafka.apache.org/protocol#protocol_error_codes).
// The Transport's errors wrap it: errors.Is(err, kafka.MessageTooLarge)
// holds for a message the broker refused as too large, and errors.As
// finds the code of any other.
type Error int16

// Error returns the code's name and description.
func (e Error) Error() string { return kafkago.Error(e).Error() }

// Retriable reports whether Kafka documents the error as retriable: the
// Transport retries these itself.
func (e Error) Retriable() bool { return kafkago.Error(e).Temporary() }

// Broker error codes the Transport's documentation names. Any other code
// may be wrapped as an Error too.
const (
	UnknownServerError         Error = -1
	UnknownTopicOrPartition    Error = 3
	LeaderNotAvailable         Error = 5
	NotLeaderOrFollower        Error = 6
	RequestTimedOut            Error = 7
	BrokerNotAvailable         Error = 8
	MessageTooLarge            Error = 10
	RecordListTooLarge         Error = 18
	NotEnoughReplicas          Error = 19
	TopicAuthorizationFailed   Error = 29
	GroupAuthorizationFailed   Error = 30
	ClusterAuthorizationFailed Error = 31
	SASLAuthenticationFailed   Error = 58
)

// Codes the Transport handles itself.
const (
	errOffsetOutOfRange             Error = 1
	errNetworkException             Error = 13
	errInvalidTopic                 Error = 17
	errNotEnoughReplicasAfterAppend Error = 20
	errTopicAlreadyExists           Error = 36
	errOutOfOrderSequenceNumber     Error = 45
	errDuplicateSequenceNumber      Error = 46
	errInvalidProducerEpoch         Error = 47
	errInvalidProducerIDMapping     Error = 49
	errKafkaStorageError            Error = 56
	errUnknownProducerID            Error = 59
	errProducerFenced               Error = 90
)

// ListOffsets timestamps for the start and the end of a partition.
const (
	firstOffset int64 = -2
	lastOffset  int64 = -1
)
