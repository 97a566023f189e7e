package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/tender-edge/tender/test/registry"
)

// TestPull_RealRegistryThenRun: Debian's docker-registry with TLS and
// htpasswd; the test image pushed as a multi-arch index (this machine's
// arch and arm64, built by the project); tender-agent pulls it with the
// credentials and the CA from its config file, then runs it.
func TestPull_RealRegistryThenRun(t *testing.T) {
	reg := registry.Start(t, registry.Options{TLS: true, Htpasswd: true})
	archs := []string{goruntime.GOARCH}
	if goruntime.GOARCH != "arm64" {
		archs = append(archs, "arm64")
	}
	archive, err := registry.WorkloadArchive("tender.test/workload:multi", archs)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Addr + "/acme/workload:1.0"
	auth := remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password})
	if err := registry.Push(context.Background(), archive, ref, false, auth, remote.WithTransport(reg.Transport())); err != nil {
		t.Fatalf("push: %v", err)
	}
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("registries:\n  %q: {username: %s, password: %s, caFile: %s}\n",
		reg.Addr, reg.Username, reg.Password, reg.CAFile)), 0o600)

	// Without the CA: the certificate is refused, one line.
	if r := agent(t, "pull", "--config", os.DevNull, ref); r.code == 0 || !strings.Contains(r.stderr, "certificate") {
		t.Fatalf("pull without the CA: %s", r.String())
	}
	// The CA but no credentials: unauthorized, exit 1.
	noCreds := filepath.Join(t.TempDir(), "nocreds.yaml")
	os.WriteFile(noCreds, []byte(fmt.Sprintf("registries:\n  %q: {caFile: %s}\n", reg.Addr, reg.CAFile)), 0o600)
	r := agent(t, "pull", "--config", noCreds, ref)
	if r.code != 1 || !strings.Contains(strings.ToLower(r.stderr), "unauthorized") {
		t.Fatalf("pull without credentials: %s", r.String())
	}
	out := ok(t, "pull", "--config", cfg, ref)
	if !strings.Contains(out, "Digest: sha256:") {
		t.Fatalf("pull output: %q", out)
	}
	t.Cleanup(func() { agent(t, "rmi", ref) })
	if id := ok(t, "run", "--rm", "--name", "pulled", ref, "id"); !strings.HasPrefix(id, "uid=0 gid=0 hostname=pulled pid=1") {
		t.Fatalf("run of the pulled image: %q", id)
	}
	// The other platform of the index, by its name.
	if len(archs) > 1 {
		ok(t, "pull", "--config", cfg, "--platform", "linux/arm64", ref)
	}
	// An unknown tag: one line, exit 1.
	if r := agent(t, "pull", "--config", cfg, reg.Addr+"/acme/workload:nope"); r.code != 1 {
		t.Fatalf("pull of an unknown tag: %s", r)
	}
}
