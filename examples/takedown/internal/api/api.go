// Package api is the synchronous side of the takedown example: the HTTP API
// through which the police take an item down, and through which users
// report dubious items.
//
// A takedown is a request over a syncbridge Bridge to the items service.
// The API answers 200 once the items service has confirmed the removal; when
// the confirmation takes longer than the sync timeout it answers 202
// Accepted with a Location to poll, and keeps the request's Call alive until
// its own, longer, expiry. Reports are fire-and-forget: published on a
// topic, answered 202 at once, with a status to poll.
//
// The API keeps no catalogue of its own: items, reports and finished
// takedowns are queried from the items service over the Bridge, so that any
// number of replicas can serve the same clients. Only the Calls of the
// takedowns it answered 202 for, and the reports it published recently,
// live in a replica's memory, bounded.
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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/syncbridge/syncbridge"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/contract"
)

// Defaults of the Config fields.
const (
	DefaultSyncTimeout = 3 * time.Second
	DefaultCallTimeout = 2 * time.Minute
	DefaultMaxWait     = 30 * time.Second
	DefaultMaxPending  = 1000
	DefaultResultTTL   = 10 * time.Minute
	DefaultMaxBody     = 4 << 10
)

// Config configures a Server. Bridge, Transport and Tokens are required;
// zero values of the other fields mean their defaults.
type Config struct {
	// Bridge carries takedown commands and queries to the items service.
	// The Server does not own it.
	Bridge *syncbridge.Bridge
	// Transport publishes users' reports. The Server does not own it.
	Transport syncbridge.Transport
	// Topics names the topics; Replies is ignored (the Bridge has its
	// own). Zero means contract.DefaultTopics("").
	Topics contract.Topics
	// Tokens are the bearer tokens that may take items down.
	Tokens *Tokens
	// Audit receives one record per takedown attempt (token ID, item,
	// reason, case reference, outcome, latency), and one more when a
	// takedown is accepted for later. Nil discards them.
	Audit *slog.Logger
	// SyncTimeout is how long a request waits for the items service before
	// the API answers 202 Accepted (takedowns) or 504 (queries). Default
	// DefaultSyncTimeout.
	SyncTimeout time.Duration
	// CallTimeout is how long a takedown's Call lives, answered 202 or not.
	// It must not be shorter than SyncTimeout. Default DefaultCallTimeout.
	CallTimeout time.Duration
	// MaxWait caps the ?wait= long poll of GET /v1/takedowns/{id}. Default
	// DefaultMaxWait.
	MaxWait time.Duration
	// MaxPending bounds the takedowns kept for polling, pending or
	// finished, and the reports remembered as received. Past it, a
	// takedown that is not confirmed in time gets 503 instead of 202.
	// Default DefaultMaxPending.
	MaxPending int
	// ResultTTL is how long a finished takedown can be polled for. Default
	// DefaultResultTTL.
	ResultTTL time.Duration
	// MaxBody caps request bodies, in bytes; past it the API answers 413.
	// Default DefaultMaxBody.
	MaxBody int64
}

// Server is the HTTP API. It is an http.Handler; create it with New, serve
// it with an http.Server, and Close it once the server stopped.
type Server struct {
	cfg     Config
	audit   *slog.Logger
	mux     *http.ServeMux
	pending *store
	reports *fifo
	closing context.Context // cancelled by Close: ends every Call
	stop    context.CancelFunc

	mu     sync.Mutex     // protects closed and the Add side of wg
	closed bool           // Close was called
	wg     sync.WaitGroup // one per takedown Call being watched
}

