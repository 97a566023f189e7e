// Package etcdtest starts real etcd clusters for tests: Debian's
// etcd-server (3.4), one process per member, on free loopback ports, with
// data directories in t.TempDir(), killed when the test ends. A system
// etcd that the package's install may have started is never touched.
package etcdtest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tender-edge/tender/test/mqtttest"
)

// Bin is Debian's etcd-server.
const Bin = "/usr/bin/etcd"

// Cluster is a running etcd cluster.
type Cluster struct {
	Members []*Member
	// With StartTLS: the members serve clients over TLS only and want a
	// client certificate of CAFile's CA; ClientCertFile and ClientKeyFile
	// are one.
	CAFile, ClientCertFile, ClientKeyFile string
}

// Member is one etcd process.
type Member struct {
	Name      string
	ClientURL string // http://127.0.0.1:PORT
	PeerURL   string
	Dir       string

	cmd    *exec.Cmd
	exited chan struct{}
	mu     sync.Mutex
	log    []string
}

// Endpoints are the members' client addresses (host:port), also of the
// killed ones: a client given them all finds the living.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, strings.TrimPrefix(strings.TrimPrefix(m.ClientURL, "http://"), "https://"))
	}
	return out
}

// Start starts a cluster of n members (1 or 3) for one test and kills it
// when the test ends. It skips the test when etcd is not installed (make
// deps installs etcd-server).
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	if !Installed() {
		t.Skipf("%s missing (apt-get install etcd-server)", Bin)
	}
	c, err := Launch(n, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() {
			for _, m := range c.Members {
				t.Logf("etcd %s log:\n%s", m.Name, strings.Join(m.Log(), "\n"))
			}
		}
	})
	return c
}

// StartTLS is Start with client TLS: a throwaway CA, a server
// certificate for 127.0.0.1, client certificates required.
func StartTLS(t testing.TB, n int) *Cluster {
	t.Helper()
	if !Installed() {
		t.Skipf("%s missing (apt-get install etcd-server)", Bin)
	}
	dir := t.TempDir()
	ca := mqtttest.NewPKI(t, "etcd test ca")
	_, scrt, skey := ca.Issue(t, "etcd", true)
	_, ccrt, ckey := ca.Issue(t, "tender", false)
	tf := &tlsFiles{}
	for path, data := range map[*string][]byte{&tf.ca: ca.CertPEM(), &tf.cert: scrt, &tf.key: skey, &tf.clientCert: ccrt, &tf.clientKey: ckey} {
		f, err := os.CreateTemp(dir, "*.pem")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		f.Close()
		*path = f.Name()
	}
	c, err := launchTries(n, filepath.Join(dir, "data"), tf)
	if err != nil {
		t.Fatal(err)
	}
	c.CAFile, c.ClientCertFile, c.ClientKeyFile = tf.ca, tf.clientCert, tf.clientKey
	t.Cleanup(c.Stop)
	return c
}

type tlsFiles struct{ ca, cert, key, clientCert, clientKey string }

// Installed says whether Debian's etcd is there.
func Installed() bool {
	_, err := os.Stat(Bin)
	return err == nil
}

// Launch starts a cluster of n members with their data under dir (for
// TestMain, which has no t: call Stop when done) and waits until every
// member is healthy with a leader elected.
func Launch(n int, dir string) (*Cluster, error) { return launchTries(n, dir, nil) }

func launchTries(n int, dir string, tf *tlsFiles) (*Cluster, error) {
	// A port taken between the probe and etcd's bind makes a member
	// exit at once: start again on other ports.
	var last error
	for try := range 3 {
		c, err := launch(n, filepath.Join(dir, "try"+strconv.Itoa(try)), tf)
		if err == nil {
			return c, nil
		}
		last = err
	}
	return nil, fmt.Errorf("etcd cluster of %d: %w", n, last)
}

// Stop kills every member.
func (c *Cluster) Stop() {
	for _, m := range c.Members {
		m.Kill()
	}
}

