// Package api is the synchronous side of the takedown example: the HTTP API
// through which the police take an item down, and through which users
// report dubious items.
//
// A takedown is a command sent over a syncbridge Bridge to the items
// service. Every status code tells the truth:
//   - 200: the items service recorded the takedown: removed, or already
//     removed by an earlier one.
//   - 202: sent, not confirmed within the sync timeout; its outcome can be
//     polled from any replica, after any restart, until long after it
//     ends, because the items service records it in its database.
//   - 503 (and 404, 504 with "status":"failed"): not applied, and never
//     will be: refused before anything was sent, or recorded by the items
//     service as not applied (cancelled, expired, unknown item).
//
// Every takedown request is audited in the database: a row written before
// the command is sent, completed with the answer before it is written.
// Takedowns and reads have separate admission limits, so that slow
// confirmations never starve reads.
package api

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/contract"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/db"
)

// Defaults of the Config fields.
const (
	DefaultSyncTimeout  = 3 * time.Second
	DefaultCallTimeout  = 2 * time.Minute
	DefaultMaxWait      = 30 * time.Second
	DefaultQueryTimeout = 5 * time.Second
	DefaultMaxTakedowns = 500
	DefaultMaxReads     = 500
	DefaultMaxReports   = 1000
	DefaultMaxBody      = 4 << 10
	DefaultPollInterval = 200 * time.Millisecond
)

// Config configures a Server. Bridge, Transport, DB and Tokens are
// required; zero values of the other fields mean their defaults.
type Config struct {
	// Bridge carries takedown commands and queries to the items service.
	// The Server does not own it. Its WithMaxInFlight, if any, should be
	// at least BridgeInFlight(MaxTakedowns, MaxReads).
	Bridge *syncbridge.Bridge
	// Transport publishes users' reports. The Server does not own it.
	Transport syncbridge.Transport
	// DB holds the audit trail. The Server does not own it.
	DB *db.DB
	// Topics names the topics; Replies is ignored (the Bridge has its
	// own). Zero means contract.DefaultTopics("").
	Topics contract.Topics
	// Tokens are the bearer tokens that may take items down.
	Tokens *Tokens
	// Audit receives a JSON copy of each audit row as it is written. Nil
	// discards them; the database has them all the same.
	Audit *slog.Logger
	// Logger is the service log. Nil logs nothing.
	Logger *slog.Logger
	// Instance names this replica in the audit trail. Default: host name,
	// process ID and a random suffix.
	Instance string
	// SyncTimeout is how long a takedown waits for the items service's
	// confirmation before the API answers 202 Accepted. Default
	// DefaultSyncTimeout.
	SyncTimeout time.Duration
	// QueryTimeout bounds each read, and each fence (the cancelling of a
	// takedown), sent to the items service; a read that takes longer gets
	// 504. Default DefaultQueryTimeout.
	QueryTimeout time.Duration
	// CallTimeout is how long a takedown command stays valid: the items
	// service records it as expired, not applied, when it takes it up
	// later. It must not be shorter than SyncTimeout. Default
	// DefaultCallTimeout.
	CallTimeout time.Duration
	// MaxWait caps the ?wait= long poll of GET /v1/takedowns/{id}. Default
	// DefaultMaxWait.
	MaxWait time.Duration
	// PollInterval is how often a long poll asks the items service.
	// Default DefaultPollInterval.
	PollInterval time.Duration
	// MaxTakedowns bounds the takedowns in progress (received and not yet
	// answered, or still being published); past it a takedown gets 503
	// before anything is sent. Default DefaultMaxTakedowns.
	MaxTakedowns int
	// MaxReads bounds the other requests in progress that use the Bridge
	// or the transport (GETs, reports); past it they get 503. Default
	// DefaultMaxReads.
	MaxReads int
	// MaxReports bounds the reports remembered as received, for GET
	// /v1/reports/{id} before the items service has processed them.
	// Default DefaultMaxReports.
	MaxReports int
	// MaxBody caps request bodies, in bytes; past it the API answers 413.
	// Default DefaultMaxBody.
	MaxBody int64
}

// BridgeInFlight returns the requests in flight over the Bridge that a
// Server with these limits may have at once: a command and a fence per
// takedown, one request per read.
func BridgeInFlight(maxTakedowns, maxReads int) int { return 2*maxTakedowns + maxReads }

