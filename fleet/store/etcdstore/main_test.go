package etcdstore

import (
	"bytes"
	"fmt"
	"iter"
	"os"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tender-edge/tender/test/etcdtest"
)

// TestMain starts the 1-member cluster most tests share (each under its
// own prefix); the tests that kill members start their own.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if etcdtest.Installed() {
		dir, err := os.MkdirTemp("", "etcdstore-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		c, err := etcdtest.Launch(1, dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer c.Stop()
		one = c
	}
	return m.Run()
}

// rawClient is a plain etcd client of the shared cluster, for what the
// store does not offer (dumps, damage).
func rawClient(t *testing.T) *clientv3.Client {
	t.Helper()
	if one == nil {
		t.Skipf("%s missing (apt-get install etcd-server)", etcdtest.Bin)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: one.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

func splitLines(b []byte) iter.Seq[string] {
	return func(yield func(string) bool) {
		for line := range bytes.Lines(b) {
			if !yield(string(bytes.TrimSuffix(line, []byte("\n")))) {
				return
			}
		}
	}
}

// unquote reads one quoted string at the start of s and returns the rest.
func unquote(s string) (string, string, error) {
	q, err := strconv.QuotedPrefix(s)
	if err != nil {
		return "", "", err
	}
	v, err := strconv.Unquote(q)
	return v, s[len(q):], err
}

func opPut(k, v string) clientv3.Op       { return clientv3.OpPut(k, v) }
func opDelete(k string) clientv3.Op       { return clientv3.OpDelete(k) }
func opDeletePrefix(k string) clientv3.Op { return clientv3.OpDelete(k, clientv3.WithPrefix()) }
