package fleetsim

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
)

// BridgeConfig describes a fleet broker of several mosquittos: edges that
// devices connect to, bridged to one core that the controllers connect to,
// written from the repository's configs/mosquitto/bridge (edge.conf,
// core.conf, core.acl) and configs/mosquitto/acl with their paths,
// listeners and names rewritten, as an operator would copy them.
type BridgeConfig struct {
	// Repo is the repository's root.
	Repo string
	// Dir receives core/ and edge-K/ (K from 1), each with its
	// mosquitto.conf, ACL and persistence, and each edge's bridge
	// certificate.
	Dir string
	// CA is the fleet CA: it issues each edge's bridge certificate (CN
	// tender-controller-bridge-K).
	CA *CA
	// CAFile, ServerCert, ServerKey and CRL are used in place by every
	// mosquitto (the controller's DATA/ca.crt, server.crt, server.key,
	// crl.pem).
	CAFile, ServerCert, ServerKey, CRL string
	// Core is the core's listener (host:port); Edges the edges' device
	// listeners, one per edge.
	Core  string
	Edges []string
	// MaxQueued, if positive, replaces max_queued_messages everywhere.
	MaxQueued int
	// Quiet turns connection messages off (thousands of devices).
	Quiet bool
}

// Bridge is what WriteBridge wrote: the config file of the core and of
// each edge.
type Bridge struct {
	Core  string
	Edges []string
}

