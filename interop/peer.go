package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// peer is a Spring or NestJS process speaking the driver's line protocol:
// it prints READY when its responder is serving, answers "call MODE N" on
// stdin with one "RESULT {json}" line, and exits at the end of stdin.
// Other output lines are ignored; stderr goes to a log file.
type peer struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // RESULT, READY and ERROR lines, closed at EOF
	log   string      // path of the stderr (and stray stdout) log
	logf  *os.File
}

func startPeer(name, dir, logDir string, argv ...string) (*peer, error) {
	logPath := logDir + "/" + name + ".log"
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stderr = logf
	stdin, err := cmd.StdinPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &peer{name: name, cmd: cmd, stdin: stdin, lines: make(chan string, 16), log: logPath}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "READY", strings.HasPrefix(line, "RESULT "), strings.HasPrefix(line, "ERROR "):
				p.lines <- line
			default:
				fmt.Fprintln(logf, line)
			}
		}
		_, _ = io.Copy(io.Discard, stdout) // after a scanner error, until EOF
	}()
	p.logf = logf
	return p, nil
}

// next returns the next protocol line, or an error when the process ended
// or d passed.
func (p *peer) next(ctx context.Context, d time.Duration) (string, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case line, ok := <-p.lines:
		if !ok {
			return "", fmt.Errorf("%s ended its output (log: %s)", p.name, p.log)
		}
		return line, nil
	case <-t.C:
		return "", fmt.Errorf("%s said nothing in %v (log: %s)", p.name, d, p.log)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (p *peer) ready(ctx context.Context, d time.Duration) error {
	line, err := p.next(ctx, d)
	if err != nil {
		return err
	}
	if line != "READY" {
		return fmt.Errorf("%s: %q before READY (log: %s)", p.name, line, p.log)
	}
	return nil
}

// call runs one caller case in the peer.
func (p *peer) call(ctx context.Context, mode string, n int, d time.Duration) (result, error) {
	if _, err := fmt.Fprintf(p.stdin, "call %s %d\n", mode, n); err != nil {
		return result{}, fmt.Errorf("%s: %w (log: %s)", p.name, err, p.log)
	}
	line, err := p.next(ctx, d)
	if err != nil {
		return result{}, err
	}
	js, ok := strings.CutPrefix(line, "RESULT ")
	if !ok {
		return result{}, fmt.Errorf("%s: %q (log: %s)", p.name, line, p.log)
	}
	var r result
	if err := json.Unmarshal([]byte(js), &r); err != nil {
		return result{}, fmt.Errorf("%s: result %q: %w", p.name, js, err)
	}
	return r, nil
}

// stop closes stdin and waits for the process to exit, killing it after d.
func (p *peer) stop(d time.Duration) error {
	defer p.logf.Close()
	p.stdin.Close()
	t := time.NewTimer(d)
	defer t.Stop()
	var err error
	// Wait only once the output is read to its end (os/exec's rule).
	for eof := false; !eof; {
		select {
		case _, ok := <-p.lines:
			eof = !ok
		case <-t.C:
			_ = p.cmd.Process.Kill()
			err = fmt.Errorf("%s did not exit within %v of the end of its input; killed (log: %s)", p.name, d, p.log)
			for range p.lines {
			}
			eof = true
		}
	}
	if werr := p.cmd.Wait(); werr != nil && err == nil {
		err = fmt.Errorf("%s exited: %w (log: %s)", p.name, werr, p.log)
	}
	return err
}