func launch(n int, dir string, tf *tlsFiles) (*Cluster, error) {
	c := &Cluster{}
	var initial []string
	for i := range n {
		m := &Member{
			Name:   "m" + strconv.Itoa(i),
			Dir:    filepath.Join(dir, "m"+strconv.Itoa(i)),
			exited: make(chan struct{}),
		}
		cp, err := freePort()
		if err != nil {
			return nil, err
		}
		pp, err := freePort()
		if err != nil {
			return nil, err
		}
		m.ClientURL, m.PeerURL = "http://127.0.0.1:"+cp, "http://127.0.0.1:"+pp
		if tf != nil {
			m.ClientURL = "https://127.0.0.1:" + cp
		}
		if err := os.MkdirAll(m.Dir, 0o700); err != nil {
			return nil, err
		}
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	for _, m := range c.Members {
		m.cmd = exec.Command(Bin,
			"--name", m.Name, "--data-dir", m.Dir,
			"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "tender-test",
			// Fast elections on loopback: a killed leader is replaced in
			// about a second, not ten.
			"--heartbeat-interval", "50", "--election-timeout", "500",
			"--log-level", "warn", "--logger", "zap", "--log-outputs", "stderr")
		if tf != nil {
			m.cmd.Args = append(m.cmd.Args, "--cert-file", tf.cert, "--key-file", tf.key,
				"--trusted-ca-file", tf.ca, "--client-cert-auth")
		}
		m.cmd.Env = os.Environ()
		if runtime.GOARCH != "amd64" { // etcd 3.4 refuses to start elsewhere without it
			m.cmd.Env = append(m.cmd.Env, "ETCD_UNSUPPORTED_ARCH="+runtime.GOARCH)
		}
		if err := m.start(); err != nil {
			c.Stop()
			return nil, err
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, m := range c.Members {
		if err := m.waitHealthy(deadline, tf); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

// waitHealthy polls the member's /health until it reports a leader.
func (m *Member) waitHealthy(deadline time.Time, tf *tlsFiles) error {
	cl := http.Client{Timeout: time.Second}
	if tf != nil {
		pem, err := os.ReadFile(tf.ca)
		if err != nil {
			return err
		}
		cert, err := tls.LoadX509KeyPair(tf.clientCert, tf.clientKey)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		cl.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}
	}
	for {
		select {
		case <-m.exited:
			return fmt.Errorf("etcd %s exited:\n%s", m.Name, strings.Join(m.Log(), "\n"))
		default:
		}
		resp, err := cl.Get(m.ClientURL + "/health")
		if err == nil {
			var body [256]byte
			k, _ := resp.Body.Read(body[:])
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(body[:k]), `"true"`) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd %s not healthy: %v\n%s", m.Name, err, strings.Join(m.Log(), "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// start runs m.cmd, its stderr kept in the log.
func (m *Member) start() error {
	stderr, err := m.cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := m.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", Bin, err)
	}
	cmd, exited := m.cmd, m.exited
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			m.mu.Lock()
			m.log = append(m.log, sc.Text())
			m.mu.Unlock()
		}
		_ = cmd.Wait()
		close(exited)
	}()
	return nil
}

// Restart starts a killed member again on its data directory and
// addresses; it returns once the member is running (not necessarily
// with a leader: that needs a quorum).
func (m *Member) Restart(t testing.TB) {
	t.Helper()
	select {
	case <-m.exited:
	default:
		t.Fatalf("etcd %s: restart of a member still running", m.Name)
	}
	cmd := exec.Command(m.cmd.Path, m.cmd.Args[1:]...)
	cmd.Env = m.cmd.Env
	m.cmd, m.exited = cmd, make(chan struct{})
	if err := m.start(); err != nil {
		t.Fatal(err)
	}
}

// Kill kills the member (SIGKILL) and waits until it is gone.
func (m *Member) Kill() {
	if m.cmd != nil && m.cmd.Process != nil {
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
}

// Log is what the member wrote to stderr.
func (m *Member) Log() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.log...)
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), nil
}
