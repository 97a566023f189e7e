// Package enroll is the device side of enrollment (`tender-agent enroll`):
// it makes the device's key on the device, sends a CSR and the device's
// facts to the controller over TLS pinned to the CA hash of the join token,
// and writes the certificate, the CA, the key and the updated agent config.
//
// The order is what makes it safe:
//
//  1. parse the join token (tdr1.<id>.<secret>.<cahash>, package sync/wire);
//  2. generate an ECDSA P-256 key and a CSR with CN = the device id, in
//     memory;
//  3. dial the controller: the TLS handshake succeeds only if the chain the
//     server sends holds a CA whose SubjectPublicKeyInfo hashes to the
//     token's hash and that CA signed the server's certificate for server
//     authentication (F-05). Otherwise the handshake fails before a single
//     byte of HTTP, so neither the token nor the CSR is sent;
//  4. POST the request; check the answer: the CA is the pinned one, the
//     certificate is for this device, for this key, for client auth and
//     signed by that CA; the fleet key parses;
//  5. stage every file as a temporary file next to its target (key 0600,
//     certificates 0644, the config with its old mode or 0600), check the
//     new config with Options.CheckConfig, and only then rename them into
//     place, the config last. On any failure before step 5's renames
//     nothing is written.
//
// The private key never leaves the device (F-06): only the CSR does. This
// package shares only sync/wire with the controller; it never imports
// fleet/ (the agent binary does not link it).
package enroll

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"sigs.k8s.io/yaml"

	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/sync/wire"
)

// Files written next to the agent config.
const (
	KeyFile  = "device.key"
	CertFile = "device.pem"
	CAFile   = "fleet-ca.pem"
)

// EnrollPath is the controller's enrollment route.
const EnrollPath = "/v1/enroll"

// DefaultTimeout bounds the whole exchange with the controller.
const DefaultTimeout = 30 * time.Second

// ErrCAMismatch: the controller's chain holds no CA with the token's hash.
// Nothing was sent.
var ErrCAMismatch = fmt.Errorf("controller's CA does not match the join token's hash: %w", errdefs.ErrPermissionDenied)

// Options are the inputs of Enroll.
type Options struct {
	// Server is the controller's URL, https://HOST:PORT.
	Server string
	// Token is the join token.
	Token string
	// DeviceID is the id to enroll as (default: the config's deviceId,
	// else the hostname in lower case).
	DeviceID string
	// ConfigPath is the agent config to update (it may not exist yet); the
	// key and certificates are written in its directory.
	ConfigPath string
	// Facts describe the device to the controller.
	Facts wire.DeviceFacts
	// CheckConfig, if set, is given the path of the staged new config and
	// refuses it with an error (the agent's own LoadConfig): nothing is
	// written then.
	CheckConfig func(path string) error
	// Timeout bounds the exchange (default 30s).
	Timeout time.Duration
	// Password makes the device a random MQTT password too, sends only its
	// hash, and has the agent authenticate with it (username = device id)
	// instead of its client certificate: for a path to the broker that
	// cannot carry client certificates (a TLS-terminating proxy).
	Password bool
}

// Result says what Enroll wrote.
type Result struct {
	DeviceID   string
	Broker     string
	Labels     map[string]string
	ConfigPath string
	KeyFile    string
	CertFile   string
	CAFile     string
	// NotAfter is the end of the certificate's validity.
	NotAfter time.Time
}

