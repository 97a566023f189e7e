package enroll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/sync/wire"
)

// EnrollPath is the route of Handler.
const EnrollPath = "/v1/enroll"

// Default rate limit of enrollment attempts per source address: a burst of
// 10, then one every 6 seconds (10 a minute).
const (
	DefaultLimitEvery = 6 * time.Second
	DefaultLimitBurst = 10
)

// Enrolled is called after a device enrolled, before it gets its answer,
// for the controller to record the device (its labels and facts). The
// request's Secret is blanked. An
// error is logged by the caller's hook and answered 500; the certificate
// stays issued (revoke it to undo).
type Enrolled func(ctx context.Context, req wire.EnrollRequest, resp wire.EnrollResponse) error

// HandlerOptions configure Handler.
type HandlerOptions struct {
	// Limiter bounds attempts per source address (default: 10 at once,
	// then one every 6s). Every attempt counts, good or bad.
	Limiter *Limiter
	// Enrolled, if set, is called for every device enrolled.
	Enrolled Enrolled
}

// Handler serves POST /v1/enroll: JSON wire.EnrollRequest in (at most
// wire.MaxEnrollRequestSize bytes), wire.EnrollResponse out, or
// {"error": "..."} with the status of the error's category: 400 invalid,
// 401 unknown token or wrong secret, 403 expired or used up, 409 already
// enrolled, 413 too large, 429 rate-limited, 500 otherwise. The source
// address is the connection's (a proxy in front must limit on its own).
func (e *Enroller) Handler(opt HandlerOptions) http.Handler {
	if opt.Limiter == nil {
		opt.Limiter = NewLimiter(DefaultLimitEvery, DefaultLimitBurst)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+": want POST")
			return
		}
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		if !opt.Limiter.Allow(host, e.cfg.Now()) {
			w.Header().Set("Retry-After", fmt.Sprint(int(opt.Limiter.Every.Seconds()+0.999)))
			writeError(w, http.StatusTooManyRequests, "too many enrollment attempts from "+host+": try again later")
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, wire.MaxEnrollRequestSize))
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("enroll request over %d bytes", wire.MaxEnrollRequestSize))
			return
		case err != nil:
			writeError(w, http.StatusBadRequest, "read enroll request: "+err.Error())
			return
		}
		req, err := wire.DecodeEnrollRequest(body)
		if err != nil {
			writeError(w, statusOf(err), err.Error())
			return
		}
		resp, err := e.Enroll(r.Context(), req)
		if err != nil {
			writeError(w, statusOf(err), err.Error())
			return
		}
		if opt.Enrolled != nil {
			req.Secret = "" // F-03: nothing downstream may log or store it
			if err := opt.Enrolled(r.Context(), req, resp); err != nil {
				writeError(w, http.StatusInternalServerError, "record enrolled device: "+err.Error())
				return
			}
		}
		b, err := wire.EncodeEnrollResponse(resp)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(b)
	})
}

// statusOf maps an error's category to an HTTP status.
func statusOf(err error) int {
	switch {
	case errors.Is(err, wire.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errdefs.IsInvalidArgument(err):
		return http.StatusBadRequest
	case errdefs.IsUnauthorized(err):
		return http.StatusUnauthorized
	case errdefs.IsPermissionDenied(err):
		return http.StatusForbidden
	case errdefs.IsAlreadyExists(err), errdefs.IsConflict(err):
		return http.StatusConflict
	case errdefs.IsResourceExhausted(err):
		return http.StatusTooManyRequests
	case errdefs.IsUnavailable(err):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// ErrorBody is the JSON of a refusal.
type ErrorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(ErrorBody{Error: msg})
}
