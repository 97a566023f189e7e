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

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/wire"
)

// rejectWindow is how long refusals (of desired documents and of
// commands) are coalesced: within a window, the first refusal for each
// kind and reason is reported (an event and a log line) and the others are
// only counted, for one summary per kind when the window ends. A flood of
// junk on the device's topics costs a handful of events per window (there
// are a dozen reasons), not a disk write each.
const rejectWindow = time.Minute

// rejections counts refusals within the current window.
type rejections struct {
	until    time.Time                         // end of the window; zero: no window open
	reported map[rejectKey]bool                // reported in this window already
	counts   map[wire.EventKind]map[string]int // counted, not reported: by kind, by reason
}

type rejectKey struct {
	kind   wire.EventKind
	reason string
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
	now := l.floor.Now()
	d, err := sign.VerifyMessage(l.pub, payload, sign.Expect{
		DeviceID: l.id, LastGeneration: st.Generation, Now: now, Floor: now, ClockUntrusted: l.floor.Untrusted(),
	})
	if err == nil {
		_, err = l.db.AcceptFleetDesired(d.Generation, digest, d.Apps)
	}
	if err != nil {
		l.reject(wire.EventRejectedDesired, err, digest)
		l.sync(false)
		return
	}
	l.log.Info().Uint64("generation", d.Generation).Int("apps", len(d.Apps)).Msg("desired state from the fleet applied")
	l.event(wire.Event{Kind: wire.EventAppliedDesired, Generation: d.Generation})
	l.agent.Wake()
	l.sync(true)
}

// reject reports a refusal (kind: EventRejectedDesired or
// EventRejectedCommand), or counts it if the same kind and reason was
// reported in this window already. It runs on the link's loop only.
func (l *Link) reject(kind wire.EventKind, err error, ref string) {
	reason := rejectReason(err)
	now := l.now()
	r := &l.rejects
	if r.until.IsZero() || !now.Before(r.until) {
		l.flushRejections()
		if r.until.IsZero() {
			r.until = now.Add(rejectWindow)
		}
	}
	key := rejectKey{kind, reason}
	if r.reported[key] {
		if r.counts == nil {
			r.counts = map[wire.EventKind]map[string]int{}
		}
		if r.counts[kind] == nil {
			r.counts[kind] = map[string]int{}
		}
		r.counts[kind][reason]++
		return
	}
	if r.reported == nil {
		r.reported = map[rejectKey]bool{}
	}
	r.reported[key] = true
	what := "desired state rejected"
	if kind == wire.EventRejectedCommand {
		what = "command rejected"
	}
	l.log.Warn().Str("reason", reason).Err(err).Str("ref", ref).Msg(what)
	l.event(wire.Event{Kind: kind, Reason: publicReason(reason, err)})
}

// flushRejections ends the window if it is over: a summary per kind of
// the refusals counted in it, and a new window if there were any.
func (l *Link) flushRejections() {
	r := &l.rejects
	now := l.now()
	if r.until.IsZero() || now.Before(r.until) {
		return
	}
	if len(r.counts) == 0 {
		*r = rejections{}
		return
	}
	for _, kind := range slices.Sorted(maps.Keys(r.counts)) {
		byReason := r.counts[kind]
		var parts []string
		n := 0
		for _, k := range slices.Sorted(maps.Keys(byReason)) {
			parts = append(parts, fmt.Sprintf("%s %d", k, byReason[k]))
			n += byReason[k]
		}
		what := "desired documents"
		if kind == wire.EventRejectedCommand {
			what = "commands"
		}
		summary := fmt.Sprintf("%d more %s refused in the last %s (%s)", n, what, rejectWindow, strings.Join(parts, ", "))
		l.log.Warn().Int("count", n).Str("kind", string(kind)).Str("reasons", strings.Join(parts, ", ")).Msg("refused repeatedly")
		l.event(wire.Event{Kind: kind, Reason: summary})
	}
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
		{wire.ErrMalformed, "malformed"}, {wire.ErrGenerationRange, "generation-out-of-range"},
		{sign.ErrReplayed, "replayed"}, {sign.ErrBusy, "busy"}, {errFlood, "flood"}, {errdefs.ErrInvalidArgument, "invalid"},
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