// Server is the HTTP API. It is an http.Handler; create it with New, serve
// it with an http.Server, call BeginShutdown before the http.Server's
// Shutdown, and Close once the server stopped.
type Server struct {
	cfg       Config
	audit     *auditLog
	log       *slog.Logger
	mux       *http.ServeMux
	reports   *fifo
	takedowns limiter
	reads     limiter
	closing   context.Context // cancelled by Close: ends every Call
	stop      context.CancelFunc

	active    atomic.Int64  // requests being handled
	draining  atomic.Bool   // BeginShutdown was called: refuse new takedowns
	hurry     chan struct{} // closed when requests in progress must answer now
	hurryOnce sync.Once
	wg        sync.WaitGroup // goroutines running Bridge.Go
}

// New returns a Server for cfg, or an error if cfg is incomplete or
// inconsistent.
func New(cfg Config) (*Server, error) {
	if cfg.Bridge == nil || cfg.Transport == nil || cfg.Tokens == nil || cfg.DB == nil {
		return nil, errors.New("api: Bridge, Transport, DB and Tokens are required")
	}
	if cfg.Topics == (contract.Topics{}) {
		cfg.Topics = contract.DefaultTopics("")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.SyncTimeout, DefaultSyncTimeout)
	def(&cfg.QueryTimeout, DefaultQueryTimeout)
	def(&cfg.CallTimeout, DefaultCallTimeout)
	def(&cfg.MaxWait, DefaultMaxWait)
	def(&cfg.PollInterval, DefaultPollInterval)
	defInt := func(n *int, v int) {
		if *n == 0 {
			*n = v
		}
	}
	defInt(&cfg.MaxTakedowns, DefaultMaxTakedowns)
	defInt(&cfg.MaxReads, DefaultMaxReads)
	defInt(&cfg.MaxReports, DefaultMaxReports)
	if cfg.MaxBody == 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	switch {
	case cfg.SyncTimeout < 0 || cfg.QueryTimeout < 0 || cfg.CallTimeout < 0 || cfg.MaxWait < 0 || cfg.PollInterval < 0:
		return nil, errors.New("api: durations must not be negative")
	case cfg.CallTimeout < cfg.SyncTimeout:
		return nil, fmt.Errorf("api: call timeout %v is shorter than sync timeout %v", cfg.CallTimeout, cfg.SyncTimeout)
	case cfg.MaxTakedowns < 0 || cfg.MaxReads < 0 || cfg.MaxReports < 0 || cfg.MaxBody < 0:
		return nil, errors.New("api: limits must not be negative")
	}
	if cfg.Instance == "" {
		host, _ := os.Hostname()
		cfg.Instance = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), strings.ToLower(rand.Text()[:6]))
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		mux:       http.NewServeMux(),
		reports:   newFIFO(cfg.MaxReports),
		takedowns: make(limiter, cfg.MaxTakedowns),
		reads:     make(limiter, cfg.MaxReads),
		hurry:     make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	mirror := cfg.Audit
	if mirror == nil {
		mirror = slog.New(slog.DiscardHandler)
	}
	s.audit = &auditLog{db: cfg.DB, instance: cfg.Instance, mirror: mirror, log: s.log}
	s.closing, s.stop = context.WithCancel(context.Background())
	s.mux.HandleFunc("POST /v1/takedowns", s.postTakedown)
	s.mux.HandleFunc("GET /v1/takedowns/{id}", s.getTakedown)
	s.mux.HandleFunc("GET /v1/items/{id}", s.getItem)
	s.mux.HandleFunc("POST /v1/items/{id}/reports", s.postReport)
	s.mux.HandleFunc("GET /v1/reports/{id}", s.getReport)
	s.mux.HandleFunc("GET /healthz", s.health)
	return s, nil
}

// limiter is a semaphore that never waits.
type limiter chan struct{}

func (l limiter) tryAcquire() bool {
	select {
	case l <- struct{}{}:
		return true
	default:
		return false
	}
}

func (l limiter) release() { <-l }

// ServeHTTP implements http.Handler. A request no route matches gets the
// API's JSON error, 404 or 405 (with Allow); a handler that panics, a
// JSON 500.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.active.Add(1)
	defer s.active.Add(-1)
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("api: handler panicked", "path", r.URL.Path, "panic", fmt.Sprint(p))
			writeError(w, http.StatusInternalServerError, "internal", "internal error", 0)
		}
	}()
	h, pattern := s.mux.Handler(r)
	if pattern != "" {
		s.mux.ServeHTTP(w, r) // sets the path values, which h alone would not
		return
	}
	// The mux's own answer (404, 405, or a redirect to a clean path),
	// captured so that errors get the API's JSON shape.
	c := &capture{header: http.Header{}}
	h.ServeHTTP(c, r)
	switch {
	case c.status == http.StatusMethodNotAllowed:
		w.Header().Set("Allow", c.header.Get("Allow"))
		writeError(w, c.status, "method_not_allowed", fmt.Sprintf("%s is not allowed on %s", r.Method, r.URL.Path), 0)
	case c.status >= 400 || c.status == 0:
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.URL.Path, 0)
	default:
		if loc := c.header.Get("Location"); loc != "" {
			w.Header().Set("Location", loc)
		}
		writeJSON(w, c.status, map[string]string{"location": c.header.Get("Location")})
	}
}

