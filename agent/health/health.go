// Package health runs a workload's health probes (HTTP, TCP, or a command
// inside its container) and turns their results into a status the way
// Docker does: starting, then healthy after a success, unhealthy after
// Retries failures in a row; failures within the start period do not count
// while the workload is still starting.
//
// Check does I/O (one probe, bounded by the probe's timeout); Tracker is
// pure: results and times are passed in. Scheduling (every Interval) is
// the caller's.
package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/tender-edge/tender/runtime/nsenter"
)

// Defaults, as Docker's.
const (
	DefaultInterval = 30 * time.Second
	DefaultTimeout  = 30 * time.Second
	DefaultRetries  = 3
)

// maxOutput caps Result.Output.
const maxOutput = 4 << 10

// ErrInvalid marks a probe or target that cannot be checked as given.
var ErrInvalid = errors.New("invalid health check")

// Probe is one health check. Exactly one of HTTP, TCP and Exec is set.
type Probe struct {
	// HTTP is a URL ("http://127.0.0.1:8080/healthz"); a GET answered
	// 2xx or 3xx (redirects are not followed) is healthy. The host must be
	// an IP address or localhost: it is dialled from inside the
	// container's network namespace. https is not verified (as Kubernetes).
	HTTP string `json:"http,omitempty"`
	// TCP is host:port; a completed connect is healthy.
	TCP string `json:"tcp,omitempty"`
	// Exec is a command run inside the container; exit 0 is healthy.
	Exec []string `json:"exec,omitempty"`
	// Interval between probes (default 30s), Timeout of one probe (default
	// 30s), StartPeriod during which failures do not count while starting
	// (default 0), Retries: consecutive failures that make it unhealthy
	// (default 3).
	Interval    time.Duration `json:"interval,omitempty"`
	Timeout     time.Duration `json:"timeout,omitempty"`
	StartPeriod time.Duration `json:"startPeriod,omitempty"`
	Retries     int           `json:"retries,omitempty"`
}

// Validate reports a probe that names no check or more than one, or has
// negative durations or retries.
func (p Probe) Validate() error {
	n := 0
	for _, set := range []bool{p.HTTP != "", p.TCP != "", len(p.Exec) > 0} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("need exactly one of http, tcp and exec, have %d: %w", n, ErrInvalid)
	}
	if p.HTTP != "" {
		u, err := url.Parse(p.HTTP)
		if err != nil {
			return fmt.Errorf("http %q: %v: %w", p.HTTP, err, ErrInvalid)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("http %q: need an http or https URL with a host: %w", p.HTTP, ErrInvalid)
		}
	}
	if len(p.Exec) > 0 && p.Exec[0] == "" {
		return fmt.Errorf("exec: empty command: %w", ErrInvalid)
	}
	if p.Interval < 0 || p.Timeout < 0 || p.StartPeriod < 0 || p.Retries < 0 {
		return fmt.Errorf("negative interval, timeout, start period or retries: %w", ErrInvalid)
	}
	return nil
}

// Normalized returns p with defaults filled in.
func (p Probe) Normalized() Probe {
	if p.Interval == 0 {
		p.Interval = DefaultInterval
	}
	if p.Timeout == 0 {
		p.Timeout = DefaultTimeout
	}
	if p.Retries == 0 {
		p.Retries = DefaultRetries
	}
	return p
}

// Target is where a probe runs.
type Target struct {
	// Pid and PidStart are the container's init (container.State.Pid and
	// PidStart): HTTP and TCP probes dial from its network namespace.
	Pid      int
	PidStart uint64
	// HostNetwork: the container shares the host's network namespace;
	// probes dial from here.
	HostNetwork bool
	// Exec runs a command inside the container (see ExecWith); needed for
	// Exec probes.
	Exec func(ctx context.Context, args []string) (exitCode int, output []byte, err error)
}

// ExecWith returns a Target.Exec that runs commands with nsenter.Exec and
// base (the container's pid, process, user, seccomp and Place; its Args
// are replaced).
func ExecWith(base nsenter.ExecOptions) func(ctx context.Context, args []string) (int, []byte, error) {
	return func(ctx context.Context, args []string) (int, []byte, error) {
		o := base
		o.Args = args
		o.MaxOutput = maxOutput
		return nsenter.Exec(ctx, o)
	}
}

// Result is the outcome of one probe.
type Result struct {
	Healthy bool
	// Output is what the probe saw (the response body, the command's
	// output), capped at 4 KiB.
	Output string
	// Err is why an unhealthy probe failed when it did not complete
	// (refused, timed out, command not found); nil for a completed probe
	// that answered unhealthy (HTTP 500, exit 1).
	Err  error
	Took time.Duration
}

// Check runs p once against t, within p's timeout.
func Check(ctx context.Context, p Probe, t Target) Result {
	begin := time.Now()
	r := check(ctx, p.Normalized(), t)
	r.Took = time.Since(begin)
	if len(r.Output) > maxOutput {
		r.Output = r.Output[:maxOutput]
	}
	return r
}

func check(ctx context.Context, p Probe, t Target) Result {
	if err := p.Validate(); err != nil {
		return Result{Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	switch {
	case p.HTTP != "":
		return checkHTTP(ctx, p.HTTP, t)
	case p.TCP != "":
		return checkTCP(ctx, p.TCP, t)
	default:
		return checkExec(ctx, p.Exec, t)
	}
}

// dialer dials from t's network namespace.
func dialer(t Target) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if t.HostNetwork {
		var d net.Dialer
		return d.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return nsenter.Dial(ctx, t.Pid, t.PidStart, network, addr)
	}
}

func checkHTTP(ctx context.Context, rawURL string, t Target) Result {
	tr := &http.Transport{
		DialContext:       dialer(t),
		DisableKeepAlives: true,
		// Not verified: the check asks whether the workload answers, not
		// who it is (Kubernetes does the same).
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		Proxy:           nil,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return Result{Err: fmt.Errorf("http probe: %w", err)}
	}
	req.Header.Set("User-Agent", "tender-health/1")
	resp, err := client.Do(req)
	if err != nil {
		return Result{Err: fmt.Errorf("http probe: %w", err)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxOutput))
	return Result{
		Healthy: resp.StatusCode >= 200 && resp.StatusCode < 400,
		Output:  fmt.Sprintf("%s\n%s", resp.Status, body),
	}
}

func checkTCP(ctx context.Context, addr string, t Target) Result {
	c, err := dialer(t)(ctx, "tcp", addr)
	if err != nil {
		return Result{Err: fmt.Errorf("tcp probe: %w", err)}
	}
	c.Close()
	return Result{Healthy: true, Output: "connected to " + addr}
}

func checkExec(ctx context.Context, args []string, t Target) Result {
	if t.Exec == nil {
		return Result{Err: fmt.Errorf("exec probe: no way to exec in the container: %w", ErrInvalid)}
	}
	code, out, err := t.Exec(ctx, args)
	if err != nil {
		return Result{Output: string(out), Err: fmt.Errorf("exec probe: %w", err)}
	}
	r := Result{Healthy: code == 0, Output: string(out)}
	if code != 0 && len(out) == 0 {
		r.Output = fmt.Sprintf("exit status %d", code)
	}
	return r
}
