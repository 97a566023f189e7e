package fleetsim

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/wire"
)

// EnrollPath is the controller's enrollment route (sync/wire's exchange).
const EnrollPath = "/v1/enroll"

// EnrollConfig says how to enroll simulated devices at a controller.
type EnrollConfig struct {
	// Server is the controller's API, https://HOST:PORT.
	Server string
	// Token is a join token with a use for every device
	// (tender token create --uses N).
	Token string
	IDs   []string
	// Workers is the number of enrollments in flight (default 8).
	Workers int
	// Facts are the facts device i sends (default: as Config's).
	Facts func(i int, id string) wire.DeviceFacts
	// Timeout bounds one request (default 30s). A 429 answer is retried
	// after its Retry-After, a 503 (the token's use raced another
	// enrollment) after up to 110ms, each at most 1000 times.
	Timeout time.Duration
}

// Enrollment is what the controller gave the enrolled devices: what a
// Config needs to connect them as the controller's own devices.
type Enrollment struct {
	// Certificates are the devices' client certificates, by id, with the
	// private keys made here (only the CSRs left the simulator).
	Certificates map[string]tls.Certificate
	// CA is the fleet CA, checked against the token's hash.
	CA *x509.Certificate
	// FleetKey is the fleet's signing key, from the answers.
	FleetKey ed25519.PublicKey
	// Brokers are the MQTT URLs the controller named (tls://HOST:PORT).
	Brokers []string
	// Retries counts the attempts answered 429 or 503 and tried again.
	Retries int
}

// Pool is a pool holding the fleet CA alone (Config.RootCAs).
func (e *Enrollment) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(e.CA)
	return p
}

// Certificate gives device id its enrolled certificate (Config.Certificate).
func (e *Enrollment) Certificate(id string) (tls.Certificate, error) {
	c, ok := e.Certificates[id]
	if !ok {
		return tls.Certificate{}, fmt.Errorf("device %s was not enrolled: %w", id, errdefs.ErrNotFound)
	}
	return c, nil
}

// Enroll enrolls every device of cfg.IDs through the controller's real
// endpoint (POST /v1/enroll, the controller's CA pinned to the token's
// hash as the agent does), Workers at a time, each with a key of its own.
// It stops at the first refusal other than a rate limit.
func Enroll(ctx context.Context, cfg EnrollConfig) (*Enrollment, error) {
	tok, err := wire.ParseJoinToken(cfg.Token)
	if err != nil {
		return nil, err
	}
	server, err := url.Parse(cfg.Server)
	if err != nil || server.Scheme != "https" || server.Host == "" {
		return nil, fmt.Errorf("enroll server %q: want https://HOST:PORT: %w", cfg.Server, errdefs.ErrInvalidArgument)
	}
	if len(cfg.IDs) == 0 {
		return nil, fmt.Errorf("enroll: no device ids: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Facts == nil {
		cfg.Facts = defaultFacts
	}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			// Checked against the pin in VerifyConnection: the device
			// knows no CA yet, only the token's hash of it.
			InsecureSkipVerify: true, //nolint:gosec // pinned below
			VerifyConnection: func(cs tls.ConnectionState) error {
				return verifyPinned(cs.PeerCertificates, tok.CAHash)
			},
		},
		MaxIdleConnsPerHost: cfg.Workers,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	u := server.JoinPath(EnrollPath).String()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := &Enrollment{Certificates: make(map[string]tls.Certificate, len(cfg.IDs))}
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	next := make(chan int)
	for range cfg.Workers {
		wg.Go(func() {
			for i := range next {
				id := cfg.IDs[i]
				c, resp, retries, err := enrollOne(ctx, client, u, tok, id, cfg.Facts(i, id))
				mu.Lock()
				out.Retries += retries
				if err == nil {
					err = out.add(id, c, resp, tok.CAHash)
				}
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("enroll %s: %w", id, err)
					cancel()
				}
				mu.Unlock()
			}
		})
	}