// capture records what an http.Handler writes.
type capture struct {
	header http.Header
	status int
}

func (c *capture) Header() http.Header { return c.header }
func (c *capture) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
}
func (c *capture) Write(b []byte) (int, error) {
	c.WriteHeader(http.StatusOK)
	return len(b), nil
}

// BeginShutdown starts a graceful stop: from now on a takedown gets 503
// before anything is sent, and the requests in progress answer by ctx's
// deadline (less a margin to write the answer): a takedown not confirmed
// by then gets 202, which stays pollable from any replica, from the
// database, after this one exits. Call it before http.Server.Shutdown,
// with the same ctx.
func (s *Server) BeginShutdown(ctx context.Context) {
	s.draining.Store(true)
	now := time.Now()
	hurry := func() { s.hurryOnce.Do(func() { close(s.hurry) }) }
	if d, ok := ctx.Deadline(); ok {
		margin := min(d.Sub(now)/5, time.Second)
		t := time.AfterFunc(d.Sub(now)-margin, hurry)
		context.AfterFunc(s.closing, func() { t.Stop() })
	}
	stop := context.AfterFunc(ctx, hurry)
	context.AfterFunc(s.closing, func() { stop() })
}

// Active returns the number of requests being handled. After
// BeginShutdown, once it is 0 every request taken has been answered, and
// the connections left are idle: an http.Server whose Shutdown ran out of
// time then may be closed without losing an answer.
func (s *Server) Active() int { return int(s.active.Load()) }

// Close ends what is still running: the publishing of takedown commands
// still under way (they were answered 202, and are pollable). Call it
// once the http.Server stopped. Close is idempotent.
func (s *Server) Close() {
	s.draining.Store(true)
	s.hurryOnce.Do(func() { close(s.hurry) })
	s.stop()
	s.wg.Wait()
}

// takedownRequest is the body of POST /v1/takedowns.
type takedownRequest struct {
	ItemID  string `json:"item_id"`
	Reason  string `json:"reason"`
	CaseRef string `json:"case_ref"`
}

// MaxCaseRefLen bounds case_ref.
const MaxCaseRefLen = 100

func (req *takedownRequest) validate() error {
	switch {
	case !contract.ValidID(req.ItemID):
		return errors.New("item_id is required: 1 to 64 letters, digits, '.', '-' or '_'")
	case strings.TrimSpace(req.Reason) == "" || len(req.Reason) > contract.MaxTextLen || !contract.ValidText(req.Reason):
		return fmt.Errorf("reason is required: at most %d bytes, no control characters", contract.MaxTextLen)
	case strings.TrimSpace(req.CaseRef) == "" || len(req.CaseRef) > MaxCaseRefLen || !contract.ValidText(req.CaseRef):
		return fmt.Errorf("case_ref is required: at most %d bytes, no control characters", MaxCaseRefLen)
	}
	return nil
}

