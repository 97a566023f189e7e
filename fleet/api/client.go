package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/store"
)

// ClientConfig says how to reach the API.
type ClientConfig struct {
	// Server is the controller's URL, https://host:port (http:// only for
	// a controller serving plain HTTP).
	Server string
	// Token is the bearer token.
	Token string
	// CAFile is a PEM file of the CA that signed the server's certificate
	// (the fleet CA, ca.crt in the controller's data directory); CA is the
	// same in memory. Neither: the system's roots.
	CAFile string
	CA     []byte
	// Timeout bounds each request; 0: 30s.
	Timeout time.Duration
	// OnStale, if set, is called with the Tender-Stale header's text
	// (StaleHeader) of every answer that may be stale.
	OnStale func(method, path, stale string)
}

// Client is a typed client of the API. Its errors carry the errdefs
// category the server answered with (errdefs.IsNotFound, ...), and
// ErrUnreachable when nothing answers.
type Client struct {
	base    *url.URL
	token   string
	hc      *http.Client
	onStale func(method, path, stale string)
}

// NewClient checks cfg and builds a client; it sends nothing.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Server == "" {
		return nil, fmt.Errorf("no controller address: give --server or TENDER_SERVER: %w", errdefs.ErrInvalidArgument)
	}
	u, err := url.Parse(cfg.Server)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("controller address %q: want https://HOST:PORT: %w", cfg.Server, errdefs.ErrInvalidArgument)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	tlsc := &tls.Config{MinVersion: tls.VersionTLS12}
	pem := cfg.CA
	if cfg.CAFile != "" {
		if pem, err = os.ReadFile(cfg.CAFile); err != nil {
			return nil, fmt.Errorf("read CA file: %w: %w", err, errdefs.ErrInvalidArgument)
		}
	}
	if len(pem) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA %s: no PEM certificate in it: %w", cfg.CAFile, errdefs.ErrInvalidArgument)
		}
		tlsc.RootCAs = pool
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	return &Client{base: u, token: cfg.Token, onStale: cfg.OnStale, hc: &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{TLSClientConfig: tlsc, Proxy: http.ProxyFromEnvironment, TLSHandshakeTimeout: 10 * time.Second},
		// A redirect would carry the token elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}, nil
}

// Server is the controller's URL.
func (c *Client) Server() string { return c.base.String() }

// do sends a request with a JSON (or raw, for []byte) body and decodes a
// JSON answer into out.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var body io.Reader
	switch v := in.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(v)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	u := *c.base
	u.Path += path
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("%s %s: %w: %w", method, path, err, errdefs.ErrInvalidArgument)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var cve *tls.CertificateVerificationError
		var uae x509.UnknownAuthorityError
		if errors.As(err, &cve) || errors.As(err, &uae) {
			return fmt.Errorf("%s: the server's certificate is not trusted (give its CA with --ca): %w: %w", c.base.Host, err, errdefs.ErrUnauthenticated)
		}
		return unreachableError{host: c.base.Host, cause: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e Error
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e); err != nil || e.Msg == "" {
			return fmt.Errorf("%s %s: %s", method, path, resp.Status)
		}
		return &e
	}
	if st := resp.Header.Get(StaleHeader); st != "" && c.onStale != nil {
		c.onStale(method, path, st)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: answer: %w", method, path, err)
	}
	return nil
}

func get[T any](ctx context.Context, c *Client, path string, q url.Values) (T, error) {
	var out T
	return out, c.do(ctx, http.MethodGet, path, q, nil, &out)
}

func send[T any](ctx context.Context, c *Client, method, path string, in any) (T, error) {
	var out T
	return out, c.do(ctx, method, path, nil, in, &out)
}

func esc(s string) string { return url.PathEscape(s) }

// Health asks /healthz.
func (c *Client) Health(ctx context.Context) (Health, error) {
	return get[Health](ctx, c, "/healthz", nil)
}

// Devices lists the devices whose labels match selector (nil: all).
func (c *Client) Devices(ctx context.Context, selector map[string]string) ([]DeviceView, error) {
	q := url.Values{}
	if len(selector) > 0 {
		q.Set("selector", FormatSelector(selector))
	}
	return get[[]DeviceView](ctx, c, "/v1/devices", q)
}

// Device is one device in full.
func (c *Client) Device(ctx context.Context, id string) (DeviceDetail, error) {
	return get[DeviceDetail](ctx, c, "/v1/devices/"+esc(id), nil)
}

// LabelDevice sets and removes labels.
func (c *Client) LabelDevice(ctx context.Context, id string, set map[string]string, remove []string) (DeviceView, error) {
	return send[DeviceView](ctx, c, http.MethodPatch, "/v1/devices/"+esc(id), LabelRequest{Set: set, Remove: remove})
}

// RemoveDevice revokes and forgets a device.
func (c *Client) RemoveDevice(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/devices/"+esc(id), nil, nil, nil)
}

// Logs asks a device for the last lines of a container's output.
func (c *Client) Logs(ctx context.Context, device string, req LogsRequest) (CommandResult, error) {
	return send[CommandResult](ctx, c, http.MethodPost, "/v1/devices/"+esc(device)+"/logs", req)
}