// WriteBridge writes the configs of cfg's core and edges and issues the
// edges' bridge certificates. Run each with mosquitto -c FILE, as root.
func WriteBridge(cfg BridgeConfig) (Bridge, error) {
	if len(cfg.Edges) == 0 || cfg.Core == "" || cfg.CA == nil {
		return Bridge{}, fmt.Errorf("bridge: a core, a CA and at least one edge are needed: %w", errdefs.ErrInvalidArgument)
	}
	if len(cfg.Edges) > 8 {
		return Bridge{}, fmt.Errorf("bridge: %d edges, core.acl has users for 8: %w", len(cfg.Edges), errdefs.ErrInvalidArgument)
	}
	read := func(p string) (string, error) {
		b, err := os.ReadFile(filepath.Join(cfg.Repo, p))
		return string(b), err
	}
	edgeConf, err := read("configs/mosquitto/bridge/edge.conf")
	if err != nil {
		return Bridge{}, err
	}
	coreConf, err := read("configs/mosquitto/bridge/core.conf")
	if err != nil {
		return Bridge{}, err
	}
	coreACL, err := read("configs/mosquitto/bridge/core.acl")
	if err != nil {
		return Bridge{}, err
	}
	edgeACL, err := read("configs/mosquitto/acl")
	if err != nil {
		return Bridge{}, err
	}
	// common rewrites: files used in place, the rest into dir
	common := func(dir string) [][2]string {
		r := [][2]string{
			{" /etc/mosquitto/tender/device-ca.crt\n", " " + cfg.CAFile + "\n"},
			{" /etc/mosquitto/tender/server.crt\n", " " + cfg.ServerCert + "\n"},
			{" /etc/mosquitto/tender/server.key\n", " " + cfg.ServerKey + "\n"},
			{" /etc/mosquitto/tender/crl.pem\n", " " + cfg.CRL + "\n"},
			{"/etc/mosquitto/tender/", dir + "/"},
			{"persistence_location /var/lib/mosquitto/", "persistence_location " + dir + "/"},
			{"\nuser mosquitto\n", "\nuser root\n"},
		}
		return r
	}
	tail := func(s string) (string, error) {
		if cfg.MaxQueued > 0 {
			var err error
			if s, err = replaceLine(s, "max_queued_messages ", "max_queued_messages "+strconv.Itoa(cfg.MaxQueued)); err != nil {
				return "", err
			}
		}
		if cfg.Quiet {
			return rewrite(s, [][2]string{{"connection_messages true", "connection_messages false"}})
		}
		return s, nil
	}
	listen := func(addr string) (string, error) {
		h, p, err := net.SplitHostPort(addr)
		if err != nil {
			return "", fmt.Errorf("bridge: listener %q: %v: %w", addr, err, errdefs.ErrInvalidArgument)
		}
		return p + " " + h, nil
	}
	var out Bridge
	dir := filepath.Join(cfg.Dir, "core")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Bridge{}, err
	}
	l, err := listen(cfg.Core)
	if err != nil {
		return Bridge{}, err
	}
	s, err := rewrite(coreConf, append(common(dir), [2]string{"\nlistener 8885\n", "\nlistener " + l + "\n"}))
	if err == nil {
		s, err = tail(s)
	}
	if err != nil {
		return Bridge{}, fmt.Errorf("bridge: core.conf: %w", err)
	}
	out.Core = filepath.Join(dir, "mosquitto.conf")
	if err := writeFiles(dir, map[string][]byte{"mosquitto.conf": []byte(s), "core.acl": []byte(coreACL)}); err != nil {
		return Bridge{}, err
	}
	for k, addr := range cfg.Edges {
		k++
		dir := filepath.Join(cfg.Dir, "edge-"+strconv.Itoa(k))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return Bridge{}, err
		}
		name := "tender-controller-bridge-" + strconv.Itoa(k)
		l, err := listen(addr)
		if err != nil {
			return Bridge{}, err
		}
		s, err := rewrite(edgeConf, append(common(dir),
			[2]string{"\nlistener 8883\n", "\nlistener " + l + "\n"},
			[2]string{"address core.example.com:8885", "address " + cfg.Core},
			[2]string{"tender-controller-bridge-1", name}))
		if err == nil {
			s, err = tail(s)
		}
		if err != nil {
			return Bridge{}, fmt.Errorf("bridge: edge.conf: %w", err)
		}
		c, err := cfg.CA.Issue(name)
		if err != nil {
			return Bridge{}, err
		}
		// the chain carries the CA, as the controller's own does
		c.Certificate = append(c.Certificate, cfg.CA.Cert.Raw)
		cp, kp, err := PairPEM(c)
		if err != nil {
			return Bridge{}, err
		}
		if err := writeFiles(dir, map[string][]byte{"mosquitto.conf": []byte(s), "acl": []byte(edgeACL), "bridge.crt": cp, "bridge.key": kp}); err != nil {
			return Bridge{}, err
		}
		out.Edges = append(out.Edges, filepath.Join(dir, "mosquitto.conf"))
	}
	return out, nil
}

// rewrite replaces each old string by its new one, every one of which
// must be there (a config that changed under the rewrite is an error, not
// a silently different broker).
func rewrite(s string, rs [][2]string) (string, error) {
	for _, r := range rs {
		if !strings.Contains(s, r[0]) {
			return "", fmt.Errorf("no %q to rewrite: %w", r[0], errdefs.ErrNotFound)
		}
		s = strings.ReplaceAll(s, r[0], r[1])
	}
	return s, nil
}

// replaceLine replaces the line starting with prefix.
func replaceLine(s, prefix, line string) (string, error) {
	ls := strings.Split(s, "\n")
	for i, l := range ls {
		if strings.HasPrefix(l, prefix) {
			ls[i] = line
			return strings.Join(ls, "\n"), nil
		}
	}
	return "", fmt.Errorf("no line %q to replace: %w", prefix, errdefs.ErrNotFound)
}

func writeFiles(dir string, files map[string][]byte) error {
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// CRLPEM is an empty CRL of the CA, valid for a day: what mosquitto's
// crlfile needs when nothing is revoked.
func (ca *CA) CRLPEM() ([]byte, error) {
	now := time.Now()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: now.Add(-time.Hour), NextUpdate: now.Add(24 * time.Hour),
	}, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("CRL: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}