// reject answers a takedown request refused before anything was sent, and
// audits it.
func (s *Server) reject(w http.ResponseWriter, row *auditRow, status int, code, message string, retry int) {
	s.audit.answered(row, status, code)
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="takedown"`)
	}
	body := errorBody{Error: code, Message: message}
	if status == http.StatusServiceUnavailable {
		body.Status, body.TakedownID, body.ItemID = "failed", row.takedownID, row.itemID
	}
	writeJSON(w, status, body, retryAfter(retry))
}

func (s *Server) postTakedown(w http.ResponseWriter, r *http.Request) {
	row := &auditRow{start: time.Now(), receivedAt: db.Now(), remote: r.RemoteAddr}
	tokenID, ok := s.cfg.Tokens.Check(r)
	if !ok {
		s.reject(w, row, http.StatusUnauthorized, "unauthorized", "a valid bearer token is required", 0)
		return
	}
	row.tokenID = tokenID
	var req takedownRequest
	if status, err := readJSON(w, r, s.cfg.MaxBody, &req); err != nil {
		s.reject(w, row, status, errorCode(status), err.Error(), 0)
		return
	}
	if err := req.validate(); err != nil {
		s.reject(w, row, http.StatusBadRequest, "bad_request", err.Error(), 0)
		return
	}
	row.itemID, row.reason, row.caseRef = req.ItemID, req.Reason, req.CaseRef
	if s.draining.Load() {
		s.reject(w, row, http.StatusServiceUnavailable, "shutting_down", "the API is shutting down; nothing was sent; retry on another replica", 5)
		return
	}
	if !s.takedowns.tryAcquire() {
		s.reject(w, row, http.StatusServiceUnavailable, "overloaded", "too many takedowns in progress; nothing was sent; retry later", 1)
		return
	}
	row.takedownID = newID("td")
	row.expiresAt = row.receivedAt.Add(s.cfg.CallTimeout)
	if err := s.audit.received(row); err != nil {
		s.takedowns.release()
		row.takedownID, row.expiresAt = "", time.Time{}
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "unavailable", Message: "the audit trail could not be written; nothing was sent; retry later", Status: "failed", ItemID: req.ItemID}, retryAfter(1))
		return
	}
	cmd := contract.TakedownCommand{
		TakedownID: row.takedownID, ItemID: req.ItemID, Reason: req.Reason, CaseRef: req.CaseRef,
		RequestedBy: tokenID, RequestedAt: row.receivedAt, ExpiresAt: row.expiresAt,
	}
	msg, err := contract.Encode(s.cfg.Topics.Takedowns, cmd.ItemID, cmd)
	if err != nil { // cannot happen: the command is plain data
		s.takedowns.release()
		s.answer(w, row, http.StatusInternalServerError, "internal", errorBody{Error: "internal", Message: err.Error(), Status: "failed", TakedownID: cmd.TakedownID, ItemID: cmd.ItemID}, 0)
		return
	}
	calls, answered := s.send(row.expiresAt, msg)
	defer close(answered)

	sync := time.NewTimer(s.cfg.SyncTimeout)
	defer sync.Stop()
	var call *syncbridge.Call
	var done <-chan struct{} // call's, once published
wait:
	for {
		select {
		case call = <-calls:
			calls, done = nil, call.Done()
		case <-done:
			break wait
		case <-sync.C:
			break wait
		case <-s.hurry:
			break wait
		case <-r.Context().Done():
			s.audit.answered(row, 0, outcomeClientGone)
			return
		}
	}
	if call != nil {
		if _, err := call.Result(); err == nil || !errors.Is(err, syncbridge.ErrPending) {
			s.finish(w, r, row, cmd, call)
			return
		}
	}
	s.accepted(w, row, cmd)
}

// send starts publishing msg over the Bridge in a goroutine, valid until
// expires, and returns a channel that yields its Call once published (or
// refused), and a channel for the caller to close once it has answered:
// then the Call is cancelled (the outcome is in the database) and the
// takedown's admission released.
func (s *Server) send(expires time.Time, msg syncbridge.Message) (<-chan *syncbridge.Call, chan struct{}) {
	calls := make(chan *syncbridge.Call, 1)
	answered := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.takedowns.release()
		ctx, cancel := context.WithDeadline(s.closing, expires)
		defer cancel()
		call := s.cfg.Bridge.Go(ctx, msg)
		calls <- call
		select {
		case <-call.Done():
		case <-answered:
		}
	}()
	return calls, answered
}

// finish answers a takedown whose Call ended.
func (s *Server) finish(w http.ResponseWriter, r *http.Request, row *auditRow, cmd contract.TakedownCommand, call *syncbridge.Call) {
	reply, err := call.Result()
	if err == nil {
		var res contract.TakedownResult
		if derr := contract.Decode(reply, &res); derr == nil && res.TakedownID == cmd.TakedownID && res.Status != contract.StatusPending {
			s.answerResult(w, row, res)
			return
		}
		err = fmt.Errorf("unexpected reply %q", reply.Value)
	}
	var re *syncbridge.RemoteError
	switch {
	case notSent(err):
		o := errorOutcome(err)
		s.answer(w, row, http.StatusServiceUnavailable, outcomeNotSent, errorBody{
			Error: o.code, Message: "the takedown was not sent (" + o.message + "); it will not be applied; retry later",
			Status: "failed", TakedownID: cmd.TakedownID, ItemID: cmd.ItemID,
		}, 1)
		return
	case errors.As(err, &re) && re.Code == contract.CodeInvalid:
		// Deterministic: the command is refused whenever it is delivered.
		s.answer(w, row, http.StatusBadGateway, "bad_gateway", errorBody{
			Error: "bad_gateway", Message: "the items service refused the command: " + re.Description + "; it was not applied",
			Status: "failed", TakedownID: cmd.TakedownID, ItemID: cmd.ItemID,
		}, 0)
		return
	}
	// The command may have been delivered, and may be delivered again:
	// fence it off, and answer what the items service recorded.
	s.log.Warn("takedown failed; cancelling it", "takedown_id", cmd.TakedownID, "err", err)
	if res, ferr := s.fence(r.Context(), contract.ActionCancel, cmd.TakedownID, cmd.ItemID, cmd.ExpiresAt); ferr == nil && res.Status != contract.StatusPending {
		s.answerResult(w, row, res)
		return
	} else if ferr != nil {
		s.log.Warn("takedown not cancelled; answering 202", "takedown_id", cmd.TakedownID, "err", ferr)
	}
	s.accepted(w, row, cmd)
}

// fence sends a fence (contract.ActionCancel or ActionExpire) for a
// takedown, keyed by its ID, and returns the outcome the items service
// recorded. It waits at most QueryTimeout, less when the Server must
// hurry.
func (s *Server) fence(ctx context.Context, action, takedownID, itemID string, expires time.Time) (contract.TakedownResult, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.QueryTimeout)
	defer cancel()
	stop := context.AfterFunc(s.closing, cancel)
	defer stop()
	go func() {
		select {
		case <-s.hurry:
			cancel()
		case <-ctx.Done():
		}
	}()
	msg, err := contract.Encode(s.cfg.Topics.Takedowns, takedownID, contract.TakedownCommand{
		TakedownID: takedownID, ItemID: itemID, Action: action, ExpiresAt: expires,
	})
	if err != nil {
		return contract.TakedownResult{}, err
	}
	reply, err := s.cfg.Bridge.Request(ctx, msg)
	if err != nil {
		return contract.TakedownResult{}, err
	}
	var res contract.TakedownResult
	if err := contract.Decode(reply, &res); err != nil {
		return contract.TakedownResult{}, err
	}
	if res.TakedownID != takedownID {
		return contract.TakedownResult{}, fmt.Errorf("reply about takedown %q", res.TakedownID)
	}
	return res, nil
}

// accepted answers 202: the takedown was sent (or is being sent) and is
// not confirmed yet.
func (s *Server) accepted(w http.ResponseWriter, row *auditRow, cmd contract.TakedownCommand) {
	loc := "/v1/takedowns/" + cmd.TakedownID
	w.Header().Set("Location", loc)
	s.answer(w, row, http.StatusAccepted, outcomeAccepted, pendingBody{TakedownID: cmd.TakedownID, ItemID: cmd.ItemID, Status: contract.StatusPending, Location: loc}, 1)
}

// answerResult answers a takedown's recorded outcome.
func (s *Server) answerResult(w http.ResponseWriter, row *auditRow, res contract.TakedownResult) {
	status, body, retry := resultAnswer(res)
	s.answer(w, row, status, res.Status, body, retry)
}

// answer audits, then writes, the answer to a takedown request.
func (s *Server) answer(w http.ResponseWriter, row *auditRow, status int, outcome string, body any, retry int) {
	s.audit.answered(row, status, outcome)
	writeJSON(w, status, body, retryAfter(retry))
}

// resultAnswer maps a takedown's outcome to an HTTP answer: the same for
// the POST that made it and for every poll of it.
func resultAnswer(res contract.TakedownResult) (status int, body any, retry int) {
	failed := func(status int, code, message string) (int, any, int) {
		return status, errorBody{Error: code, Message: message, Status: "failed", TakedownID: res.TakedownID, ItemID: res.ItemID}, 0
	}
	switch res.Status {
	case contract.StatusRemoved, contract.StatusAlreadyRemoved:
		return http.StatusOK, res, 0
	case contract.StatusPending:
		loc := "/v1/takedowns/" + res.TakedownID
		return http.StatusAccepted, pendingBody{TakedownID: res.TakedownID, ItemID: res.ItemID, Status: contract.StatusPending, Location: loc}, 1
	case contract.StatusNotFound:
		return failed(http.StatusNotFound, "not_found", fmt.Sprintf("no item %q; the takedown was not applied", res.ItemID))
	case contract.StatusExpired:
		return failed(http.StatusGatewayTimeout, "expired", "the items service did not take the takedown up before it expired; it was not applied and never will be; retrying is safe")
	case contract.StatusCancelled:
		status, body, _ := failed(http.StatusServiceUnavailable, "cancelled", "the takedown could not be applied and was cancelled; it was not applied and never will be; retry later")
		return status, body, 1
	}
	return failed(http.StatusBadGateway, "bad_gateway", fmt.Sprintf("the items service answered an unknown status %q", res.Status))
}

// pendingBody is the body of a 202 answer about a takedown.
type pendingBody struct {
	TakedownID string `json:"takedown_id"`
	ItemID     string `json:"item_id"`
	Status     string `json:"status"`
	Location   string `json:"location"`
}

// notSent reports whether err says that a request was certainly not
// published: refused by the Bridge (ErrOverloaded, ErrClosed before
// sending), or ErrPublish, which the Bridge returns only when the
// transport says the message was not written.
func notSent(err error) bool {
	return errors.Is(err, syncbridge.ErrOverloaded) || errors.Is(err, syncbridge.ErrPublish) || errors.Is(err, syncbridge.ErrNotSent)
}

func (s *Server) getTakedown(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.authorize(w, r); !ok {
		return
	}
	id := r.PathValue("id")
	wait, err := s.parseWait(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error(), 0)
		return
	}
	if !contract.ValidID(id) {
		writeError(w, http.StatusNotFound, "not_found", "no such takedown", 0)
		return
	}
	if !s.reads.tryAcquire() {
		writeError(w, http.StatusServiceUnavailable, "overloaded", "too many reads in progress; retry later", 1)
		return
	}
	defer s.reads.release()
	deadline := time.Now().Add(wait)
	for {
		res, err := s.lookupTakedown(r.Context(), id)
		if err != nil {
			o := errorOutcome(err)
			if o.code == contract.CodeNotFound {
				o.message = "no such takedown"
			}
			writeError(w, o.status, o.code, o.message, o.retryAfter)
			return
		}
		left := time.Until(deadline)
		if res.Status != contract.StatusPending || left <= 0 {
			status, body, retry := resultAnswer(res)
			if res.Status == contract.StatusPending {
				w.Header().Set("Location", "/v1/takedowns/"+id)
			}
			writeJSON(w, status, body, retryAfter(retry))
			return
		}
		t := time.NewTimer(min(left, s.cfg.PollInterval))
		select {
		case <-t.C:
		case <-s.hurry:
			deadline = time.Now() // answer what is known now
		case <-r.Context().Done():
			t.Stop()
			return
		}
		t.Stop()
	}
}

// lookupTakedown returns a takedown's outcome from the items service, or
// StatusPending for a takedown the audit trail knows of that the items
// service has not recorded yet. Past its expiry such a takedown is fenced
// off (contract.ActionExpire), so that the answer is final.
func (s *Server) lookupTakedown(ctx context.Context, id string) (contract.TakedownResult, error) {
	var res contract.TakedownResult
	err := s.query(ctx, contract.QueryTakedown, id, &res)
	if err == nil {
		return res, nil
	}
	if re, ok := errors.AsType[*syncbridge.RemoteError](err); !ok || re.Code != contract.CodeNotFound {
		return res, err
	}
	a, found, aerr := s.audit.lookup(ctx, id)
	switch {
	case aerr != nil:
		s.log.Warn("audit lookup failed", "takedown_id", id, "err", aerr)
		return res, syncbridge.NewRemoteError(contract.CodeUnavailable, "the audit trail could not be read")
	case !found:
		return res, err // unknown to both
	case a.outcome == outcomeNotSent:
		// Answered 503: never published, never applied.
		return contract.TakedownResult{TakedownID: id, ItemID: a.itemID, Status: contract.StatusCancelled}, nil
	case time.Now().Before(a.expiresAt):
		return contract.TakedownResult{TakedownID: id, ItemID: a.itemID, Status: contract.StatusPending}, nil
	}
	return s.fence(ctx, contract.ActionExpire, id, a.itemID, a.expiresAt)
}

// parseWait parses the ?wait= duration of a long poll, capped at MaxWait.
func (s *Server) parseWait(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("wait must be a duration such as 10s, not %q", v)
	}
	return min(d, s.cfg.MaxWait), nil
}

func (s *Server) getItem(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !contract.ValidID(id) {
		writeError(w, http.StatusNotFound, "not_found", "no such item", 0)
		return
	}
	if !s.reads.tryAcquire() {
		writeError(w, http.StatusServiceUnavailable, "overloaded", "too many reads in progress; retry later", 1)
		return
	}
	defer s.reads.release()
	var it contract.Item
	if err := s.query(r.Context(), contract.QueryItem, id, &it); err != nil {
		o := errorOutcome(err)
		writeError(w, o.status, o.code, o.message, o.retryAfter)
		return
	}
	writeJSON(w, http.StatusOK, it)
}

// reportRequest is the body of POST /v1/items/{id}/reports.
type reportRequest struct {
	Reason  string `json:"reason"`
	Details string `json:"details"`
}

func (s *Server) postReport(w http.ResponseWriter, r *http.Request) {
	itemID := r.PathValue("id")
	if !contract.ValidID(itemID) {
		writeError(w, http.StatusNotFound, "not_found", "no such item", 0)
		return
	}
	var req reportRequest
	if status, err := readJSON(w, r, s.cfg.MaxBody, &req); err != nil {
		writeError(w, status, errorCode(status), err.Error(), 0)
		return
	}
	if strings.TrimSpace(req.Reason) == "" || len(req.Reason) > contract.MaxTextLen || len(req.Details) > contract.MaxTextLen ||
		!contract.ValidText(req.Reason) || !contract.ValidText(req.Details) {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("reason is required; reason and details are at most %d bytes, without control characters", contract.MaxTextLen), 0)
		return
	}
	if !s.reads.tryAcquire() {
		writeError(w, http.StatusServiceUnavailable, "overloaded", "too many requests in progress; the report was not sent; retry later", 1)
		return
	}
	defer s.reads.release()
	rep := contract.Report{ReportID: newID("rpt"), ItemID: itemID, Reason: req.Reason, Details: req.Details, SubmittedAt: db.Now()}
	msg, err := contract.Encode(s.cfg.Topics.Reports, itemID, rep)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error(), 0)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.QueryTimeout)
	defer cancel()
	if err := s.cfg.Transport.Publish(ctx, msg); err != nil {
		if errors.Is(err, syncbridge.ErrNotSent) {
			writeError(w, http.StatusServiceUnavailable, "unavailable", "the report was not sent; retry later", 1)
			return
		}
		// Perhaps written: the report may be recorded (once, by its ID).
		s.reports.add(rep.ReportID, reportAt{itemID: itemID, at: rep.SubmittedAt})
		loc := "/v1/reports/" + rep.ReportID
		w.Header().Set("Location", loc)
		writeJSON(w, http.StatusAccepted, contract.ReportStatus{ReportID: rep.ReportID, ItemID: itemID, Status: contract.StatusReceived, SubmittedAt: rep.SubmittedAt})
		return
	}
	s.reports.add(rep.ReportID, reportAt{itemID: itemID, at: rep.SubmittedAt})
	loc := "/v1/reports/" + rep.ReportID
	w.Header().Set("Location", loc)
	writeJSON(w, http.StatusAccepted, contract.ReportStatus{ReportID: rep.ReportID, ItemID: itemID, Status: contract.StatusReceived, SubmittedAt: rep.SubmittedAt})
}

func (s *Server) getReport(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !contract.ValidID(id) {
		writeError(w, http.StatusNotFound, "not_found", "no such report", 0)
		return
	}
	if !s.reads.tryAcquire() {
		writeError(w, http.StatusServiceUnavailable, "overloaded", "too many reads in progress; retry later", 1)
		return
	}
	defer s.reads.release()
	var st contract.ReportStatus
	err := s.query(r.Context(), contract.QueryReport, id, &st)
	if err == nil {
		writeJSON(w, http.StatusOK, st)
		return
	}
	o := errorOutcome(err)
	if o.code == contract.CodeNotFound {
		if rep, ok := s.reports.get(id); ok {
			writeJSON(w, http.StatusOK, contract.ReportStatus{ReportID: id, ItemID: rep.itemID, Status: contract.StatusReceived, SubmittedAt: rep.at})
			return
		}
		o.message = "no such report"
	}
	writeError(w, o.status, o.code, o.message, o.retryAfter)
}

func (s *Server) health(w http.ResponseWriter, _ *http.Request) {
	st := s.cfg.Bridge.Stats()
	status, code := "ok", http.StatusOK
	if s.draining.Load() {
		status, code = "shutting_down", http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{
		"status":              status,
		"bridge_in_flight":    st.InFlight,
		"takedowns_in_flight": len(s.takedowns),
		"reads_in_flight":     len(s.reads),
	})
}

// query asks the items service, bounded by QueryTimeout, and decodes the
// reply into v.
func (s *Server) query(ctx context.Context, kind, id string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	msg, err := contract.Encode(s.cfg.Topics.Queries, id, contract.Query{Kind: kind, ID: id})
	if err != nil {
		return err
	}
	reply, err := s.cfg.Bridge.Request(ctx, msg)
	if err != nil {
		return err
	}
	return contract.Decode(reply, v)
}

// authorize checks r's bearer token and answers 401 when it is missing or
// wrong.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) (tokenID string, ok bool) {
	if id, ok := s.cfg.Tokens.Check(r); ok {
		return id, true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="takedown"`)
	writeError(w, http.StatusUnauthorized, "unauthorized", "a valid bearer token is required", 0)
	return "", false
}

