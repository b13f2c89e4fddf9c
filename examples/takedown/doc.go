// Command takedown is the syncbridge example of a synchronous API in front
// of asynchronous services.
//
// The story: a classified-ads platform with a social focus. Users post items
// into groups and to their followers; other users report dubious items; the
// platform's services talk asynchronously over Kafka. The police have an API
// that takes an item down at once, and their platform only has synchronous
// clients that will not poll. The takedown API hides the asynchrony: it
// sends a takedown command through a syncbridge Bridge and answers once the
// items service has recorded the removal, within a timeout.
//
// # Running it
//
// Everything in one process, on the in-process memory transport and an
// SQLite file (takedown.db in the working directory, created if missing;
// pure Go, nothing to install):
//
//	go run ./examples/takedown
//
// prints the seeded items, the bearer token it generated (set
// TAKEDOWN_TOKENS=tok1,tok2 to choose them) and a curl command to paste:
//
//	takedown example: role all on the memory transport (in-process), database SQLite file takedown.db
//	items service: 5 items seeded (5 new)
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
// Stop it and start it again: every takedown is still there, and polling
// it answers what the POST answered. -seed N seeds N items (itm-1001 on),
// for load tests; seeding never changes an item that exists. Add
// -items-delay 5s to make the items service slower than the 3 s sync
// timeout and see the 202 Accepted path. Ctrl-C (SIGINT) or SIGTERM stops
// it gracefully: the API refuses new takedowns, answers those in progress
// (202 at the latest, before -shutdown-timeout), then the Bridge, the
// Responders and the transport close, and it exits 0.
//
// On Kafka and PostgreSQL, each side can run as its own process, several of
// each:
//
//	DB=postgres://user@localhost/takedown
//	go run ./examples/takedown -brokers localhost:9092 -db $DB -role items
//	go run ./examples/takedown -brokers localhost:9092 -db $DB -role items
//	go run ./examples/takedown -brokers localhost:9092 -db $DB -role api -addr 127.0.0.1:8080
//	go run ./examples/takedown -brokers localhost:9092 -db $DB -role api -addr 127.0.0.1:8081
//
// The items-service instances share the commands as one consumer group and
// the catalogue through the database; the API replicas share the reply
// topic, each dropping the others' replies (or give each its own with
// -reply-topic), and the audit trail. Processes on one host may share an
// SQLite file instead. -create-topics (default true) creates missing
// topics with 8 partitions, for development.
//
// # Endpoints
//
//	POST /v1/takedowns          {"item_id","reason","case_ref"}, bearer token
//	    200 {"takedown_id","item_id","status":"removed"|"already_removed","removed_at",...}
//	    202 Location: /v1/takedowns/{id}, Retry-After: not confirmed within -sync-timeout
//	    400 malformed JSON: unknown, missing, repeated or differently-cased keys
//	    401 no valid token; 413 body past 4 KiB
//	    404, 503, 504 with "status":"failed": not applied, and never will be
//	GET  /v1/takedowns/{id}[?wait=10s]   bearer token; ?wait long-polls
//	    the takedown's outcome as the POST would answer it, from any replica
//	GET  /v1/items/{id}                  the item, taken down or not
//	POST /v1/items/{id}/reports {"reason","details"}: a user's report, fire-and-forget
//	    202 Location: /v1/reports/{id}
//	GET  /v1/reports/{id}                200 {"status":"received"|"recorded"|"rejected",...}
//	GET  /healthz
//
// Every error, the router's 404 and 405 included, is JSON:
// {"error":"code","message":"..."}.
//
// # What the status codes promise
//
// A takedown's ID is its idempotency key: the items service records it with
// the outcome, in the transaction that takes the item down, and answers a
// command whose ID it has seen with the outcome it recorded the first time,
// after a redelivery, a retry or a restart alike. So:
//   - 200: recorded as removed (or already removed by another takedown).
//   - 202: sent and not yet confirmed. Its outcome can be polled from any
//     API replica, after restarts of any process, from the database
//     through the items service. A command still unapplied when it expires
//     (-call-timeout) is fenced off: recorded as expired, never applied.
//   - 503 (and 404, 504) with "status":"failed": not applied, and never
//     will be. A takedown refused before it was sent (too many in
//     progress, shutting down, the broker unreachable), or one the items
//     service failed and the API then cancelled (a cancel recorded with
//     its ID keeps a redelivered command from ever applying it).
//
// Takedowns and reads have separate admission limits (-max-takedowns,
// -max-reads), so that slow confirmations never starve reads.
//
// Every takedown request is audited in the database (table audit): a row
// written before anything is sent, completed with the HTTP status and
// outcome before the answer is written: token ID (a hash prefix, never the
// token), item, reason, case reference, remote address, API replica,
// latency. A client that hangs up gets outcome client_gone and no status.
// A JSON copy goes to stderr, or to the -audit file.
//
// # How it is built
//
// The items service (internal/items) serves takedown commands and queries
// as two syncbridge Responders, records reports from a topic it consumes as
// a group, and publishes ItemTakenDown and ReportProcessed events from a
// transactional outbox. The API (internal/api) starts each takedown with
// Bridge.Go, waits for it up to -sync-timeout, and otherwise answers 202;
// it keeps no catalogue and no pending takedowns in memory, and queries the
// items service through the same Bridge. The database code is in
// internal/db; topic names and messages are in internal/contract.
package main
