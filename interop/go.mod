module github.com/syncbridge/syncbridge/interop

go 1.26.0

require (
	github.com/segmentio/kafka-go v0.4.51
	github.com/syncbridge/syncbridge v0.0.0
	github.com/syncbridge/syncbridge/kafka v0.0.0
	go.uber.org/goleak v1.3.0
)

require (
	github.com/google/uuid v1.6.0 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/pierrec/lz4/v4 v4.1.33 // indirect
	github.com/xdg-go/pbkdf2 v1.0.0 // indirect
	github.com/xdg-go/scram v1.1.2 // indirect
	github.com/xdg-go/stringprep v1.0.4 // indirect
	golang.org/x/text v0.23.0 // indirect
)

replace (
	github.com/syncbridge/syncbridge => ../
	github.com/syncbridge/syncbridge/kafka => ../kafka
)