// New returns a Server for cfg, or an error if cfg is incomplete or
// inconsistent.
func New(cfg Config) (*Server, error) {
	if cfg.Bridge == nil || cfg.Transport == nil || cfg.Tokens == nil {
		return nil, errors.New("api: Bridge, Transport and Tokens are required")
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
	def(&cfg.CallTimeout, DefaultCallTimeout)
	def(&cfg.MaxWait, DefaultMaxWait)
	def(&cfg.ResultTTL, DefaultResultTTL)
	if cfg.MaxPending == 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	switch {
	case cfg.SyncTimeout < 0 || cfg.CallTimeout < 0 || cfg.MaxWait < 0 || cfg.ResultTTL < 0:
		return nil, errors.New("api: durations must not be negative")
	case cfg.CallTimeout < cfg.SyncTimeout:
		return nil, fmt.Errorf("api: call timeout %v is shorter than sync timeout %v", cfg.CallTimeout, cfg.SyncTimeout)
	case cfg.MaxPending < 0 || cfg.MaxBody < 0:
		return nil, errors.New("api: limits must not be negative")
	}
	s := &Server{
		cfg:     cfg,
		audit:   cfg.Audit,
		mux:     http.NewServeMux(),
		pending: newStore(cfg.MaxPending, cfg.ResultTTL),
		reports: newFIFO(cfg.MaxPending),
	}
	if s.audit == nil {
		s.audit = slog.New(slog.DiscardHandler)
	}
	s.closing, s.stop = context.WithCancel(context.Background())
	s.mux.HandleFunc("POST /v1/takedowns", s.postTakedown)
	s.mux.HandleFunc("GET /v1/takedowns/{id}", s.getTakedown)
	s.mux.HandleFunc("GET /v1/items/{id}", s.getItem)
	s.mux.HandleFunc("POST /v1/items/{id}/reports", s.postReport)
	s.mux.HandleFunc("GET /v1/reports/{id}", s.getReport)
	s.mux.HandleFunc("GET /healthz", s.health)
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Close ends the takedowns still waiting (they fail with ErrNoReply and
// context.Canceled, and are audited so) and returns once each is audited.
// Call it after the http.Server stopped and, for a graceful stop, after
// Bridge.Shutdown let them finish. Close is idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.pending.close()
	s.stop()
	s.wg.Wait()
}

// Pending returns the number of takedowns kept for polling.
func (s *Server) Pending() int { return s.pending.len() }

// takedownRequest is the body of POST /v1/takedowns.
type takedownRequest struct {
	ItemID  string `json:"item_id"`
	Reason  string `json:"reason"`
	CaseRef string `json:"case_ref"`
}

func (req *takedownRequest) validate() error {
	switch {
	case !contract.ValidID(req.ItemID):
		return errors.New("item_id is required: 1 to 64 letters, digits, '.', '-' or '_'")
	case strings.TrimSpace(req.Reason) == "" || len(req.Reason) > contract.MaxTextLen:
		return fmt.Errorf("reason is required, at most %d bytes", contract.MaxTextLen)
	case strings.TrimSpace(req.CaseRef) == "" || len(req.CaseRef) > 100:
		return errors.New("case_ref is required, at most 100 bytes")
	}
	return nil
}

// takedown is one takedown request, from the POST until its Call ends.
type takedown struct {
	id      string
	cmd     contract.TakedownCommand
	tokenID string
	remote  string
	start   time.Time
	cancel  context.CancelFunc // ends the Call

	done chan struct{} // closed once res and end are set
	res  outcome
	end  time.Time
}

// endedAt returns when td's Call ended, and whether it did.
func (td *takedown) endedAt() (time.Time, bool) {
	select {
	case <-td.done:
		return td.end, true
	default:
		return time.Time{}, false
	}
}

func (s *Server) postTakedown(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	tokenID, ok := s.authorize(w, r)
	if !ok {
		s.audit.Warn("takedown rejected", "outcome", "unauthorized", "http_status", http.StatusUnauthorized, "remote", r.RemoteAddr)
		return
	}
	var req takedownRequest
	if status, err := decodeJSON(w, r, s.cfg.MaxBody, &req); err != nil {
		code := errorCode(status)
		writeError(w, status, code, err.Error(), 0)
		s.audit.Warn("takedown rejected", "token_id", tokenID, "outcome", code, "http_status", status, "remote", r.RemoteAddr)
		return
	}
	if err := req.validate(); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error(), 0)
		s.audit.Warn("takedown rejected", "token_id", tokenID, "item_id", req.ItemID, "outcome", "bad_request", "http_status", http.StatusBadRequest, "remote", r.RemoteAddr)
		return
	}
	td := &takedown{
		id:      newID("td"),
		tokenID: tokenID,
		remote:  r.RemoteAddr,
		start:   start,
		done:    make(chan struct{}),
	}
	td.cmd = contract.TakedownCommand{
		TakedownID: td.id, ItemID: req.ItemID, Reason: req.Reason, CaseRef: req.CaseRef,
		RequestedBy: tokenID, RequestedAt: start.UTC(),
	}
	msg, err := contract.Encode(s.cfg.Topics.Takedowns, td.cmd.ItemID, td.cmd)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error(), 0)
		return
	}
	if !s.startTakedown(r.Context(), td, msg) {
		writeError(w, http.StatusServiceUnavailable, "shutting_down", "the API is shutting down", 5)
		return
	}

	t := time.NewTimer(s.cfg.SyncTimeout)
	defer t.Stop()
	select {
	case <-td.done:
		s.writeTakedown(w, td)
		return
	case <-t.C:
	case <-r.Context().Done():
		// The client is gone: keep the Call all the same, so that its
		// outcome can be polled and is audited.
	}
	if !s.pending.add(td) {
		td.cancel()
		writeError(w, http.StatusServiceUnavailable, "too_many_pending", "too many takedowns awaiting confirmation; retry later (takedowns are idempotent)", 1)
		return
	}
	s.audit.LogAttrs(context.Background(), slog.LevelInfo, "takedown accepted", s.auditAttrs(td, slog.String("outcome", "accepted"), slog.Int("http_status", http.StatusAccepted))...)
	loc := "/v1/takedowns/" + td.id
	w.Header().Set("Location", loc)
	w.Header().Set("Retry-After", "1")
	writeJSON(w, http.StatusAccepted, pendingBody{TakedownID: td.id, ItemID: td.cmd.ItemID, Status: "pending", Location: loc})
}

