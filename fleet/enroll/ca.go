package enroll

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/sync/wire"
)

// Files under the CA's directory.
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
	CRLFile        = "crl.pem"
	// ControllerCertFile and ControllerKeyFile are the controller's
	// client certificate at an external broker (ControllerCertificate).
	ControllerCertFile = "controller.crt"
	ControllerKeyFile  = "controller.key"
)

// ControllerID is the controller's identity at an external broker: the CN
// of its client certificate, hence its MQTT user name there (mosquitto's
// use_identity_as_username) and the user configs/mosquitto/acl grants the
// fleet's rights to. No device may enroll under it, nor under any name
// that starts with it: several controllers sharing a broker each have
// their own (tender serve --broker-identity tender-controller-2), as a
// broker that takes the user name as the client id (mosquitto's
// use_username_as_clientid) lets only one session per name live.
const ControllerID = "tender-controller"

// Validity periods.
const (
	CAValidity     = 10 * 365 * 24 * time.Hour
	ServerValidity = 365 * 24 * time.Hour
	// serverRenewBefore: a server certificate closer than this to its end
	// is issued anew at start.
	serverRenewBefore = 30 * 24 * time.Hour
	// backdate covers devices whose clocks run a little behind.
	backdate = 5 * time.Minute
)

// CA is the fleet certificate authority: an ECDSA P-256 key and a
// self-signed certificate. It signs the controller's server certificate,
// device certificates and the CRL.
type CA struct {
	Cert *x509.Certificate
	// PEM is Cert in PEM, as the devices receive it.
	PEM []byte
	key *ecdsa.PrivateKey
	dir string
}

// LoadOrCreateCA loads the CA from dir, or creates it there on first start:
// dir is made 0700, the key written 0600 and the certificate 0644. A key
// file readable by anyone but its owner is refused (F-10).
func LoadOrCreateCA(dir string, now time.Time) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("fleet CA: %w", err)
	}
	if err := checkPrivateDir(dir); err != nil {
		return nil, err
	}
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	_, errC := os.Stat(certPath)
	_, errK := os.Stat(keyPath)
	switch {
	case errors.Is(errC, os.ErrNotExist) && errors.Is(errK, os.ErrNotExist):
		return createCA(dir, now)
	case errC != nil || errK != nil:
		return nil, fmt.Errorf("fleet CA in %s: %s and %s must both exist or both be missing (%v, %v): %w",
			dir, CACertFile, CAKeyFile, errC, errK, errdefs.ErrFailedPrecondition)
	}
	cert, key, err := loadPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("fleet CA: %w", err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("fleet CA: %s is not a CA certificate: %w", certPath, errdefs.ErrFailedPrecondition)
	}
	return &CA{Cert: cert, PEM: pemCert(cert.Raw), key: key, dir: dir}, nil
}

