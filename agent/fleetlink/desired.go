package fleetlink

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/wire"
)

// rejectWindow is how long refusals of desired documents are coalesced:
// within a window, the first refusal for each reason is reported (an event
// and a log line) and the others are only counted, for one summary when
// the window ends. A flood of junk on the desired topic costs a handful of
// events per window (there are a dozen reasons), not a disk write each.
const rejectWindow = time.Minute

// rejections counts refused desired documents within the current window.
type rejections struct {
	until    time.Time       // end of the window; zero: no window open
	reported map[string]bool // reasons already reported in this window
	count    int             // refused in this window and not reported
	reasons  map[string]int  // those, by reason
}

// handleDesired verifies a desired envelope and, if it is good, makes it
// the desired state. A refusal changes nothing that runs: it is reported
// (coalesced) and logged.
func (l *Link) handleDesired(payload []byte) {
	sum := sha256.Sum256(payload)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	l.mu.Lock()
	l.lastDigest = digest
	l.mu.Unlock()
	st, err := l.db.FleetState()
	if err != nil {
		l.log.Error().Err(err).Msg("reading the fleet state")
		return
	}
	if digest == st.Digest {
		// The retained copy of the document already applied, redelivered
		// on (re)subscribe: nothing to do and nothing to report.
		return
	}
	d, err := sign.VerifyMessage(l.pub, payload, sign.Expect{
		DeviceID: l.id, LastGeneration: st.Generation, Now: l.floor.Now(), ClockUntrusted: l.floor.Untrusted(),
	})
	if err == nil {
		_, err = l.db.AcceptFleetDesired(d.Generation, digest, d.Apps)
	}
	if err != nil {
		l.reject(err, digest)
		l.sync(false)
		return
	}
	l.log.Info().Uint64("generation", d.Generation).Int("apps", len(d.Apps)).Msg("desired state from the fleet applied")
	l.event(wire.Event{Kind: wire.EventAppliedDesired, Generation: d.Generation})
	l.agent.Wake()
	l.sync(true)
}

// reject reports a refused document, or counts it if its reason was
// reported in this window already.
func (l *Link) reject(err error, digest string) {
	reason := rejectReason(err)
	now := l.now()
	r := &l.rejects
	if r.until.IsZero() || !now.Before(r.until) {
		l.flushRejections()
		if r.until.IsZero() {
			r.until = now.Add(rejectWindow)
		}
	}
	if r.reported[reason] {
		r.count++
		if r.reasons == nil {
			r.reasons = map[string]int{}
		}
		r.reasons[reason]++
		return
	}
	if r.reported == nil {
		r.reported = map[string]bool{}
	}
	r.reported[reason] = true
	l.log.Warn().Str("reason", reason).Err(err).Str("digest", digest).Msg("desired state rejected")
	l.event(wire.Event{Kind: wire.EventRejectedDesired, Reason: publicReason(reason, err)})
}

// flushRejections ends the window if it is over: a summary of the
// documents counted in it, and a new window if there were any.
func (l *Link) flushRejections() {
	r := &l.rejects
	now := l.now()
	if r.until.IsZero() || now.Before(r.until) {
		return
	}
	if r.count == 0 {
		*r = rejections{}
		return
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(r.reasons)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, r.reasons[k]))
	}
	summary := fmt.Sprintf("%d more desired documents refused in the last %s (%s)", r.count, rejectWindow, strings.Join(parts, ", "))
	l.log.Warn().Int("count", r.count).Str("reasons", strings.Join(parts, ", ")).Msg("desired state rejected, repeatedly")
	l.event(wire.Event{Kind: wire.EventRejectedDesired, Reason: summary})
	// The flood goes on: its reasons stay reported for another window.
	*r = rejections{until: now.Add(rejectWindow), reported: r.reported}
}

// rejectReason names why a desired document was refused.
func rejectReason(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{sign.ErrUnsigned, "unsigned"}, {sign.ErrWrongKey, "wrong-key"}, {sign.ErrBadSignature, "bad-signature"},
		{sign.ErrWrongDevice, "wrong-device"}, {sign.ErrStale, "stale-generation"}, {sign.ErrExpired, "expired"},
		{wire.ErrTooLarge, "oversized"}, {wire.ErrSchema, "unknown-schema"}, {wire.ErrUnknownField, "unknown-field"},
		{wire.ErrMalformed, "malformed"}, {wire.ErrInvalid, "invalid"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "error"
}

// publicReason is what the fleet is told: the reason and the checks'
// own message (which names fields and generations, never host paths),
// or for a local failure only that it was local.
func publicReason(reason string, err error) string {
	if reason == "error" {
		return "error: the device could not store the document; see its log"
	}
	msg := reason + ": " + err.Error()
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	return msg
}