// pendingBody is the body of a 202 answer about a takedown.
type pendingBody struct {
	TakedownID string `json:"takedown_id"`
	ItemID     string `json:"item_id"`
	Status     string `json:"status"`
	Location   string `json:"location"`
}

// startTakedown sends msg, td's command, over the Bridge, in a Call of its own
// that outlives r (context.WithoutCancel) until CallTimeout or Close, and
// watches it: when it ends, the outcome is audited and td.done closed. It
// reports false, having started nothing, after Close.
func (s *Server) startTakedown(reqCtx context.Context, td *takedown, msg syncbridge.Message) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(reqCtx), s.cfg.CallTimeout)
	stop := context.AfterFunc(s.closing, cancel)
	td.cancel = cancel
	s.wg.Add(1)
	// Go returns once the command is published, which takes as long as the
	// transport needs (up to CallTimeout when it is stuck): call it in this
	// goroutine, so that the handler's wait stays bounded by SyncTimeout.
	go func() {
		defer s.wg.Done()
		defer stop()
		defer cancel()
		call := s.cfg.Bridge.Go(ctx, msg)
		reply, err := call.Wait(context.Background())
		td.res = takedownOutcome(reply, err)
		td.end = time.Now()
		// Audit before anyone can see the outcome.
		level := slog.LevelInfo
		if td.res.status >= 500 {
			level = slog.LevelWarn
		}
		s.audit.LogAttrs(context.Background(), level, "takedown", s.auditAttrs(td,
			slog.String("outcome", td.res.auditOutcome()),
			slog.Int("http_status", td.res.status),
			slog.String("correlation_id", call.ID()))...)
		close(td.done)
	}()
	return true
}

// auditAttrs returns the audit attributes of td, then extra. The latency
// runs from the POST's arrival until now.
func (s *Server) auditAttrs(td *takedown, extra ...slog.Attr) []slog.Attr {
	return append([]slog.Attr{
		slog.String("takedown_id", td.id),
		slog.String("token_id", td.tokenID),
		slog.String("item_id", td.cmd.ItemID),
		slog.String("reason", td.cmd.Reason),
		slog.String("case_ref", td.cmd.CaseRef),
		slog.String("remote", td.remote),
		slog.Float64("latency_ms", float64(time.Since(td.start).Microseconds())/1000),
	}, extra...)
}

// writeTakedown writes td's outcome; td must have ended.
func (s *Server) writeTakedown(w http.ResponseWriter, td *takedown) {
	o := td.res
	if o.result != nil {
		writeJSON(w, o.status, o.result)
		return
	}
	writeJSON(w, o.status, errorBody{
		Error: o.code, Message: o.message, Status: "failed",
		TakedownID: td.id, ItemID: td.cmd.ItemID,
	}, retryAfter(o.retryAfter))
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
	td, ok := s.pending.get(id)
	if !ok {
		// Not one of this replica's: it may have been answered at once, by
		// this replica or another. The items service knows the ones it
		// applied.
		s.lookupTakedown(w, r, id)
		return
	}
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-td.done:
		case <-t.C:
		case <-r.Context().Done():
		}
	}
	select {
	case <-td.done:
	default:
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusAccepted, pendingBody{TakedownID: td.id, ItemID: td.cmd.ItemID, Status: "pending", Location: "/v1/takedowns/" + td.id})
		return
	}
	if td.res.expired {
		// No reply in time: perhaps the reply was lost and the takedown
		// applied all the same.
		var res contract.TakedownResult
		if err := s.query(r.Context(), contract.QueryTakedown, td.id, &res); err == nil {
			writeJSON(w, http.StatusOK, res)
			return
		}
	}
	s.writeTakedown(w, td)
}

