// Command takedown is the syncbridge example of a synchronous API in front
// of asynchronous services.
//
// The story: a classified-ads platform with a social focus. Users post items
// into groups and to their followers; other users report dubious items; the
// platform's services talk asynchronously over Kafka. The police have an API
// that takes an item down at once, and their platform only has synchronous
// clients that will not poll. The takedown API hides the asynchrony: it
// sends a takedown command through a syncbridge Bridge and answers only
// once the items service has confirmed the removal, within a timeout.
//
// # Running it
//
// Everything in one process, on the in-process memory transport:
//
//	go run ./examples/takedown
//
// prints the seeded items, the bearer token it generated (set
// TAKEDOWN_TOKENS=tok1,tok2 to choose them) and a curl command to paste:
//
//	takedown example: role all on the memory transport (in-process)
//	items service: 5 items seeded
//	  itm-1001  alice          "Vintage road bike, 56 cm frame"               groups cycling-lyon + followers
//	  itm-1002  quickdeals_77  "iPhone 16 Pro, sealed, half price, cash only" groups bargains-paris,phones
//	  itm-1003  petlover2024   "Puppies for sale, no papers, ready now"       followers
//	  itm-1004  bob            "Two concert tickets at face value"            groups music-fans + followers
//	  itm-1005  luxe_outlet    "Designer handbag, 90% off, no receipt"        groups fashion-swap + followers
//	police API listening on http://127.0.0.1:8080
//	bearer token (generated; set TAKEDOWN_TOKENS to choose): udzs2aj5ur5qfkwysm77sjwc7r
//	take an item down:
//	  curl -i http://127.0.0.1:8080/v1/takedowns -H 'Authorization: Bearer udzs2aj5ur5qfkwysm77sjwc7r' \
//	    -d '{"item_id":"itm-1002","reason":"counterfeit goods","case_ref":"PJ-2025-0042"}'
//
// Add -items-delay 5s to make the items service slower than the 3 s sync
// timeout and see the 202 Accepted path. Ctrl-C (SIGINT) or SIGTERM stops
// it gracefully: the HTTP server stops accepting, requests in flight finish
// (up to -shutdown-timeout), then the Bridge, the Responders and the
// transport close, and it exits 0.
//
// On Kafka, each side can run as its own process, several of each:
//
//	go run ./examples/takedown -brokers localhost:9092 -role items
//	go run ./examples/takedown -brokers localhost:9092 -role items
//	go run ./examples/takedown -brokers localhost:9092 -role api -addr 127.0.0.1:8080
//	go run ./examples/takedown -brokers localhost:9092 -role api -addr 127.0.0.1:8081
//
// The items-service instances share the commands as one consumer group
// and converge through the events topic; the API replicas share the reply
// topic, each dropping the others' replies (or give each its own with
// -reply-topic). -create-topics (default true) creates missing topics with 8
// partitions, for development.
//
// # Endpoints
//
//	POST /v1/takedowns          {"item_id","reason","case_ref"}, bearer token
//	    200 {"takedown_id","item_id","status":"removed"|"already_removed","removed_at"}
//	    202 Location: /v1/takedowns/{id}, Retry-After: not confirmed within -sync-timeout
//	    400 malformed JSON, unknown or missing fields; 401 no valid token;
//	    404 unknown item; 413 body past 4 KiB;
//	    503 Retry-After: too many requests in flight, not sent, or shutting down
//	GET  /v1/takedowns/{id}[?wait=10s]   bearer token; ?wait long-polls
//	    200 the outcome; 202 still pending; 404 unknown;
//	    504 "expired" when no confirmation came within -call-timeout
//	GET  /v1/items/{id}                  the item, taken down or not (from the items service)
//	POST /v1/items/{id}/reports {"reason","details"}: a user's report, fire-and-forget
//	    202 Location: /v1/reports/{id}
//	GET  /v1/reports/{id}                200 {"status":"received"|"recorded"|"rejected",...}
//	GET  /healthz
//
// Every takedown attempt is written to the audit log (JSON, on stderr or
// the -audit file): token ID (a hash prefix, never the token), item,
// reason, case reference, outcome, HTTP status and latency; a takedown
// answered 202 gets a second record when it ends.
//
// # How it is built
//
// The items service (internal/items) serves takedown commands and queries
// as two syncbridge Responders, records reports from a topic it consumes as
// a group, and publishes ItemTakenDown and ReportProcessed events. The API
// (internal/api) starts each takedown with Bridge.Go in a Call of its own
// (context.WithoutCancel, bounded by -call-timeout), waits for it up to
// -sync-timeout, and otherwise answers 202 and keeps the Call for polling;
// it keeps no catalogue and queries the items service through the same
// Bridge. Topic names and messages are in internal/contract.
package main
