package image

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// writeConfig writes a docker config.json and returns its path.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// resolveDocker returns what the keychain at path gives for host.
func resolveDocker(t *testing.T, path, host string) (authn.AuthConfig, error) {
	t.Helper()
	reg, err := name.NewRegistry(host)
	if err != nil {
		t.Fatal(err)
	}
	a, err := dockerKeychain{path: path}.Resolve(reg)
	if err != nil {
		return authn.AuthConfig{}, err
	}
	if a == authn.Anonymous {
		return authn.AuthConfig{}, nil
	}
	ac, err := a.Authorization()
	if err != nil {
		t.Fatal(err)
	}
	return *ac, nil
}

func TestDockerConfigAuths(t *testing.T) {
	cfg := writeConfig(t, `{
	  "auths": {
	    "basic.example": {"auth": "`+b64("alice:pa:ss")+`"},
	    "fields.example": {"username": "bob", "password": "pw"},
	    "https://scheme.example:5000": {"auth": "`+b64("carol:pw3")+`"},
	    "http://legacy.example/v2/": {"username": "dan", "password": "pw4"},
	    "identity.example": {"identitytoken": "refresh-tok"},
	    "registry.example": {"registrytoken": "bearer-tok"},
	    "both.example": {"auth": "`+b64("erin:fromauth")+`", "username": "ignored", "password": "ignored"},
	    "https://index.docker.io/v1/": {"auth": "`+b64("hubuser:hubpw")+`"}
	  },
	  "HttpHeaders": {"User-Agent": "docker"},
	  "psFormat": "table"
	}`)
	cases := []struct {
		host string
		want authn.AuthConfig
	}{
		{"basic.example", authn.AuthConfig{Username: "alice", Password: "pa:ss"}},
		{"fields.example", authn.AuthConfig{Username: "bob", Password: "pw"}},
		{"scheme.example:5000", authn.AuthConfig{Username: "carol", Password: "pw3"}},
		{"legacy.example", authn.AuthConfig{Username: "dan", Password: "pw4"}},
		{"identity.example", authn.AuthConfig{IdentityToken: "refresh-tok"}},
		{"registry.example", authn.AuthConfig{RegistryToken: "bearer-tok"}},
		{"both.example", authn.AuthConfig{Username: "erin", Password: "fromauth"}},
		{"docker.io", authn.AuthConfig{Username: "hubuser", Password: "hubpw"}},
		{"index.docker.io", authn.AuthConfig{Username: "hubuser", Password: "hubpw"}},
		{"registry-1.docker.io", authn.AuthConfig{Username: "hubuser", Password: "hubpw"}},
		// Not in the file, or only another port of the host: anonymous.
		{"other.example", authn.AuthConfig{}},
		{"scheme.example", authn.AuthConfig{}},
	}
	for _, c := range cases {
		got, err := resolveDocker(t, cfg, c.host)
		if err != nil {
			t.Errorf("%s: %v", c.host, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.host, got, c.want)
		}
	}
}

func TestDockerConfigHubSpellings(t *testing.T) {
	for _, key := range []string{"docker.io", "index.docker.io", "https://index.docker.io/v1/", "registry-1.docker.io"} {
		cfg := writeConfig(t, `{"auths":{"`+key+`":{"username":"u","password":"p"}}}`)
		got, err := resolveDocker(t, cfg, "docker.io")
		if err != nil || got.Username != "u" {
			t.Errorf("key %q: %+v, %v", key, got, err)
		}
	}
}