// outcome is how a read over the Bridge failed, as HTTP.
type outcome struct {
	status     int
	code       string
	message    string
	retryAfter int // seconds; 0 sends no Retry-After
}

// errorOutcome maps a Bridge error to HTTP.
func errorOutcome(err error) outcome {
	var re *syncbridge.RemoteError
	switch {
	case errors.As(err, &re):
		switch re.Code {
		case contract.CodeNotFound:
			return outcome{status: http.StatusNotFound, code: re.Code, message: re.Description}
		case contract.CodeInvalid:
			return outcome{status: http.StatusBadRequest, code: re.Code, message: re.Description}
		case contract.CodeUnavailable:
			return outcome{status: http.StatusServiceUnavailable, code: re.Code, message: re.Description, retryAfter: 1}
		}
		return outcome{status: http.StatusBadGateway, code: "bad_gateway", message: "items service failed: " + re.Error()}
	case errors.Is(err, syncbridge.ErrOverloaded):
		return outcome{status: http.StatusServiceUnavailable, code: "overloaded", message: "too many requests in flight; retry later", retryAfter: 1}
	case errors.Is(err, syncbridge.ErrPublish):
		return outcome{status: http.StatusServiceUnavailable, code: "unavailable", message: "the request could not be sent; retry later", retryAfter: 1}
	case errors.Is(err, syncbridge.ErrClosed):
		return outcome{status: http.StatusServiceUnavailable, code: "shutting_down", message: "the API is shutting down; retry later", retryAfter: 5}
	case errors.Is(err, syncbridge.ErrNoReply) && errors.Is(err, context.DeadlineExceeded):
		return outcome{status: http.StatusGatewayTimeout, code: "timeout", message: "the items service did not answer in time"}
	case errors.Is(err, syncbridge.ErrNoReply), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return outcome{status: http.StatusServiceUnavailable, code: "cancelled", message: "the request was cancelled; retry later", retryAfter: 1}
	}
	return outcome{status: http.StatusBadGateway, code: "bad_gateway", message: err.Error()}
}