func createCA(dir string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("fleet CA: generate key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "Tender fleet CA", Organization: []string{"Tender"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("fleet CA: create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("fleet CA: %w", err)
	}
	keyPEM, err := pemKey(key)
	if err != nil {
		return nil, err
	}
	// The key first: a certificate without its key is refused at the next
	// start, a key without its certificate too; both missing is a new CA.
	if err := writeFileAtomic(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("fleet CA: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CACertFile), pemCert(der), 0o644); err != nil {
		return nil, fmt.Errorf("fleet CA: %w", err)
	}
	return &CA{Cert: cert, PEM: pemCert(der), key: key, dir: dir}, nil
}

// Hash is the CA's discovery hash, "sha256:<hex>" (wire.CAHash).
func (ca *CA) Hash() string { return wire.CAHash(ca.Cert) }

// ServerCertificate loads the controller's server certificate from the
// CA's directory, or issues one (and writes it, key 0600) when there is
// none, when it does not cover every host of hosts, or when it ends within
// 30 days. hosts are names or IP addresses; localhost, 127.0.0.1 and ::1
// are always included. The returned certificate carries the CA in its
// chain: a device pins the CA from the chain the server sends.
func (ca *CA) ServerCertificate(hosts []string, now time.Time) (tls.Certificate, error) {
	hosts = append([]string{"localhost", "127.0.0.1", "::1"}, hosts...)
	certPath, keyPath := filepath.Join(ca.dir, ServerCertFile), filepath.Join(ca.dir, ServerKeyFile)
	if cert, key, err := loadPair(certPath, keyPath); err == nil && covers(cert, hosts) &&
		now.Add(serverRenewBefore).Before(cert.NotAfter) && cert.CheckSignatureFrom(ca.Cert) == nil {
		return tls.Certificate{Certificate: [][]byte{cert.Raw, ca.Cert.Raw}, PrivateKey: key, Leaf: cert}, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate: generate key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "tender controller"},
		NotBefore:    now.Add(-backdate),
		NotAfter:     minTime(now.Add(ServerValidity), ca.Cert.NotAfter),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else if h != "" && !slices.Contains(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate: %w", err)
	}
	keyPEM, err := pemKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate: %w", err)
	}
	if err := writeFileAtomic(certPath, pemCert(der), 0o644); err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// ControllerCertificate loads the controller's client certificate for an
// external broker (CN ControllerID, client-auth EKU, issued by the fleet
// CA, so a broker whose cafile is ca.crt takes it as it takes devices'),
// or issues one (and writes it, key 0600) when there is none or it ends
// within 30 days. The chain carries the CA.
func (ca *CA) ControllerCertificate(now time.Time) (tls.Certificate, error) {
	return ca.ControllerCertificateAs(ControllerID, now)
}

// ControllerCertificateAs is ControllerCertificate with CN name (one
// starting with ControllerID): a certificate of another name in the data
// directory is replaced.
func (ca *CA) ControllerCertificateAs(name string, now time.Time) (tls.Certificate, error) {
	if !strings.HasPrefix(name, ControllerID) {
		return tls.Certificate{}, fmt.Errorf("controller identity %q: must start with %q: %w", name, ControllerID, errdefs.ErrInvalidArgument)
	}
	certPath, keyPath := filepath.Join(ca.dir, ControllerCertFile), filepath.Join(ca.dir, ControllerKeyFile)
	if cert, key, err := loadPair(certPath, keyPath); err == nil && cert.Subject.CommonName == name &&
		now.Add(serverRenewBefore).Before(cert.NotAfter) && cert.CheckSignatureFrom(ca.Cert) == nil {
		return tls.Certificate{Certificate: [][]byte{cert.Raw, ca.Cert.Raw}, PrivateKey: key, Leaf: cert}, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("controller certificate: generate key: %w", err)
	}
	leaf, err := ca.sign(&x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-backdate),
		NotAfter:     minTime(now.Add(ServerValidity), ca.Cert.NotAfter),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, &key.PublicKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("controller certificate: %w", err)
	}
	keyPEM, err := pemKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, fmt.Errorf("controller certificate: %w", err)
	}
	if err := writeFileAtomic(certPath, pemCert(leaf.Raw), 0o644); err != nil {
		return tls.Certificate{}, fmt.Errorf("controller certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// covers reports whether cert names every host.
func covers(cert *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
				return false
			}
		} else if h != "" && !slices.Contains(cert.DNSNames, h) {
			return false
		}
	}
	return true
}

// sign issues a certificate from tmpl for pub.
func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func loadPair(certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	if err := checkKeyFile(keyPath); err != nil {
		return nil, nil, err
	}
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	blk, _ := pem.Decode(cb)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s: no CERTIFICATE PEM block: %w", certPath, errdefs.ErrFailedPrecondition)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %v: %w", certPath, err, errdefs.ErrFailedPrecondition)
	}
	kblk, _ := pem.Decode(kb)
	if kblk == nil || kblk.Type != "PRIVATE KEY" {
		return nil, nil, fmt.Errorf("%s: no PRIVATE KEY PEM block: %w", keyPath, errdefs.ErrFailedPrecondition)
	}
	k, err := x509.ParsePKCS8PrivateKey(kblk.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %v: %w", keyPath, err, errdefs.ErrFailedPrecondition)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("%s: %T, want an ECDSA key: %w", keyPath, k, errdefs.ErrFailedPrecondition)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("%s does not hold the key of %s: %w", keyPath, certPath, errdefs.ErrFailedPrecondition)
	}
	return cert, key, nil
}

// checkKeyFile refuses a key file that group or others may read (F-10).
func checkKeyFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("key file %s has mode %o: want 0600 (chmod 600 %s): %w", path, fi.Mode().Perm(), path, errdefs.ErrPermissionDenied)
	}
	return nil
}

// checkPrivateDir refuses a directory that group or others may enter.
func checkPrivateDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("fleet CA: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("fleet CA: directory %s has mode %o: want 0700 (chmod 700 %s): %w", dir, fi.Mode().Perm(), dir, errdefs.ErrPermissionDenied)
	}
	return nil
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pemKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// randomSerial is a random positive 128-bit serial number.
func randomSerial() *big.Int {
	b := make([]byte, 16)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	b[0] &= 0x7f
	b[0] |= 0x40 // always 16 bytes long, never zero
	return new(big.Int).SetBytes(b)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, synced and renamed into place.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
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
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