func TestDockerConfigMissingAndDefault(t *testing.T) {
	got, err := resolveDocker(t, filepath.Join(t.TempDir(), "none.json"), "basic.example")
	if err != nil || got != (authn.AuthConfig{}) {
		t.Fatalf("missing file: %+v, %v; want anonymous", got, err)
	}

	// No path: $DOCKER_CONFIG/config.json, then ~/.docker/config.json.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"auths":{"env.example":{"username":"env","password":"pw"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	if got, err := resolveDocker(t, "", "env.example"); err != nil || got.Username != "env" {
		t.Fatalf("DOCKER_CONFIG: %+v, %v", got, err)
	}
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".docker"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".docker", "config.json"), []byte(`{"auths":{"home.example":{"username":"home","password":"pw"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", "")
	t.Setenv("HOME", home)
	if got, err := resolveDocker(t, "", "home.example"); err != nil || got.Username != "home" {
		t.Fatalf("~/.docker/config.json: %+v, %v", got, err)
	}
	// No docker config: podman's auth.json, same format.
	if err := os.Remove(filepath.Join(home, ".docker", "config.json")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("REGISTRY_AUTH_FILE", "")
	podman := []struct{ env, dir string }{
		{"XDG_CONFIG_HOME", ""}, // ~/.config/containers/auth.json
		{"XDG_CONFIG_HOME", t.TempDir()},
		{"XDG_RUNTIME_DIR", t.TempDir()},
	}
	for _, p := range podman {
		base := filepath.Join(home, ".config")
		if p.dir != "" {
			t.Setenv(p.env, p.dir)
			base = p.dir
		}
		if err := os.MkdirAll(filepath.Join(base, "containers"), 0o700); err != nil {
			t.Fatal(err)
		}
		user := "podman-" + p.env + p.dir
		if err := os.WriteFile(filepath.Join(base, "containers", "auth.json"), []byte(`{"auths":{"home.example":{"username":"`+user+`","password":"pw"}}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := resolveDocker(t, "", "home.example"); err != nil || got.Username != user {
			t.Fatalf("podman auth.json under %s %q: %+v, %v", p.env, p.dir, got, err)
		}
	}
	raf := writeConfig(t, `{"auths":{"home.example":{"username":"raf","password":"pw"}}}`)
	t.Setenv("REGISTRY_AUTH_FILE", raf)
	if got, err := resolveDocker(t, "", "home.example"); err != nil || got.Username != "raf" {
		t.Fatalf("REGISTRY_AUTH_FILE: %+v, %v", got, err)
	}

	t.Setenv("REGISTRY_AUTH_FILE", "")
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("HOME", "")
	if got, err := resolveDocker(t, "", "home.example"); err != nil || got != (authn.AuthConfig{}) {
		t.Fatalf("no home: %+v, %v; want anonymous", got, err)
	}
}

func TestDockerConfigMalformed(t *testing.T) {
	cases := map[string]struct{ body, want string }{
		"not json":        {`{"auths": {`, "not a docker config.json"},
		"auths not a map": {`{"auths": ["x"]}`, "not a docker config.json"},
		"auth not base64": {`{"auths":{"basic.example":{"auth":"%%%"}}}`, `auths["basic.example"].auth is not base64`},
		"auth no colon":   {`{"auths":{"basic.example":{"auth":"` + b64("nocolon") + `"}}}`, "not base64 of user:password"},
	}
	for what, c := range cases {
		p := writeConfig(t, c.body)
		_, err := resolveDocker(t, p, "basic.example")
		if err == nil || !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v; want ErrInvalidArgument naming %s and %q", what, err, p, c.want)
		}
	}
}