feed:
	for i := range cfg.IDs {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// add records one answer, checking it names the same CA and key as the
// others. The caller holds the lock.
func (e *Enrollment) add(id string, c tls.Certificate, resp wire.EnrollResponse, caHash string) error {
	if resp.DeviceID != id {
		return fmt.Errorf("answer for device %q: %w", resp.DeviceID, errdefs.ErrInvalidArgument)
	}
	if e.CA == nil {
		b, _ := pem.Decode([]byte(resp.CA))
		if b == nil {
			return fmt.Errorf("answer's CA: no PEM block: %w", errdefs.ErrInvalidArgument)
		}
		ca, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return fmt.Errorf("answer's CA: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		if wire.CAHash(ca) != caHash || !ca.IsCA {
			return fmt.Errorf("answer's CA %s is not the token's %s: %w", wire.CAHash(ca), caHash, errdefs.ErrPermissionDenied)
		}
		pub, err := sign.ParsePublicKey([]byte(resp.PublicKey))
		if err != nil {
			return fmt.Errorf("answer's fleet key: %w", err)
		}
		e.CA, e.FleetKey, e.Brokers = ca, pub, resp.Brokers
	} else if pub, err := sign.ParsePublicKey([]byte(resp.PublicKey)); err != nil || !pub.Equal(e.FleetKey) {
		return fmt.Errorf("answer's fleet key differs from the first answer's: %w", errdefs.ErrConflict)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return fmt.Errorf("certificate: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	pool := x509.NewCertPool()
	pool.AddCert(e.CA)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil || leaf.Subject.CommonName != id {
		return fmt.Errorf("certificate for %q (CN %q) is not a client certificate of the fleet CA: %v: %w", id, leaf.Subject.CommonName, err, errdefs.ErrPermissionDenied)
	}
	c.Leaf = leaf
	e.Certificates[id] = c
	return nil
}

// enrollOne makes a key and a CSR for id and posts them, retrying while
// the answer is 429.
func enrollOne(ctx context.Context, client *http.Client, u string, tok wire.JoinToken, id string, facts wire.DeviceFacts) (tls.Certificate, wire.EnrollResponse, int, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, wire.EnrollResponse{}, 0, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: id}}, key)
	if err != nil {
		return tls.Certificate{}, wire.EnrollResponse{}, 0, fmt.Errorf("create CSR: %w", err)
	}
	body, err := wire.EncodeEnrollRequest(wire.EnrollRequest{Schema: wire.EnrollSchema, TokenID: tok.ID, Secret: tok.Secret, DeviceID: id,
		CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), Facts: facts})
	if err != nil {
		return tls.Certificate{}, wire.EnrollResponse{}, 0, err
	}
	for retries := 0; ; retries++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
		if err != nil {
			return tls.Certificate{}, wire.EnrollResponse{}, retries, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return tls.Certificate{}, wire.EnrollResponse{}, retries, fmt.Errorf("post: %v: %w", err, errdefs.ErrUnavailable)
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxEnrollResponseSize+1))
		resp.Body.Close()
		if err != nil {
			return tls.Certificate{}, wire.EnrollResponse{}, retries, fmt.Errorf("read answer: %v: %w", err, errdefs.ErrUnavailable)
		}
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			// Rate-limited, or the token's use raced another
			// enrollment's: both say try again.
			wait := 10*time.Millisecond + time.Duration(mrand.Int64N(int64(100*time.Millisecond)))
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
				wait = time.Duration(s) * time.Second
			}
			if retries >= 1000 {
				return tls.Certificate{}, wire.EnrollResponse{}, retries, fmt.Errorf("refused %d times, last %d: %w", retries+1, resp.StatusCode, errdefs.ErrUnavailable)
			}
			if err := sleep(ctx, wait); err != nil {
				return tls.Certificate{}, wire.EnrollResponse{}, retries, err
			}
			continue
		}
		if resp.StatusCode != http.StatusOK {
			var eb struct {
				Error string `json:"error"`
			}
			_ = json.Unmarshal(data, &eb)
			return tls.Certificate{}, wire.EnrollResponse{}, retries, fmt.Errorf("refused %d: %s: %w", resp.StatusCode, eb.Error, wire.EnrollStatusCategory(resp.StatusCode))
		}
		er, err := wire.DecodeEnrollResponse(data)
		if err != nil {
			return tls.Certificate{}, wire.EnrollResponse{}, retries, fmt.Errorf("answer: %w", err)
		}
		b, _ := pem.Decode([]byte(er.Certificate))
		if b == nil {
			return tls.Certificate{}, wire.EnrollResponse{}, retries, fmt.Errorf("answer's certificate: no PEM block: %w", errdefs.ErrInvalidArgument)
		}
		return tls.Certificate{Certificate: [][]byte{b.Bytes}, PrivateKey: key}, er, retries, nil
	}
}

// verifyPinned is the agent's check (wire.VerifyPinned), as an error of
// the permission category.
func verifyPinned(chain []*x509.Certificate, caHash string) error {
	if err := wire.VerifyPinned(chain, caHash); err != nil {
		return fmt.Errorf("the controller's certificate does not match the join token's CA: %v: %w", err, errdefs.ErrPermissionDenied)
	}
	return nil
}
