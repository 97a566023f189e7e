package image_test

import (
	"context"
	"os"
	"path/filepath"
	goruntime "runtime"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/tender-edge/tender/runtime/image"
	treg "github.com/tender-edge/tender/test/registry"
)

// A pull from a real registry (TLS, htpasswd) with the credentials given
// by a docker credential helper named in a docker config.json, as docker
// itself would use them; and the helper's refusal stays an auth failure.
func TestPull_DockerCredentialHelper(t *testing.T) {
	r := treg.Start(t, treg.Options{TLS: true, Htpasswd: true})
	arch := []string{goruntime.GOARCH}
	ref := r.Addr + "/tender/workload:helper"
	err := treg.Push(context.Background(), workloadArchive(t, "tender.test/workload:helper", arch), ref, false,
		remote.WithAuth(&authn.Basic{Username: r.Username, Password: r.Password}), remote.WithTransport(r.Transport()))
	if err != nil {
		t.Fatal(err)
	}

	bin := t.TempDir()
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	// The helper answers only for the registry it is asked about on stdin.
	script := "#!/bin/sh\n[ \"$1\" = get ] || exit 2\n[ \"$(cat)\" = " + r.Addr + " ] || { echo 'credentials not found in native keychain'; exit 1; }\n" +
		"printf '{\"ServerURL\":\"%s\",\"Username\":\"%s\",\"Secret\":\"%s\"}' " + r.Addr + " " + r.Username + " " + r.Password + "\n"
	if err := os.WriteFile(filepath.Join(bin, "docker-credential-tendertest"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	refuse := "#!/bin/sh\ncat >/dev/null\necho 'credentials not found in native keychain'\nexit 1\n"
	if err := os.WriteFile(filepath.Join(bin, "docker-credential-empty"), []byte(refuse), 0o755); err != nil {
		t.Fatal(err)
	}

	pull := func(dockerConfig string) error {
		dc := filepath.Join(t.TempDir(), "config.json")
		if err := os.WriteFile(dc, []byte(dockerConfig), 0o600); err != nil {
			t.Fatal(err)
		}
		s := openStore(t, t.TempDir(), image.Limits{})
		_, err := s.Pull(context.Background(), ref, image.PullOptions{RetryDelay: time.Millisecond, Registries: image.RegistryConfig{
			Registries:   map[string]image.Registry{r.Addr: {CAFile: r.CAFile}},
			DockerConfig: dc,
		}})
		return err
	}
	if err := pull(`{"credHelpers":{"` + r.Addr + `":"tendertest"}}`); err != nil {
		t.Fatalf("pull with a credential helper: %v", err)
	}
	if err := pull(`{"credsStore":"tendertest"}`); err != nil {
		t.Fatalf("pull with a credentials store: %v", err)
	}
	if err := pull(`{"credsStore":"empty"}`); !errdefs.IsUnauthorized(err) {
		t.Fatalf("pull with a helper that has nothing: %v, want ErrUnauthorized", err)
	}
}