// errorBody is the body of every error answer. Status "failed" on a
// takedown means it was not applied and never will be.
type errorBody struct {
	Error      string `json:"error"`
	Message    string `json:"message"`
	Status     string `json:"status,omitempty"`
	TakedownID string `json:"takedown_id,omitempty"`
	ItemID     string `json:"item_id,omitempty"`
}

// readJSON reads r's body, at most max bytes, and decodes it strictly
// (contract.Strict) into v. It returns 413 for a body over max bytes,
// whatever it holds, and 400 for anything else wrong, with the error.
func readJSON(w http.ResponseWriter, r *http.Request, max int64, v any) (int, error) {
	if r.ContentLength > max {
		return http.StatusRequestEntityTooLarge, fmt.Errorf("the body is larger than %d bytes", max)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return http.StatusRequestEntityTooLarge, fmt.Errorf("the body is larger than %d bytes", mbe.Limit)
	}
	if err != nil {
		return http.StatusBadRequest, fmt.Errorf("the body could not be read: %v", err)
	}
	if err := contract.Strict(body, v); err != nil {
		return http.StatusBadRequest, fmt.Errorf("malformed JSON: %v", err)
	}
	return 0, nil
}

// errorCode returns the error code of readJSON's status.
func errorCode(status int) string {
	if status == http.StatusRequestEntityTooLarge {
		return "too_large"
	}
	return "bad_request"
}

type retryAfter int

// writeJSON writes v as JSON with status, and a Retry-After header when
// given a positive retryAfter.
func writeJSON(w http.ResponseWriter, status int, v any, opts ...retryAfter) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	for _, ra := range opts {
		if ra > 0 {
			h.Set("Retry-After", strconv.Itoa(int(ra)))
		}
	}
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, message string, retry int) {
	writeJSON(w, status, errorBody{Error: code, Message: message}, retryAfter(retry))
}

// newID returns a random ID with the prefix, such as "td-3kq7yv2m4rwe5xhn".
func newID(prefix string) string {
	return prefix + "-" + strings.ToLower(rand.Text()[:16])
}
