package image

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"sigs.k8s.io/yaml"
)

// RegistryConfig is the "registries:" section of the agent's config file:
// per-registry mirrors, credentials and TLS settings. It also reads the
// whole agent.yaml, ignoring other sections.
type RegistryConfig struct {
	// Registries is keyed by registry host as it appears in image names
	// ("docker.io", "registry.example.com:5000").
	Registries map[string]Registry `json:"registries,omitempty" yaml:"registries,omitempty"`
	// DockerConfig is the path of a docker config.json whose "auths",
	// "credHelpers" and "credsStore" are used for registries without
	// credentials here (see dockerconfig.go). Empty: docker's default
	// ($DOCKER_CONFIG or ~/.docker/config.json, if present).
	DockerConfig string `json:"dockerConfig,omitempty" yaml:"dockerConfig,omitempty"`
}

// Registry is one registry's settings.
type Registry struct {
	// Mirrors are hosts (host[:port]) tried in order before the registry
	// itself, with the same repository path. A mirror's own TLS and
	// credentials come from its entry in Registries, if any.
	Mirrors  []string `json:"mirrors,omitempty" yaml:"mirrors,omitempty"`
	Username string   `json:"username,omitempty" yaml:"username,omitempty"`
	Password string   `json:"password,omitempty" yaml:"password,omitempty"`
	// Token is a registry (bearer) token, used instead of a password.
	Token string `json:"token,omitempty" yaml:"token,omitempty"`
	// CAFile is a PEM bundle trusted for this registry, added to the
	// system roots.
	CAFile string `json:"caFile,omitempty" yaml:"caFile,omitempty"`
	// Insecure allows plain HTTP to this host. Without it only HTTPS is
	// used, loopback included.
	Insecure bool `json:"insecure,omitempty" yaml:"insecure,omitempty"`
}

// LoadRegistryConfig reads the registries section of a YAML (or JSON)
// config file. A missing file gives an empty config.
func LoadRegistryConfig(path string) (RegistryConfig, error) {
	var cfg RegistryConfig
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("registry config %s: %w", path, err)
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		return cfg, fmt.Errorf("registry config %s: %w", path, err)
	}
	return cfg, nil
}

// endpoint is one host to fetch a repository from, with its client.
type endpoint struct {
	host   string // host[:port] in URLs
	repo   string // repository path, e.g. "library/alpine"
	client *http.Client
}

// registryHost maps an image name's domain to the host serving its API.
func registryHost(domain string) string {
	if domain == "docker.io" {
		return "index.docker.io"
	}
	return domain
}

// endpoints lists the mirrors of domain, then domain itself.
func (c RegistryConfig) endpoints(domain string) []string {
	var out []string
	out = append(out, c.Registries[domain].Mirrors...)
	return append(out, registryHost(domain))
}

// settings returns the settings for host, looked up as given and, for
// docker hub, under its other names.
func (c RegistryConfig) settings(host string) Registry {
	if r, ok := c.Registries[host]; ok {
		return r
	}
	if host == "index.docker.io" || host == "registry-1.docker.io" {
		return c.Registries["docker.io"]
	}
	return Registry{}
}

// authenticator picks credentials for host: this config's, then the docker
// config file's (DockerConfig, or docker's default location), then
// anonymous.
func (c RegistryConfig) authenticator(ctx context.Context, host string, reg name.Registry) (authn.Authenticator, error) {
	st := c.settings(host)
	switch {
	case st.Token != "":
		return authn.FromConfig(authn.AuthConfig{RegistryToken: st.Token}), nil
	case st.Username != "" || st.Password != "":
		return &authn.Basic{Username: st.Username, Password: st.Password}, nil
	}
	return dockerKeychain{path: c.DockerConfig}.ResolveContext(ctx, reg)
}

// httpsOnly refuses plain HTTP for hosts not marked insecure (ggcr's ping
// would otherwise fall back to HTTP on loopback and private addresses).
type httpsOnly struct{ inner http.RoundTripper }

func (t httpsOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "https" {
		return nil, fmt.Errorf("plain HTTP to %s refused: the registry is not marked insecure", r.URL.Host)
	}
	return t.inner.RoundTrip(r)
}

// connect sets up an authenticated client for repo on host. base, when
// set, replaces the default transport (tests).
func (c RegistryConfig) connect(ctx context.Context, host, repo string, base http.RoundTripper) (*endpoint, error) {
	st := c.settings(host)
	var opts []name.Option
	if st.Insecure {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(host, opts...)
	if err != nil {
		return nil, invalidf("registry %q: %v", host, err)
	}
	if base == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = 60 * time.Second
		if st.CAFile != "" {
			pem, err := os.ReadFile(st.CAFile)
			if err != nil {
				return nil, fmt.Errorf("registry %s: CA file: %w", host, err)
			}
			pool, err := x509.SystemCertPool()
			if err != nil || pool == nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, invalidf("registry %s: CA file %s holds no PEM certificate", host, st.CAFile)
			}
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		base = tr
	}
	if !st.Insecure {
		base = httpsOnly{base}
	}
	auth, err := c.authenticator(ctx, host, reg)
	if err != nil {
		return nil, err
	}
	scope := "repository:" + repo + ":" + transport.PullScope
	rt, err := transport.NewWithContext(ctx, reg, auth, base, []string{scope})
	if err != nil {
		return nil, classify(fmt.Errorf("registry %s: %w", host, err))
	}
	return &endpoint{host: host, repo: repo, client: &http.Client{Transport: rt}}, nil
}

// url builds an API URL; ggcr's transport sets the scheme it negotiated.
func (e *endpoint) url(kind, ref string) string {
	return "https://" + e.host + "/v2/" + e.repo + "/" + kind + "/" + ref
}

// classify adds a sentinel category to a registry or network error.
func classify(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if categorized(err) {
		return err
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return &wrapCategory{cat: errdefs.ErrUnauthenticated, err: err}
		case http.StatusNotFound:
			return &wrapCategory{cat: errdefs.ErrNotFound, err: err}
		}
		if te.StatusCode >= 500 {
			return &wrapCategory{cat: ErrUnreachable, err: err}
		}
		return err
	}
	if errors.Is(err, syscall.ENOSPC) {
		return &wrapCategory{cat: ErrNoSpace, err: err}
	}
	var ne net.Error
	var ue *url.Error
	if errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, syscall.ECONNREFUSED) {
		return &wrapCategory{cat: ErrUnreachable, err: err}
	}
	return err
}

// categorized reports whether err already carries one of the categories
// this package uses.
func categorized(err error) bool {
	return errdefs.IsUnauthorized(err) || errdefs.IsNotFound(err) || errdefs.IsUnavailable(err) ||
		errdefs.IsResourceExhausted(err) || errdefs.IsDataLoss(err) || errdefs.IsInvalidArgument(err) ||
		errdefs.IsNotImplemented(err) || errdefs.IsFailedPrecondition(err)
}

// statusError turns an unexpected HTTP status into a categorised error.
func statusError(what string, resp *http.Response) error {
	switch resp.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		return categoryf(errdefs.ErrUnauthenticated, "%s: unauthorized (HTTP %d): check the registry credentials", what, resp.StatusCode)
	case http.StatusNotFound:
		return categoryf(errdefs.ErrNotFound, "%s: not found (HTTP 404): unknown repository, tag or digest", what)
	}
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
		return categoryf(ErrUnreachable, "%s: registry error (HTTP %d)", what, resp.StatusCode)
	}
	return fmt.Errorf("%s: unexpected HTTP status %d", what, resp.StatusCode)
}
