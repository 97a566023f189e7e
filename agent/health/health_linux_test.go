package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tender-edge/tender/runtime/nsenter"
)

// netnsListen makes a network namespace with its loopback up, on a locked
// thread of this process, and listens on 127.0.0.1:port in it. It returns
// the listener and a Target whose pid is that thread. The thread is never
// unlocked: it dies at the end of the test.
func netnsListen(t *testing.T, port int) (net.Listener, Target) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	type result struct {
		l   net.Listener
		tid int
		err error
	}
	ch := make(chan result, 1)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		runtime.LockOSThread()
		l, err := func() (net.Listener, error) {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return nil, fmt.Errorf("unshare netns: %w", err)
			}
			if err := loopbackUp(); err != nil {
				return nil, err
			}
			return net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		}()
		ch <- result{l, unix.Gettid(), err}
		if err == nil {
			<-done // keep the thread (and so the namespace's "pid") alive
		}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.l.Close() })
	start, err := nsenter.StartTime(r.tid)
	if err != nil {
		t.Fatal(err)
	}
	return r.l, Target{Pid: r.tid, PidStart: start}
}

func loopbackUp() error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

// serve serves h on l until the test ends.
func serve(t *testing.T, l net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

func TestCheck_HTTPInsideNetns(t *testing.T) {
	// The host answers 503 on a port; the namespace answers on the same
	// port as told: which one a probe reaches shows where it dialled.
	hostL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, hostL, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "host", http.StatusServiceUnavailable)
	}))
	port := hostL.Addr().(*net.TCPAddr).Port
	nsL, target := netnsListen(t, port)
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "fine") })
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "broken", 500) })
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/fail", http.StatusFound) })
	serve(t, nsL, mux)

	base := "http://127.0.0.1:" + strconv.Itoa(port)
	for _, tt := range []struct {
		path    string
		healthy bool
		output  string
	}{
		{"/ok", true, "200 OK\nfine"},
		{"/fail", false, "500 Internal Server Error\nbroken\n"},
		{"/moved", true, "302 Found\n"}, // 3xx is healthy; not followed
		{"/missing", false, "404 Not Found\n"},
	} {
		r := Check(context.Background(), Probe{HTTP: base + tt.path, Timeout: 5 * time.Second}, target)
		if r.Healthy != tt.healthy || r.Err != nil || !strings.HasPrefix(r.Output, tt.output) {
			t.Errorf("GET %s: healthy=%v output=%q err=%v, want healthy=%v output %q", tt.path, r.Healthy, r.Output, r.Err, tt.healthy, tt.output)
		}
	}
	// localhost is the namespace's loopback too.
	r := Check(context.Background(), Probe{HTTP: "http://localhost:" + strconv.Itoa(port) + "/ok"}, target)
	if !r.Healthy {
		t.Errorf("GET localhost: %+v", r)
	}
	// With host networking the same URL reaches the host's server.
	host := target
	host.HostNetwork = true
	r = Check(context.Background(), Probe{HTTP: base + "/ok"}, host)
	if r.Healthy || !strings.HasPrefix(r.Output, "503") {
		t.Errorf("GET with host network: %+v, want the host's 503", r)
	}
}

func TestCheck_TCP(t *testing.T) {
	l, target := netnsListen(t, 0)
	addr := l.Addr().String()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if r := Check(context.Background(), Probe{TCP: addr, Timeout: 5 * time.Second}, target); !r.Healthy || r.Err != nil {
		t.Errorf("tcp %s in netns: %+v", addr, r)
	}
	r := Check(context.Background(), Probe{TCP: "127.0.0.1:1", Timeout: 5 * time.Second}, target)
	if r.Healthy || !errors.Is(r.Err, unix.ECONNREFUSED) {
		t.Errorf("tcp to a closed port: %+v, want refused", r)
	}
	// A stale target (the pid's start time does not match) is an error.
	stale := target
	stale.PidStart++
	if r := Check(context.Background(), Probe{TCP: addr}, stale); r.Healthy || !errors.Is(r.Err, nsenter.ErrNotRunning) {
		t.Errorf("tcp with a stale target: %+v, want ErrNotRunning", r)
	}
}

func TestCheck_Timeout(t *testing.T) {
	// A server that accepts and never answers.
	l, target := netnsListen(t, 0)
	var conns []net.Conn
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-accepted
		for _, c := range conns {
			c.Close()
		}
	})
	begin := time.Now()
	r := Check(context.Background(), Probe{HTTP: "http://" + l.Addr().String() + "/", Timeout: 200 * time.Millisecond}, target)
	if r.Healthy || !errors.Is(r.Err, context.DeadlineExceeded) {
		t.Errorf("silent server: %+v, want a deadline error", r)
	}
	if d := time.Since(begin); d > 5*time.Second || r.Took < 200*time.Millisecond {
		t.Errorf("took %v (reported %v) for a 200ms timeout", d, r.Took)
	}
}

func TestCheck_Exec(t *testing.T) {
	// Real processes on the host stand in for the container: nsenter's
	// own tests run Exec in real containers.
	target := Target{Exec: func(ctx context.Context, args []string) (int, []byte, error) {
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) && ctx.Err() == nil {
			return ee.ExitCode(), out, nil
		}
		if err != nil {
			return -1, out, err
		}
		return 0, out, nil
	}}
	for _, tt := range []struct {
		args    []string
		healthy bool
		output  string
		err     bool
	}{
		{[]string{"sh", "-c", "echo up"}, true, "up\n", false},
		{[]string{"sh", "-c", "echo down; exit 1"}, false, "down\n", false},
		{[]string{"false"}, false, "exit status 1", false},
		{[]string{"/no/such/command"}, false, "", true},
		{[]string{"sleep", "10"}, false, "", true}, // past the timeout
	} {
		r := Check(context.Background(), Probe{Exec: tt.args, Timeout: 300 * time.Millisecond}, target)
		if r.Healthy != tt.healthy || r.Output != tt.output || (r.Err != nil) != tt.err {
			t.Errorf("exec %v: %+v, want healthy=%v output=%q err=%v", tt.args, r, tt.healthy, tt.output, tt.err)
		}
	}
	if r := Check(context.Background(), Probe{Exec: []string{"true"}}, Target{}); r.Healthy || !errors.Is(r.Err, ErrInvalid) {
		t.Errorf("exec without Target.Exec: %+v", r)
	}
}