// Enroll enrolls the device (see the package comment).
func Enroll(ctx context.Context, opt Options) (Result, error) {
	tok, err := wire.ParseJoinToken(opt.Token)
	if err != nil {
		return Result{}, err
	}
	server, err := url.Parse(opt.Server)
	if err != nil || server.Scheme != "https" || server.Host == "" {
		return Result{}, fmt.Errorf("server %q: want https://HOST:PORT: %w", opt.Server, errdefs.ErrInvalidArgument)
	}
	if opt.ConfigPath == "" {
		return Result{}, fmt.Errorf("config path empty: %w", errdefs.ErrInvalidArgument)
	}
	cfgPath, err := filepath.Abs(opt.ConfigPath)
	if err != nil {
		return Result{}, fmt.Errorf("config path %q: %v: %w", opt.ConfigPath, err, errdefs.ErrInvalidArgument)
	}
	cfg, cfgMode, err := readConfig(cfgPath)
	if err != nil {
		return Result{}, err
	}
	id := opt.DeviceID
	if id == "" {
		id, _ = cfg["deviceId"].(string)
	}
	if id == "" {
		h, err := os.Hostname()
		if err != nil {
			return Result{}, fmt.Errorf("device id: no --id and no hostname: %w", err)
		}
		id = strings.ToLower(h)
	}
	if err := topic.ValidDeviceID(id); err != nil {
		return Result{}, fmt.Errorf("%w (choose one with --id)", err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Result{}, fmt.Errorf("generate device key: %w", err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: id}}, key)
	if err != nil {
		return Result{}, fmt.Errorf("make certificate request: %w", err)
	}
	req := wire.EnrollRequest{
		Schema: wire.EnrollSchema, TokenID: tok.ID, Secret: tok.Secret, DeviceID: id,
		CSR:   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
		Facts: opt.Facts,
	}
	var password string
	if opt.Password {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return Result{}, fmt.Errorf("make MQTT password: %w", err)
		}
		password = base64.RawURLEncoding.EncodeToString(b)
		sum := sha256.Sum256([]byte(password))
		req.PasswordHash = hex.EncodeToString(sum[:])
	}
	resp, err := post(ctx, server, tok.CAHash, req, opt.Timeout)
	if err != nil {
		return Result{}, err
	}
	cert, err := checkResponse(resp, id, tok.CAHash, key)
	if err != nil {
		return Result{}, fmt.Errorf("controller's answer refused: %w", err)
	}

	dir := filepath.Dir(cfgPath)
	res := Result{
		DeviceID: id, Broker: resp.Brokers[0], Labels: maps.Clone(resp.Labels), ConfigPath: cfgPath,
		KeyFile: filepath.Join(dir, KeyFile), CertFile: filepath.Join(dir, CertFile), CAFile: filepath.Join(dir, CAFile),
		NotAfter: cert.NotAfter,
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Result{}, fmt.Errorf("marshal device key: %w", err)
	}
	cfg["deviceId"] = id
	fleet, _ := cfg["fleet"].(map[string]any)
	if fleet == nil {
		fleet = map[string]any{}
	}
	fleet["broker"] = res.Broker
	fleet["publicKey"] = resp.PublicKey
	fleet["caFile"] = res.CAFile
	fleet["certFile"] = res.CertFile
	fleet["keyFile"] = res.KeyFile
	delete(fleet, "username")
	delete(fleet, "password")
	if opt.Password {
		// The certificate stays on disk (a later enroll or broker may use
		// it) but the agent presents the password.
		delete(fleet, "certFile")
		delete(fleet, "keyFile")
		fleet["username"], fleet["password"] = id, password
		cfgMode = 0o600 // it holds a secret now
	}
	cfg["fleet"] = fleet
	cfgYAML, err := yaml.Marshal(cfg)
	if err != nil {
		return Result{}, fmt.Errorf("encode config: %w", err)
	}

	created, err := mkdirOnce(dir)
	if err != nil {
		return Result{}, err
	}
	st := &stage{}
	err = func() error {
		for _, f := range []struct {
			path string
			data []byte
			mode os.FileMode
		}{
			{res.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600},
			{res.CertFile, []byte(resp.Certificate), 0o644},
			{res.CAFile, []byte(resp.CA), 0o644},
			{cfgPath, cfgYAML, cfgMode}, // last: renamed last
		} {
			if err := st.add(f.path, f.data, f.mode); err != nil {
				return fmt.Errorf("stage %s: %w", f.path, err)
			}
		}
		if opt.CheckConfig != nil {
			if err := opt.CheckConfig(st.tmps[len(st.tmps)-1]); err != nil {
				return fmt.Errorf("the updated config would be refused: %w", err)
			}
		}
		return nil
	}()
	if err != nil {
		st.abort()
		if created {
			os.Remove(dir)
		}
		return Result{}, err
	}
	if err := st.commit(); err != nil {
		return Result{}, err
	}
	return res, nil
}

// readConfig reads the agent config as a generic map, so that every field
// is kept (comments are not), and its mode (0600 for a new one).
func readConfig(path string) (map[string]any, os.FileMode, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]any{}, 0o600, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read config: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, 0, fmt.Errorf("read config: %w", err)
	}
	m := map[string]any{}
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, 0, fmt.Errorf("config %s: %v: %w", path, err, errdefs.ErrInvalidArgument)
	}
	if m == nil {
		m = map[string]any{}
	}
	if f, ok := m["fleet"]; ok && f != nil {
		if _, ok := f.(map[string]any); !ok {
			return nil, 0, fmt.Errorf("config %s: fleet is not a mapping: %w", path, errdefs.ErrInvalidArgument)
		}
	}
	return m, fi.Mode().Perm(), nil
}