// Restart asks a device to restart an app (or one container).
func (c *Client) Restart(ctx context.Context, device string, req RestartRequest) (CommandResult, error) {
	return send[CommandResult](ctx, c, http.MethodPost, "/v1/devices/"+esc(device)+"/restart", req)
}

// CreateJoinToken makes an enrollment token.
func (c *Client) CreateJoinToken(ctx context.Context, req JoinTokenRequest) (JoinTokenCreated, error) {
	return send[JoinTokenCreated](ctx, c, http.MethodPost, "/v1/tokens", req)
}

// CreateAPIToken makes an API token; its value is in the answer only.
func (c *Client) CreateAPIToken(ctx context.Context, req APITokenRequest) (APITokenCreated, error) {
	return send[APITokenCreated](ctx, c, http.MethodPost, "/v1/api-tokens", req)
}

// APITokens lists the API tokens (no values).
func (c *Client) APITokens(ctx context.Context) ([]APITokenView, error) {
	return get[[]APITokenView](ctx, c, "/v1/api-tokens", nil)
}

// RevokeAPIToken revokes the unrevoked API token named name.
func (c *Client) RevokeAPIToken(ctx context.Context, name string) (APITokenRevoked, error) {
	return send[APITokenRevoked](ctx, c, http.MethodDelete, "/v1/api-tokens/"+esc(name), nil)
}

// Apply sends an app spec (YAML or JSON) as it is.
func (c *Client) Apply(ctx context.Context, spec []byte) (AppView, error) {
	if spec == nil {
		spec = []byte{}
	}
	return send[AppView](ctx, c, http.MethodPost, "/v1/apps", spec)
}

// Apps lists the apps.
func (c *Client) Apps(ctx context.Context) ([]AppView, error) {
	return get[[]AppView](ctx, c, "/v1/apps", nil)
}

// App is one app.
func (c *Client) App(ctx context.Context, name string) (AppView, error) {
	return get[AppView](ctx, c, "/v1/apps/"+esc(name), nil)
}

// AppHistory is an app's revisions.
func (c *Client) AppHistory(ctx context.Context, name string) ([]AppRevisionView, error) {
	return get[[]AppRevisionView](ctx, c, "/v1/apps/"+esc(name)+"/history", nil)
}

// RemoveApp removes an app from every device, through a rollout (at once
// with now), then forgets it.
func (c *Client) RemoveApp(ctx context.Context, name string, now bool) (AppView, error) {
	var q url.Values
	if now {
		q = url.Values{"now": {"true"}}
	}
	var out AppView
	return out, c.do(ctx, http.MethodDelete, "/v1/apps/"+esc(name), q, nil, &out)
}

// Explain is placement's explanation for an app (device "": all).
func (c *Client) Explain(ctx context.Context, app, device string) (ExplainView, error) {
	q := url.Values{}
	if device != "" {
		q.Set("device", device)
	}
	return get[ExplainView](ctx, c, "/v1/apps/"+esc(app)+"/explain", q)
}

// Rollout is an app's current (or last) rollout.
func (c *Client) Rollout(ctx context.Context, app string) (RolloutView, error) {
	return get[RolloutView](ctx, c, "/v1/apps/"+esc(app)+"/rollout", nil)
}

// RolloutCommand pauses, resumes, aborts or undoes an app's rollout.
func (c *Client) RolloutCommand(ctx context.Context, app, command string) (RolloutView, error) {
	return send[RolloutView](ctx, c, http.MethodPost, "/v1/apps/"+esc(app)+"/rollout/"+esc(command), nil)
}

// Events are the fleet's events after f.After, filtered.
func (c *Client) Events(ctx context.Context, f EventFilter) ([]store.FeedEvent, error) {
	q := url.Values{}
	for k, v := range map[string]string{"device": f.Device, "app": f.App, "kind": f.Kind} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.After > 0 {
		q.Set("after", strconv.FormatUint(f.After, 10))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return get[[]store.FeedEvent](ctx, c, "/v1/events", q)
}

// Audit is the audit log after seq after.
func (c *Client) Audit(ctx context.Context, after uint64, limit int) ([]store.AuditEntry, error) {
	q := url.Values{}
	if after > 0 {
		q.Set("after", strconv.FormatUint(after, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	return get[[]store.AuditEntry](ctx, c, "/v1/audit", q)
}

// Status is the controller's state.
func (c *Client) Status(ctx context.Context) (StatusView, error) {
	return get[StatusView](ctx, c, "/v1/status", nil)
}

// OpenAPI is the API's OpenAPI document.
func (c *Client) OpenAPI(ctx context.Context) (json.RawMessage, error) {
	return get[json.RawMessage](ctx, c, "/v1/openapi.json", nil)
}

// unreachableError is nothing answering at the controller's address.
type unreachableError struct {
	host  string
	cause error
}

func (e unreachableError) Error() string {
	cause := e.cause
	var ue *url.Error
	if errors.As(cause, &ue) {
		cause = ue.Err
	}
	return fmt.Sprintf("the fleet controller at %s is not reachable: %v", e.host, cause)
}

func (e unreachableError) Unwrap() error { return ErrUnreachable }
