package image

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
)

// Docker's config.json, read by us rather than through docker/cli (which
// go-containerregistry's authn.DefaultKeychain links, with its credential
// helper client and logrus, for what is one JSON file and one exec).
//
// What is read, as docker reads it:
//   - "auths": entries keyed by registry as docker writes them ("host",
//     "host:port", "https://host/...", "https://index.docker.io/v1/" for
//     docker hub), each with "auth" (base64 of user:password, which wins
//     over the fields beside it), "username"/"password", "identitytoken" or
//     "registrytoken";
//   - "credHelpers" (registry → helper name) and "credsStore" (the helper
//     for every other registry): docker-credential-NAME is run with "get"
//     and the registry on stdin, and answers {"Username","Secret"}; a
//     helper's "credentials not found" means anonymous, as for docker.
//     A helper is bounded in time (helperTimeout) and in output
//     (helperMaxOutput).

const (
	// dockerHubKey is the key docker uses for docker hub, in "auths" and
	// towards credential helpers.
	dockerHubKey = "https://index.docker.io/v1/"
	// helperMaxOutput bounds what a credential helper may print.
	helperMaxOutput = 64 << 10
	// helperNotFound is the message of docker-credential-helpers for a
	// registry it holds nothing for.
	helperNotFound = "credentials not found in native keychain"
)

// helperTimeout bounds one credential helper run (a variable for tests).
var helperTimeout = 10 * time.Second

// dockerAuthEntry is one "auths" entry.
type dockerAuthEntry struct {
	Auth          string `json:"auth,omitempty"`
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	IdentityToken string `json:"identitytoken,omitempty"`
	RegistryToken string `json:"registrytoken,omitempty"`
}

// dockerConfigFile is the part of config.json this package uses.
type dockerConfigFile struct {
	Auths       map[string]dockerAuthEntry `json:"auths"`
	CredHelpers map[string]string          `json:"credHelpers"`
	CredsStore  string                     `json:"credsStore"`
}

// dockerKeychain resolves credentials from a docker config.json. It is an
// authn.Keychain (and authn.ContextKeychain).
type dockerKeychain struct {
	// path is the config.json; empty: docker's default location, or
	// podman's (defaultDockerConfig).
	path string
}

var (
	_ authn.Keychain        = dockerKeychain{}
	_ authn.ContextKeychain = dockerKeychain{}
)

// defaultDockerConfig is the file used when no path is configured: the
// first that exists of docker's ($DOCKER_CONFIG/config.json or
// ~/.docker/config.json) and, as go-containerregistry's default keychain
// did, podman's ($REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
// $XDG_CONFIG_HOME or ~/.config /containers/auth.json), which share the
// format. "" when there is none.
func defaultDockerConfig() string {
	home, _ := os.UserHomeDir()
	var cands []string
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		cands = append(cands, filepath.Join(d, "config.json"))
	} else if home != "" {
		cands = append(cands, filepath.Join(home, ".docker", "config.json"))
	}
	if f := os.Getenv("REGISTRY_AUTH_FILE"); f != "" {
		cands = append(cands, f)
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		cands = append(cands, filepath.Join(d, "containers", "auth.json"))
	}
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		cands = append(cands, filepath.Join(d, "containers", "auth.json"))
	} else if home != "" {
		cands = append(cands, filepath.Join(home, ".config", "containers", "auth.json"))
	}
	for _, c := range cands {
		if _, err := os.Stat(c); err == nil {
			return c
		}
	}
	return ""
}

// Resolve implements authn.Keychain.
func (k dockerKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(context.Background(), r)
}

// ResolveContext implements authn.ContextKeychain: the credentials for
// r's registry, or authn.Anonymous when the file or an entry is missing.
func (k dockerKeychain) ResolveContext(ctx context.Context, r authn.Resource) (authn.Authenticator, error) {
	path := k.path
	if path == "" {
		if path = defaultDockerConfig(); path == "" {
			return authn.Anonymous, nil
		}
	}
	cf, err := readDockerConfig(path)
	if err != nil || cf == nil {
		return authn.Anonymous, err
	}
	ac, err := cf.lookup(ctx, path, r.RegistryStr())
	if err != nil {
		return nil, err
	}
	if ac == (authn.AuthConfig{}) {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(ac), nil
}

// readDockerConfig reads path; a missing file gives nil.
func readDockerConfig(path string) (*dockerConfigFile, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("docker config %s: %w", path, err)
	}
	var cf dockerConfigFile
	if err := json.Unmarshal(raw, &cf); err != nil {
		return nil, invalidf("docker config %s: not a docker config.json: %v", path, err)
	}
	return &cf, nil
}

// isDockerHub reports whether host is one of docker hub's names.
func isDockerHub(host string) bool {
	switch host {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return true
	}
	return false
}

// keyHost reduces a key as docker writes it ("https://host:port/v1/") to
// host[:port], as docker's ConvertToHostname does.
func keyHost(key string) string {
	h := key
	if i := strings.Index(h, "://"); i >= 0 {
		h = h[i+3:]
	}
	h, _, _ = strings.Cut(h, "/")
	return h
}

