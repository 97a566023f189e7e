// Package enroll is the controller's side of enrollment: the fleet CA,
// join tokens, device certificates from CSRs, revocation and the CRL, the
// rate limit per source address and the HTTP handler of POST /v1/enroll.
// The device's side is agent/enroll; the two share only sync/wire (the
// messages and the join token's format).
//
// # Files (under Config.Dir, made 0700; F-10)
//
//	ca.crt       fleet CA, ECDSA P-256, self-signed, 10 years     0644
//	ca.key       its key, PKCS #8 PEM                             0600
//	server.crt   the controller's server certificate (+ its CA    0644
//	             in the chain it serves), SANs = the listen hosts
//	             + localhost, 127.0.0.1, ::1; reissued at start
//	             when a host is missing or it ends within 30 days
//	server.key   its key                                          0600
//	crl.pem      the CRL of revoked, unexpired device             0644
//	             certificates, rewritten on every revocation
//	             (mosquitto's crlfile)
//	controller.crt the controller's client certificate at an      0644
//	             external broker (CN tender-controller), made by
//	             ControllerCertificate when serve uses --broker
//	controller.key its key                                        0600
//
// A key file that group or others may read, or a directory they may
// enter, is refused at start (errdefs.ErrPermissionDenied).
//
// # Join tokens
//
//	tdr1.<id>.<secret>.<cahash>
//
// id: 16 hex digits, public, the record's key; secret: 32 hex digits
// (128 random bits), shown once at creation, stored only as its sha256
// (F-03) and compared in constant time; cahash: the hex sha256 of the CA's
// SubjectPublicKeyInfo (kubeadm's discovery hash), so the device pins the
// controller on first contact (F-05). A record holds id, secret hash,
// labels, expiry and uses left.
//
// # A token's life
//
//	             CreateToken
//	                 │
//	                 ▼
//	  ┌──────── usable (usesLeft > 0, now < expiresAt) ◄──┐
//	  │              │ Enroll: every check passed,          │ usesLeft > 0
//	  │              │ SwapToken(usesLeft-1) won ───────────┘
//	  │ now ≥        ▼ usesLeft = 0
//	  │ expiresAt  used up ── Enroll → ErrTokenSpent (403)
//	  ▼
//	expired ── Enroll → ErrTokenSpent (403)
//
//	unknown id, wrong secret → ErrTokenRefused (401)
//
// A use is consumed only after the token, the CSR and the device id all
// passed, by a compare-and-swap on the record's revision (Store.SwapToken):
// two devices racing for a token's last use cannot both win, on one
// controller or several sharing a store.
//
// # Enroll
//
// The request carries the token's id and secret (over the pinned TLS),
// the device id, a CSR and the device's facts; never a private key (F-06).
// The CSR must verify, hold an ECDSA P-256/P-384 or ed25519 key, and have
// CN = the device id (a valid topic.ValidDeviceID, never ControllerID:
// that name holds the controller's rights at mosquitto); its SANs and other
// extensions are ignored. A device id that holds a valid, unrevoked
// certificate is refused (409): revoke it first. The certificate issued
// has CN = device id (= MQTT username = client id), the client-auth EKU
// only, one year of validity (Config.CertValidity). The answer carries it,
// the CA, the broker URLs, the fleet's ed25519 signing key
// (sign.EncodePublicKey) and the token's labels; HandlerOptions.Enrolled
// lets the controller record the device.
//
// # Revocation (F-07)
//
// Revoke(device id or serial) marks the certificates revoked in the Store,
// rewrites crl.pem and makes Revoked(serial) true at once for the embedded
// broker's auth hook. Revocations are read back from the Store at start.
//
// # Rate limit (F-04)
//
// Limiter is a token bucket per source address (default: 10 attempts,
// then one every 6 s), time passed in; Handler counts every attempt.
//
// Errors wrap errdefs categories: InvalidArgument (bad request, CSR,
// labels, TTL), Unauthenticated (ErrTokenRefused), PermissionDenied
// (ErrTokenSpent, key files too open), AlreadyExists (enrolled), NotFound
// (revoke of nothing), Conflict (store CAS).
package enroll
