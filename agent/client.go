package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/tender-edge/tender/runtime/image"
)

// ErrNoDaemon means no agent answers on the socket.
var ErrNoDaemon = errors.New("the tender-agent daemon is not running")

// Client talks to a running agent over its unix socket. Its image methods
// mirror image.Store's, so the CLI can use either.
type Client struct {
	hc *http.Client
	// StateDir is the daemon's state directory.
	StateDir string
}

// Dial connects to the agent at socket, or returns ErrNoDaemon.
func Dial(ctx context.Context, socket string) (*Client, error) {
	c := &Client{hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var ping map[string]string
	if err := c.do(pctx, http.MethodGet, "/v1/ping", nil, nil, &ping); err != nil {
		return nil, fmt.Errorf("%w (%s: %w)", ErrNoDaemon, socket, err)
	}
	c.StateDir = ping["stateDir"]
	return c, nil
}

// do sends a request and decodes a JSON reply into out, or copies the body
// to w when w is set.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body io.Reader, out any, w ...io.Writer) error {
	u := "http://agent" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e apiError
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e); err != nil || e.Msg == "" {
			return fmt.Errorf("agent api: %s", resp.Status)
		}
		return &e
	}
	if len(w) > 0 {
		_, err := io.Copy(w[0], resp.Body)
		return err
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Apply sends an app spec (YAML or JSON) to the agent.
func (c *Client) Apply(ctx context.Context, specData []byte) (map[string]string, error) {
	var out map[string]string
	return out, c.do(ctx, http.MethodPost, "/v1/apps", nil, bytes.NewReader(specData), &out)
}

// Apps lists the desired apps and their status.
func (c *Client) Apps(ctx context.Context) (AppsResponse, error) {
	var out AppsResponse
	return out, c.do(ctx, http.MethodGet, "/v1/apps", nil, nil, &out)
}

// RemoveApp takes an app out of the desired state.
func (c *Client) RemoveApp(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/apps/"+url.PathEscape(name), nil, nil, nil)
}

// Get resolves an image reference.
func (c *Client) Get(ref string) (image.Image, error) {
	r, err := c.resolve(ref)
	return r.Image, err
}

// LayerDirs returns the layer directories of img, topmost first.
func (c *Client) LayerDirs(img image.Image) ([]string, error) {
	r, err := c.resolve(img.Digest.String())
	return r.LayerDirs, err
}

func (c *Client) resolve(ref string) (ResolvedImage, error) {
	var out ResolvedImage
	return out, c.do(context.Background(), http.MethodGet, "/v1/images/resolve", url.Values{"ref": {ref}}, nil, &out)
}

// List lists the images.
func (c *Client) List() ([]image.Image, error) {
	var out []image.Image
	return out, c.do(context.Background(), http.MethodGet, "/v1/images", nil, nil, &out)
}

// Load imports an OCI archive.
func (c *Client) Load(ctx context.Context, r io.Reader) ([]image.Image, error) {
	var out []image.Image
	return out, c.do(ctx, http.MethodPost, "/v1/images/load", nil, r, &out)
}

// Pull pulls an image with the agent's registry settings (the options'
// Registries, Progress and Transport are not sent).
func (c *Client) Pull(ctx context.Context, ref string, opts image.PullOptions) (image.Image, error) {
	q := url.Values{"ref": {ref}}
	if opts.Platform != nil {
		b, _ := json.Marshal(opts.Platform)
		q.Set("platform", string(b))
	}
	var out image.Image
	return out, c.do(ctx, http.MethodPost, "/v1/images/pull", q, nil, &out)
}

// Remove removes an image that no container uses.
func (c *Client) Remove(ref string) error {
	return c.do(context.Background(), http.MethodPost, "/v1/images/remove", url.Values{"ref": {ref}}, nil, nil)
}

// Prune removes what no container uses and the agent does not keep for a
// rollback; keep is decided by the agent and ignored here.
func (c *Client) Prune(keep map[digest.Digest]bool) ([]image.Image, int64, error) {
	var out PruneResponse
	err := c.do(context.Background(), http.MethodPost, "/v1/images/prune", nil, nil, &out)
	return out.Removed, out.Freed, err
}

// Save writes an image as an OCI archive to w.
func (c *Client) Save(ctx context.Context, ref string, w io.Writer) error {
	return c.do(ctx, http.MethodGet, "/v1/images/save", url.Values{"ref": {ref}}, nil, nil, w)
}

// Close releases idle connections.
func (c *Client) Close() error {
	c.hc.CloseIdleConnections()
	return nil
}
