package store

import (
	"time"

	"github.com/tender-edge/tender/sync/wire"
)

// The ingest rules, one definition for every implementation: what a
// report, a presence message or an event does to its device's status, and
// how it counts in the batch's result. Each returns whether the message is
// to be stored (events) or took effect.

// ApplyReport applies report r to st: a report in another device's name is
// refused and flags st (F-08), an older one than st's is stale; otherwise
// it becomes st's report. It returns the observed generation to raise the
// device's generation to (0: none; a generation past the wire's largest
// was never issued, and a device claiming one would only lock itself out).
func ApplyReport(st *DeviceStatus, r Report, res *IngestResult) (observed uint64, ok bool) {
	if r.Report.DeviceID != r.Device {
		Flag(st, r.Report.DeviceID, r.Received)
		res.Refused++
		return 0, false
	}
	Seen(st, r.Received)
	if st.Report != nil && r.Report.Time.Before(st.Report.Time) {
		st.StaleReports++
		res.StaleReports++
		return 0, false
	}
	rep := r.Report
	st.Report, st.ReportedAt = &rep, r.Received
	res.Reports++
	if rep.ObservedGeneration <= wire.MaxGeneration {
		observed = rep.ObservedGeneration
	}
	return observed, true
}

// ApplyPresence applies presence p to st unless an newer one was applied.
func ApplyPresence(st *DeviceStatus, p Presence, res *IngestResult) bool {
	if p.Received.Before(st.PresenceAt) {
		return false
	}
	st.Presence, st.PresenceAt = p.Presence, p.Received
	if p.Presence != wire.Offline { // the Last Will is the broker's, not a sign of life
		Seen(st, p.Received)
	}
	res.Presence++
	return true
}

// ApplyEvent applies event e to st: one in another device's name is
// refused and flags st (F-08), one whose sequence number is not above the
// last stored is a duplicate; numbers skipped count as gaps. It reports
// whether e is to be stored.
func ApplyEvent(st *DeviceStatus, e Event, res *IngestResult) bool {
	if e.Event.DeviceID != e.Device {
		Flag(st, e.Event.DeviceID, e.Received)
		res.Refused++
		return false
	}
	Seen(st, e.Received)
	seq := e.Event.Seq
	if seq <= st.EventSeq {
		st.EventDuplicates++
		res.DuplicateEvents++
		return false
	}
	if st.EventSeq > 0 && seq > st.EventSeq+1 {
		gap := seq - st.EventSeq - 1
		st.EventGaps += gap
		res.Gaps += gap
	}
	st.EventSeq = seq
	res.Events++
	return true
}

// Flag records a message the device sent in another's name (F-08).
func Flag(st *DeviceStatus, claimed string, at time.Time) {
	st.Impersonations++
	if !at.Before(st.ImpersonatedAt) {
		st.ImpersonatedAs, st.ImpersonatedAt = claimed, at
	}
}

// Seen moves the device's LastSeen to at, never back.
func Seen(st *DeviceStatus, at time.Time) {
	if at.After(st.LastSeen) {
		st.LastSeen = at
	}
}