// helper installs docker-credential-NAME, a shell script, on PATH.
func helper(t *testing.T, dir, name, script string) {
	t.Helper()
	p := filepath.Join(dir, "docker-credential-"+name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestDockerConfigCredHelpers(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	// "get" with the server on stdin, no newline, as docker's client does;
	// the answer echoes it in the user name to prove it came in.
	helper(t, dir, "echo", `[ "$1" = get ] || exit 2
server=$(cat)
printf '{"ServerURL":"%s","Username":"u-%s","Secret":"s3cret"}' "$server" "$server"`)
	helper(t, dir, "token", `cat >/dev/null; echo '{"ServerURL":"x","Username":"<token>","Secret":"id-tok"}'`)
	helper(t, dir, "store", `server=$(cat)
case "$server" in
known.example) echo '{"Username":"st","Secret":"pw"}';;
*) echo "credentials not found in native keychain"; exit 1;;
esac`)
	cfg := writeConfig(t, `{
	  "auths": {"helped.example": {"username": "file", "password": "ignored"}, "unknown.example": {"username": "file"}},
	  "credHelpers": {"helped.example": "echo", "https://scheme.example": "echo", "tok.example": "token", "https://index.docker.io/v1/": "echo"},
	  "credsStore": "store"
	}`)
	cases := []struct {
		host string
		want authn.AuthConfig
	}{
		{"helped.example", authn.AuthConfig{Username: "u-helped.example", Password: "s3cret"}},
		{"scheme.example", authn.AuthConfig{Username: "u-scheme.example", Password: "s3cret"}},
		{"tok.example", authn.AuthConfig{IdentityToken: "id-tok"}},
		{"docker.io", authn.AuthConfig{Username: "u-https://index.docker.io/v1/", Password: "s3cret"}},
		{"known.example", authn.AuthConfig{Username: "st", Password: "pw"}},
		// The store has nothing: anonymous, as for docker (the file's
		// entry is not used when a store is configured).
		{"unknown.example", authn.AuthConfig{}},
	}
	for _, c := range cases {
		got, err := resolveDocker(t, cfg, c.host)
		if err != nil {
			t.Errorf("%s: %v", c.host, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.host, got, c.want)
		}
	}
}

func TestDockerConfigCredHelperFailures(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	old := helperTimeout
	helperTimeout = 300 * time.Millisecond
	t.Cleanup(func() { helperTimeout = old })

	helper(t, dir, "fails", `cat >/dev/null; echo "error getting credentials - err: exit status 1, out: keychain locked" >&2; exit 1`)
	helper(t, dir, "failsout", `cat >/dev/null; echo "keyring is locked"; exit 3`)
	// Sleeps in a child that keeps stdout open: the helper is killed at
	// the timeout and the child is not waited for.
	helper(t, dir, "hangs", `sleep 1000`)
	helper(t, dir, "junk", `cat >/dev/null; echo 'Username: bob, Secret: hunter2'`)
	helper(t, dir, "huge", `cat >/dev/null; head -c 200000 /dev/zero | tr '\0' 'x'`)
	cases := map[string]string{
		"fails":    "keychain locked",
		"failsout": "keyring is locked",
		"hangs":    "no answer within 300ms",
		"junk":     "is not credentials JSON",
		"huge":     "answer longer than 65536 bytes",
		"absent":   "docker-credential-absent for h.example: not found in PATH",
		"../evil":  "not a helper name",
	}
	for h, want := range cases {
		cfg := writeConfig(t, `{"credHelpers":{"h.example":"`+h+`"}}`)
		_, err := resolveDocker(t, cfg, "h.example")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("helper %s: %v; want an error with %q", h, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("helper %s: error shows the helper's output: %v", h, err)
		}
	}
	cfg := writeConfig(t, `{"credHelpers":{"h.example":"absent"}}`)
	if _, err := resolveDocker(t, cfg, "h.example"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("absent helper: %v, want ErrFailedPrecondition", err)
	}
	cfg = writeConfig(t, `{"credHelpers":{"h.example":"fails"}}`)
	if _, err := resolveDocker(t, cfg, "h.example"); errdefs.IsInvalidArgument(err) {
		t.Errorf("failing helper: %v carries ErrInvalidArgument; it is a runtime failure", err)
	}

	// A cancelled pull stops the helper too.
	cfg = writeConfig(t, `{"credHelpers":{"h.example":"hangs"}}`)
	reg, _ := name.NewRegistry("h.example")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (dockerKeychain{path: cfg}).ResolveContext(ctx, reg); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v, want context.Canceled", err)
	}
}