// post sends the request over TLS pinned to caHash and decodes the answer.
func post(ctx context.Context, server *url.URL, caHash string, req wire.EnrollRequest, timeout time.Duration) (wire.EnrollResponse, error) {
	body, err := wire.EncodeEnrollRequest(req)
	if err != nil {
		return wire.EnrollResponse{}, err
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			// The chain is checked by VerifyConnection against the pin,
			// not against the system's roots: the device knows no CA yet.
			InsecureSkipVerify: true, //nolint:gosec // pinned below
			VerifyConnection: func(cs tls.ConnectionState) error {
				return verifyPinned(cs.PeerCertificates, caHash, server.Host)
			},
		},
		DisableKeepAlives:   true,
		TLSHandshakeTimeout: timeout,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	u := server.JoinPath(EnrollPath)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return wire.EnrollResponse{}, fmt.Errorf("enroll at %s: %w", server.Host, err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hresp, err := client.Do(hreq)
	if err != nil {
		if errors.Is(err, ErrCAMismatch) {
			return wire.EnrollResponse{}, unwrapURL(err)
		}
		return wire.EnrollResponse{}, fmt.Errorf("enroll at %s: %v: %w", server.Host, unwrapURL(err), errdefs.ErrUnavailable)
	}
	defer hresp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(hresp.Body, wire.MaxEnrollResponseSize+1))
	if err != nil {
		return wire.EnrollResponse{}, fmt.Errorf("enroll at %s: read answer: %v: %w", server.Host, err, errdefs.ErrUnavailable)
	}
	if hresp.StatusCode != http.StatusOK {
		var eb struct {
			Error string `json:"error"`
		}
		msg := hresp.Status
		if json.Unmarshal(data, &eb) == nil && eb.Error != "" {
			msg = eb.Error
			if len(msg) > 512 {
				msg = msg[:512] + "…"
			}
		}
		return wire.EnrollResponse{}, fmt.Errorf("controller at %s refused the enrollment: %s: %w", server.Host, msg, wire.EnrollStatusCategory(hresp.StatusCode))
	}
	resp, err := wire.DecodeEnrollResponse(data)
	if err != nil {
		return wire.EnrollResponse{}, fmt.Errorf("controller's answer: %w", err)
	}
	return resp, nil
}

// unwrapURL drops url.Error's "Post \"https://...\": " prefix.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// verifyPinned is wire.VerifyPinned with the agent's category and what
// the operator needs to know: nothing was sent.
func verifyPinned(chain []*x509.Certificate, caHash, host string) error {
	if err := wire.VerifyPinned(chain, caHash); err != nil {
		return fmt.Errorf("%w: the controller at %s: %v; nothing was sent", ErrCAMismatch, host, err)
	}
	return nil
}

// checkResponse checks the controller's answer against what was asked.
func checkResponse(resp wire.EnrollResponse, id, caHash string, key *ecdsa.PrivateKey) (*x509.Certificate, error) {
	if resp.DeviceID != id {
		return nil, fmt.Errorf("for device %q, asked for %q: %w", resp.DeviceID, id, errdefs.ErrInvalidArgument)
	}
	ca, err := parseCert(resp.CA)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if wire.CAHash(ca) != caHash || !ca.IsCA {
		return nil, fmt.Errorf("ca %s is not the CA of the join token %s: %w", wire.CAHash(ca), caHash, errdefs.ErrPermissionDenied)
	}
	cert, err := parseCert(resp.Certificate)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("certificate is not for this device's key: %w", errdefs.ErrInvalidArgument)
	}
	if cert.Subject.CommonName != id {
		return nil, fmt.Errorf("certificate CN %q, want %q: %w", cert.Subject.CommonName, id, errdefs.ErrInvalidArgument)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("certificate: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if _, err := sign.ParsePublicKey([]byte(resp.PublicKey)); err != nil {
		return nil, fmt.Errorf("publicKey: %w", err)
	}
	return cert, nil
}

func parseCert(s string) (*x509.Certificate, error) {
	blk, _ := pem.Decode([]byte(s))
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("no PEM CERTIFICATE block: %w", errdefs.ErrInvalidArgument)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	return c, nil
}

// mkdirOnce creates dir (0700) if it is missing and reports whether it did.
func mkdirOnce(dir string) (bool, error) {
	if _, err := os.Stat(dir); err == nil {
		return false, nil
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return false, fmt.Errorf("config directory: %w", err)
	}
	return true, nil
}

// stage is a set of files written to temporary names, renamed together.
type stage struct {
	paths, tmps []string
}

func (s *stage) add(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	s.paths, s.tmps = append(s.paths, path), append(s.tmps, f.Name())
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (s *stage) abort() {
	for _, t := range s.tmps {
		os.Remove(t)
	}
}

// commit renames every staged file into place, in order, and syncs the
// directory.
func (s *stage) commit() error {
	for i, t := range s.tmps {
		if err := os.Rename(t, s.paths[i]); err != nil {
			for _, rest := range s.tmps[i:] {
				os.Remove(rest)
			}
			return fmt.Errorf("install %s: %w", s.paths[i], err)
		}
	}
	if len(s.paths) > 0 {
		if d, err := os.Open(filepath.Dir(s.paths[0])); err == nil {
			_ = d.Sync()
			d.Close()
		}
	}
	return nil
}