// sameRegistry reports whether a config key names host.
func sameRegistry(key, host string) bool {
	kh := keyHost(key)
	if kh == host {
		return true
	}
	return isDockerHub(host) && isDockerHub(kh)
}

// lookup returns the credentials for host (host[:port] as in image
// names), the zero AuthConfig for none.
func (cf *dockerConfigFile) lookup(ctx context.Context, path, host string) (authn.AuthConfig, error) {
	server := host
	if isDockerHub(host) {
		server = dockerHubKey
	}
	helper := cf.CredsStore
	if h, ok := cf.CredHelpers[server]; ok {
		helper = h
	} else if h, ok := cf.CredHelpers[host]; ok {
		helper = h
	} else {
		for k, h := range cf.CredHelpers {
			if sameRegistry(k, host) {
				helper = h
				break
			}
		}
	}
	if helper != "" {
		return runCredHelper(ctx, helper, server)
	}

	// The exact key first, then docker's other spellings of the host.
	e, ok := cf.Auths[server]
	key := server
	if !ok {
		e, ok = cf.Auths[host]
		key = host
	}
	if !ok {
		for k, v := range cf.Auths {
			if sameRegistry(k, host) {
				e, key, ok = v, k, true
				break
			}
		}
	}
	if !ok {
		return authn.AuthConfig{}, nil
	}
	ac := authn.AuthConfig{
		Username:      e.Username,
		Password:      e.Password,
		IdentityToken: e.IdentityToken,
		RegistryToken: e.RegistryToken,
	}
	if e.Auth != "" {
		dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(e.Auth))
		if err != nil {
			return authn.AuthConfig{}, invalidf("docker config %s: auths[%q].auth is not base64: %v", path, key, err)
		}
		user, pass, found := strings.Cut(string(dec), ":")
		if !found {
			return authn.AuthConfig{}, invalidf("docker config %s: auths[%q].auth is not base64 of user:password", path, key)
		}
		ac.Username, ac.Password = user, pass
	}
	return ac, nil
}

// helperCredentials is what a docker credential helper prints for "get".
type helperCredentials struct {
	ServerURL string `json:"ServerURL"`
	Username  string `json:"Username"`
	Secret    string `json:"Secret"`
}

// limitedBuffer keeps at most max bytes and remembers it was cut.
type limitedBuffer struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); len(p) > room {
		b.over = true
		b.buf.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return b.buf.Write(p)
}

// runCredHelper runs docker-credential-NAME get for server, as docker does.
func runCredHelper(parent context.Context, name, server string) (authn.AuthConfig, error) {
	prog := "docker-credential-" + name
	if strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return authn.AuthConfig{}, invalidf("docker credential helper %q: not a helper name", name)
	}
	ctx, cancel := context.WithTimeout(parent, helperTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, "get")
	cmd.Stdin = strings.NewReader(server)
	stdout := &limitedBuffer{max: helperMaxOutput}
	stderr := &limitedBuffer{max: 4 << 10}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// A helper's children may keep its output open: stop waiting for them
	// shortly after the helper itself is gone.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	out := strings.TrimSpace(stdout.buf.String())
	switch {
	case parent.Err() != nil:
		return authn.AuthConfig{}, fmt.Errorf("docker credential helper %s for %s: %w", prog, server, parent.Err())
	case ctx.Err() != nil:
		return authn.AuthConfig{}, fmt.Errorf("docker credential helper %s for %s: no answer within %v", prog, server, helperTimeout)
	case errors.Is(err, exec.ErrNotFound):
		return authn.AuthConfig{}, categoryf(errdefs.ErrFailedPrecondition,
			"docker credential helper %s for %s: not found in PATH: install it or remove it from the docker config", prog, server)
	case err != nil && out == helperNotFound:
		return authn.AuthConfig{}, nil
	case err != nil:
		msg := out
		if msg == "" {
			msg = strings.TrimSpace(stderr.buf.String())
		}
		return authn.AuthConfig{}, fmt.Errorf("docker credential helper %s for %s: %w: %q", prog, server, err, trimMsg(msg))
	case stdout.over:
		return authn.AuthConfig{}, fmt.Errorf("docker credential helper %s for %s: answer longer than %d bytes", prog, server, helperMaxOutput)
	}
	var hc helperCredentials
	if err := json.Unmarshal([]byte(out), &hc); err != nil {
		// Not echoed: junk from a credential helper may hold a secret.
		return authn.AuthConfig{}, fmt.Errorf("docker credential helper %s for %s: answer (%d bytes) is not credentials JSON", prog, server, len(out))
	}
	if hc.Username == "<token>" {
		return authn.AuthConfig{IdentityToken: hc.Secret}, nil
	}
	return authn.AuthConfig{Username: hc.Username, Password: hc.Secret}, nil
}

// trimMsg shortens a helper's message for an error.
func trimMsg(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