// lookupTakedown answers GET /v1/takedowns/{id} from the items service.
func (s *Server) lookupTakedown(w http.ResponseWriter, r *http.Request, id string) {
	var res contract.TakedownResult
	if err := s.query(r.Context(), contract.QueryTakedown, id, &res); err != nil {
		o := errorOutcome(err)
		if o.code == contract.CodeNotFound {
			o.message = "unknown takedown: not awaiting confirmation on this replica, and not applied by the items service"
		}
		writeError(w, o.status, o.code, o.message, o.retryAfter)
		return
	}
	writeJSON(w, http.StatusOK, res)
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
	if status, err := decodeJSON(w, r, s.cfg.MaxBody, &req); err != nil {
		writeError(w, status, errorCode(status), err.Error(), 0)
		return
	}
	if strings.TrimSpace(req.Reason) == "" || len(req.Reason) > contract.MaxTextLen || len(req.Details) > contract.MaxTextLen {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("reason is required; reason and details are at most %d bytes", contract.MaxTextLen), 0)
		return
	}
	rep := contract.Report{ReportID: newID("rpt"), ItemID: itemID, Reason: req.Reason, Details: req.Details, SubmittedAt: time.Now().UTC()}
	msg, err := contract.Encode(s.cfg.Topics.Reports, itemID, rep)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error(), 0)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.SyncTimeout)
	defer cancel()
	if err := s.cfg.Transport.Publish(ctx, msg); err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "report not published; retry later", 1)
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
	writeJSON(w, http.StatusOK, map[string]any{
		"status":    "ok",
		"in_flight": st.InFlight,
		"pending":   s.pending.len(),
	})
}

// query asks the items service, bounded by SyncTimeout, and decodes the
// reply into v.
func (s *Server) query(ctx context.Context, kind, id string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.SyncTimeout)
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

// outcome is how a request over the Bridge ended, as HTTP.
type outcome struct {
	status     int
	result     *contract.TakedownResult // on success
	code       string                   // on failure
	message    string
	retryAfter int  // seconds; 0 sends no Retry-After
	expired    bool // no reply before the Call's expiry
}

func (o outcome) auditOutcome() string {
	if o.result != nil {
		return o.result.Status
	}
	return o.code
}

// takedownOutcome maps the end of a takedown's Call to HTTP.
func takedownOutcome(reply *syncbridge.Message, err error) outcome {
	if err != nil {
		o := errorOutcome(err)
		if o.expired {
			o.code = "expired"
			o.message = "the items service did not confirm the takedown in time; it may or may not have been applied, and retrying is safe (takedowns are idempotent)"
		}
		return o
	}
	var res contract.TakedownResult
	if err := contract.Decode(reply, &res); err != nil {
		return outcome{status: http.StatusBadGateway, code: "bad_gateway", message: err.Error()}
	}
	return outcome{status: http.StatusOK, result: &res}
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
		return outcome{status: http.StatusGatewayTimeout, code: "timeout", message: "the items service did not answer in time", expired: true}
	case errors.Is(err, syncbridge.ErrNoReply):
		return outcome{status: http.StatusServiceUnavailable, code: "cancelled", message: "the request was cancelled; retry later", retryAfter: 1}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return outcome{status: http.StatusServiceUnavailable, code: "cancelled", message: err.Error(), retryAfter: 1}
	}
	return outcome{status: http.StatusInternalServerError, code: "internal", message: err.Error()}
}

// errorBody is the body of every error answer.
type errorBody struct {
	Error      string `json:"error"`
	Message    string `json:"message"`
	Status     string `json:"status,omitempty"`
	TakedownID string `json:"takedown_id,omitempty"`
	ItemID     string `json:"item_id,omitempty"`
}

// decodeJSON decodes r's body, one JSON object of at most max bytes with no
// unknown fields, into v. It returns 413 or 400 with the error.
func decodeJSON(w http.ResponseWriter, r *http.Request, max int64, v any) (int, error) {
	r.Body = http.MaxBytesReader(w, r.Body, max)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if dec.Decode(&struct{}{}) != io.EOF {
			err = errors.New("the body must hold exactly one JSON object")
		}
	}
	if err == nil {
		return 0, nil
	}
	if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return http.StatusRequestEntityTooLarge, fmt.Errorf("the body is larger than %d bytes", mbe.Limit)
	}
	if errors.Is(err, io.EOF) {
		err = errors.New("the body is empty")
	}
	return http.StatusBadRequest, fmt.Errorf("malformed JSON: %v", err)
}

// errorCode returns the error code of decodeJSON's status.
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
