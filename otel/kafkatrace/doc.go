// Package kafkatrace holds the otel module's trace test over Kafka (an
// in-process kfake broker). It is a module of its own, nested in otel/, so
// that otel's go.mod requires no Kafka client: a program importing only
// the otel module resolves none. It imports the otel module's
// internal/tracecheck (allowed: its import path is under otel/), so the
// test over Kafka makes the same checks as the one over the memory
// transport. It has no API.
package kafkatrace
