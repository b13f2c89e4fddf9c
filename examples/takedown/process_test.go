package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/syncbridge/syncbridge/examples/takedown/internal/db"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/dbtest"
)

// The example's binary, built once by binary.
var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string // removed by TestMain
)

// binary builds the example into a temporary directory, once, with the
// race detector when the tests have it, and returns its path.
func binary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "takedown-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "takedown")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			binErr = err
			return
		}
		out, err := exec.Command(goTool, append(args, ".")...).CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// osProc is the example running as an operating-system process.
type osProc struct {
	name   string
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{} // closed when it exited
	err    error         // Wait's, once done is closed
}

// startProcess runs the example's binary with args, as name (for the
// logs), and stops it with SIGKILL when the test ends, if it still runs.
func startProcess(t *testing.T, name string, e env, args ...string) *osProc {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Env = append(os.Environ(), "TAKEDOWN_TOKENS="+e["TAKEDOWN_TOKENS"])
	p := &osProc{name: name, cmd: cmd, stdout: newSyncBuffer(), stderr: newSyncBuffer(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s stderr (last 4000 bytes):\n%s", name, tail(p.stderr.String(), 4000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// stop sends SIGTERM and waits for a clean exit.
func (p *osProc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not exit within 60s of SIGTERM", p.name)
	}
	if p.err != nil {
		t.Errorf("%s: %v; stderr:\n%s", p.name, p.err, tail(p.stderr.String(), 4000))
	}
}

// kill sends SIGKILL and waits for the process to die.
func (p *osProc) kill(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Kill()
	<-p.done
}

// deployment is what the processes share: the Kafka brokers and the
// database, and a topic prefix of the test's own.
type deployment struct {
	brokers string
	dsn     string
	prefix  string
	env     env
}

// kfakeSQLite is a deployment on an in-process kfake cluster and an SQLite
// file: what plain go test runs.
func kfakeSQLite(t *testing.T) deployment {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return deployment{brokers: strings.Join(c.ListenAddrs(), ","), dsn: dbtest.SQLite(t), prefix: testPrefix(), env: env{"TAKEDOWN_TOKENS": "tok-police"}}
}

// kafkaPostgres is a deployment on the real Kafka cluster of KAFKA_BROKERS
// and a new PostgreSQL database on TAKEDOWN_PG_URL's server; it skips the
// test when either is unset (fails it with TAKEDOWN_REQUIRE_REAL=1).
func kafkaPostgres(t *testing.T) deployment {
	brokers := dbtest.Require(t, dbtest.EnvKafka)
	dsn := dbtest.Postgres(t)
	return deployment{brokers: brokers, dsn: dsn, prefix: testPrefix(), env: env{"TAKEDOWN_TOKENS": "tok-police"}}
}

func testPrefix() string { return "t" + strings.ToLower(rand.Text()[:8]) + "." }

// items starts an items-service process of d, and waits until it has its
// share of the partitions of each of its consumer groups (takedowns,
// queries, reports): "items service running" comes before the first
// assignment, and a test that expects a takedown confirmed within the API's
// -sync-timeout must not count the group's join against it.
func (d deployment) items(t *testing.T, name string, args ...string) *osProc {
	t.Helper()
	p := startProcess(t, name, d.env, append([]string{"-role", "items", "-brokers", d.brokers, "-topic-prefix", d.prefix, "-db", d.dsn, "-log-level", "debug"}, args...)...)
	p.stdout.waitFor(t, `items service running`)
	for _, g := range []string{"takedowns", "queries", "reports"} {
		p.stderr.waitFor(t, `joined generation" group=`+regexp.QuoteMeta(d.prefix)+`\S*\.`+g+` .*assignments=[1-9]`)
	}
	return p
}

// api starts an API process of d and returns it and its base URL.
func (d deployment) api(t *testing.T, name string, args ...string) (*osProc, string) {
	t.Helper()
	p := startProcess(t, name, d.env, append([]string{"-role", "api", "-brokers", d.brokers, "-topic-prefix", d.prefix, "-db", d.dsn, "-addr", "127.0.0.1:0", "-audit", os.DevNull}, args...)...)
	return p, p.stdout.waitFor(t, `police API listening on (\S+)`)[1]
}

// TestRestartBetweenTakedownAndPoll: a takedown answered 200 and one
// answered 202 (its command waiting in Kafka while the items service is
// down); then the items service and the API both restart. Polled
// afterwards, the first answers exactly what the POST answered, the second
// is removed, and a new takedown of the first item says already_removed.
func TestRestartBetweenTakedownAndPoll(t *testing.T) {
	t.Run("kfake+sqlite", func(t *testing.T) { testRestart(t, kfakeSQLite(t)) })
	t.Run("kafka+postgres", func(t *testing.T) { testRestart(t, kafkaPostgres(t)) })
}

func testRestart(t *testing.T, d deployment) {
	tok := d.env["TAKEDOWN_TOKENS"]
	apiArgs := []string{"-sync-timeout", "2s"}
	items := d.items(t, "items")
	api, base := d.api(t, "api", apiArgs...)

	status, first := post(t, base+"/v1/takedowns", tok, `{"item_id":"itm-1001","reason":"counterfeit","case_ref":"PJ-1"}`)
	if status != http.StatusOK || first["status"] != "removed" {
		t.Fatalf("takedown: %d %v", status, first)
	}
	items.stop(t)
	status, accepted := post(t, base+"/v1/takedowns", tok, `{"item_id":"itm-1002","reason":"counterfeit","case_ref":"PJ-2"}`)
	if status != http.StatusAccepted || accepted["status"] != "pending" {
		t.Fatalf("takedown with the items service down: %d %v", status, accepted)
	}
	api.stop(t)

	d.items(t, "items again")
	_, base = d.api(t, "api again", apiArgs...)
	status, again := get(t, base+"/v1/takedowns/"+first["takedown_id"].(string), tok)
	if status != http.StatusOK || fmt.Sprint(again) != fmt.Sprint(first) {
		t.Errorf("poll after the restarts: %d %v; the POST answered %v", status, again, first)
	}
	status, late := get(t, base+"/v1/takedowns/"+accepted["takedown_id"].(string)+"?wait=30s", tok)
	for status == http.StatusAccepted { // the group may take a while to rebalance
		status, late = get(t, base+"/v1/takedowns/"+accepted["takedown_id"].(string)+"?wait=30s", tok)
	}
	if status != http.StatusOK || late["status"] != "removed" {
		t.Errorf("poll of the takedown accepted before the restarts: %d %v", status, late)
	}
	for _, id := range []string{"itm-1001", "itm-1002"} {
		if status, it := get(t, base+"/v1/items/"+id, ""); status != http.StatusOK || it["taken_down"] != true {
			t.Errorf("%s after the restarts: %d %v", id, status, it)
		}
	}
	status, second := post(t, base+"/v1/takedowns", tok, `{"item_id":"itm-1001","reason":"counterfeit","case_ref":"PJ-1"}`)
	if status != http.StatusOK || second["status"] != "already_removed" || second["removed_by"] != first["takedown_id"] {
		t.Errorf("takedown after the restarts: %d %v", status, second)
	}
	if n := countRows(t, d.dsn, `SELECT count(*) FROM audit`); n != 3 {
		t.Errorf("%d audit rows for 3 requests", n)
	}
}

// TestStopWithTakedownInFlight: an API process stopped (SIGTERM) while a
// takedown waits for a slow items service answers it 202 before its
// -shutdown-timeout and exits 0; another API replica then serves the
// takedown's outcome: removed.
func TestStopWithTakedownInFlight(t *testing.T) {
	t.Run("kfake+sqlite", func(t *testing.T) { testStopInFlight(t, kfakeSQLite(t)) })
	t.Run("kafka+postgres", func(t *testing.T) { testStopInFlight(t, kafkaPostgres(t)) })
}

func testStopInFlight(t *testing.T, d deployment) {
	tok := d.env["TAKEDOWN_TOKENS"]
	d.items(t, "items", "-items-delay", "3s")
	a, baseA := d.api(t, "api-a", "-sync-timeout", "1m", "-shutdown-timeout", "2s", "-audit", "")
	_, baseB := d.api(t, "api-b")
	type result struct {
		status int
		body   map[string]any
		err    error
	}
	answered := make(chan result, 1)
	go func() {
		status, body, err := postOnce(&http.Client{Timeout: time.Minute}, baseA+"/v1/takedowns", tok, `{"item_id":"itm-1004","reason":"r","case_ref":"PJ-9"}`)
		answered <- result{status, body, err}
	}()
	a.stderr.waitFor(t, `"msg":"takedown received"`)
	start := time.Now()
	a.stop(t) // exit status 0, or stop fails the test
	r := <-answered
	if r.err != nil || r.status != http.StatusAccepted || r.body["status"] != "pending" {
		t.Fatalf("the takedown in flight at the stop: %d %v %v; want 202 pending", r.status, r.body, r.err)
	}
	t.Logf("stopped in %v", time.Since(start))
	status, body := pollFinal(t, baseB, r.body["takedown_id"].(string), tok)
	if status != http.StatusOK || body["status"] != "removed" {
		t.Errorf("polled on the other replica: %d %v; want removed", status, body)
	}
}

// countRows runs a count query on the deployment's database.
func countRows(t *testing.T, dsn, query string) int {
	t.Helper()
	d := dbtest.Open(t, dsn)
	var n int
	if err := d.QueryRowContext(t.Context(), query).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// answer is one takedown request of a load test, as the client saw it.
type answer struct {
	item   string
	status int
	body   map[string]any
	api    string
}

// TestKillItemsUnderLoad: clients take items down through the API (each
// request a different item) while the items service is SIGKILLed and
// restarted. Afterwards: every takedown answered 200 or 202 is removed and
// polled as such (a 200 exactly as answered); none answered 503 is
// applied; the audit trail has one row per request, with the status the
// client got; and the items service recorded exactly the takedowns the
// clients were told were made.
func TestKillItemsUnderLoad(t *testing.T) {
	t.Run("kfake+sqlite", func(t *testing.T) { testKill(t, kfakeSQLite(t), 1, 1) })
	t.Run("kafka+postgres", func(t *testing.T) { testKill(t, kafkaPostgres(t), 2, 2) })
}

func testKill(t *testing.T, d deployment, nItems, nAPIs int) {
	const (
		seed       = 20000
		workers    = 12
		maxAsks    = seed
		phaseOK    = 40 // 200s per phase
		phaseAccpt = 12 // 202s while the items service is down
	)
	tok := d.env["TAKEDOWN_TOKENS"]
	procs := make([]*osProc, nItems)
	for i := range procs {
		procs[i] = d.items(t, fmt.Sprintf("items-%d", i), "-seed", fmt.Sprint(seed))
	}
	var bases []string
	for i := range nAPIs {
		_, base := d.api(t, fmt.Sprintf("api-%d", i), "-sync-timeout", "1s", "-max-takedowns", "6")
		bases = append(bases, base)
	}

	var (
		next             atomic.Int64 // the next item to take down
		mu               sync.Mutex   // protects answers, ok, accepted, changed
		answers          []answer
		ok, accepted     int
		changed          = make(chan struct{})
		stop             = make(chan struct{})
		wg               sync.WaitGroup
		client           = &http.Client{Timeout: time.Minute}
		statusesByServer = map[int]int{}
	)
	for w := range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := next.Add(1)
				if n > maxAsks {
					return
				}
				item := fmt.Sprintf("itm-%d", 1000+n)
				base := bases[(w+int(n))%len(bases)]
				status, body, err := postOnce(client, base+"/v1/takedowns", tok, `{"item_id":"`+item+`","reason":"load","case_ref":"PJ-LOAD"}`)
				if err != nil {
					t.Errorf("%s: %v", item, err)
					return
				}
				mu.Lock()
				answers = append(answers, answer{item: item, status: status, body: body, api: base})
				statusesByServer[status]++
				switch status {
				case http.StatusOK:
					ok++
				case http.StatusAccepted:
					accepted++
				}
				close(changed)
				changed = make(chan struct{})
				mu.Unlock()
				if status == http.StatusServiceUnavailable {
					time.Sleep(100 * time.Millisecond) // a client backing off (Retry-After)
				}
			}
		})
	}
	// waitUntil waits until cond holds on the counters.
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		timeout := time.After(3 * time.Minute)
		for {
			mu.Lock()
			done, ch := cond(), changed
			mu.Unlock()
			if done {
				return
			}
			select {
			case <-ch:
			case <-timeout:
				close(stop)
				wg.Wait()
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	waitUntil("takedowns confirmed before the kill", func() bool { return ok >= phaseOK })
	procs[0].kill(t)
	mu.Lock()
	okAtKill := ok
	acceptedAtKill := accepted
	mu.Unlock()
	waitUntil("takedowns accepted while the items service is down", func() bool { return accepted >= acceptedAtKill+phaseAccpt })
	procs[0] = d.items(t, "items-0 restarted", "-seed", fmt.Sprint(seed))
	mu.Lock()
	okAtRestart := ok
	mu.Unlock()
	waitUntil("takedowns confirmed after the restart", func() bool { return ok >= okAtRestart+phaseOK })
	close(stop)
	wg.Wait()
	t.Logf("answers: %d requests, by status %v; 200s before the kill %d, by the restart %d", len(answers), statusesByServer, okAtKill, okAtRestart)

	// Every answer, checked against the database and the polls.
	dbx := dbtest.Open(t, d.dsn)
	itemsDown := map[string]string{} // item -> takedown that removed it
	rows, err := dbx.QueryContext(t.Context(), `SELECT id, takedown_id FROM items WHERE taken_down`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var by sql.NullString
		if err := rows.Scan(&id, &by); err != nil {
			t.Fatal(err)
		}
		itemsDown[id] = by.String
	}
	rows.Close()

	var removed, refused int
	for _, a := range answers {
		id, _ := a.body["takedown_id"].(string)
		switch a.status {
		case http.StatusOK, http.StatusAccepted:
			if id == "" {
				t.Errorf("%s: %d without a takedown_id: %v", a.item, a.status, a.body)
				continue
			}
			if a.status == http.StatusOK && a.body["status"] != "removed" {
				t.Errorf("%s: 200 %v, want removed", a.item, a.body)
			}
			// Poll it from another replica than the one that answered.
			base := bases[0]
			if len(bases) > 1 && base == a.api {
				base = bases[1]
			}
			status, polled := pollFinal(t, base, id, tok)
			if status != http.StatusOK || polled["status"] != "removed" {
				t.Errorf("%s: answered %d, polled %d %v; want removed", a.item, a.status, status, polled)
				continue
			}
			if a.status == http.StatusOK && fmt.Sprint(polled) != fmt.Sprint(a.body) {
				t.Errorf("%s: answered %v, polled %v", a.item, a.body, polled)
			}
			removed++
		case http.StatusServiceUnavailable:
			refused++
			if a.body["status"] != "failed" {
				t.Errorf("%s: 503 without status failed: %v", a.item, a.body)
			}
			if by, down := itemsDown[a.item]; down {
				t.Errorf("%s: answered 503 %v, but taken down by %s", a.item, a.body, by)
			}
		default:
			t.Errorf("%s: unexpected answer %d %v", a.item, a.status, a.body)
		}
	}
	// Re-read: the 202s are applied by now.
	var down int
	if err := dbx.QueryRowContext(t.Context(), `SELECT count(*) FROM items WHERE taken_down`).Scan(&down); err != nil {
		t.Fatal(err)
	}
	if down != removed {
		t.Errorf("%d items taken down, %d takedowns answered 200 or 202", down, removed)
	}

	// The audit trail: one row per request, each with the status answered.
	type auditRow struct {
		id      sql.NullString
		status  sql.NullInt64
		outcome string
	}
	var audit []auditRow
	rows, err = dbx.QueryContext(t.Context(), `SELECT takedown_id, http_status, outcome FROM audit`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var r auditRow
		if err := rows.Scan(&r.id, &r.status, &r.outcome); err != nil {
			t.Fatal(err)
		}
		audit = append(audit, r)
	}
	rows.Close()
	if len(audit) != len(answers) {
		t.Errorf("%d audit rows for %d requests", len(audit), len(answers))
	}
	byID := map[string]auditRow{}
	statusRows := map[int]int{}
	for _, r := range audit {
		if r.id.Valid {
			byID[r.id.String] = r
		}
		statusRows[int(r.status.Int64)]++
	}
	for _, a := range answers {
		if id, _ := a.body["takedown_id"].(string); id != "" {
			if r, found := byID[id]; !found || int(r.status.Int64) != a.status {
				t.Errorf("%s: answered %d, audited %+v (found %v)", id, a.status, r, found)
			}
		}
	}
	for status, n := range statusesByServer {
		if statusRows[status] != n {
			t.Errorf("%d audit rows with status %d, %d answers", statusRows[status], status, n)
		}
	}
	t.Logf("figures: %d takedowns answered 200 or 202, %d items removed; %d answered 503, none applied; %d audit rows for %d requests",
		removed, down, refused, len(audit), len(answers))
	if refused == 0 {
		t.Log("no request was refused with 503 in this run")
	}
}

// pollFinal polls a takedown until its outcome is final.
func pollFinal(t *testing.T, base, id, tok string) (int, map[string]any) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		status, body := get(t, base+"/v1/takedowns/"+id+"?wait=30s", tok)
		if status != http.StatusAccepted || time.Now().After(deadline) {
			return status, body
		}
	}
}

// postOnce POSTs a takedown and returns the answer, without failing the
// test (it runs in a load generator's goroutine).
func postOnce(c *http.Client, url, tok, body string) (int, map[string]any, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return res.StatusCode, nil, fmt.Errorf("%d %q: %v", res.StatusCode, raw, err)
	}
	return res.StatusCode, m, nil
}

var _ = db.Now
