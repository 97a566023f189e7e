package api

import (
	"net/http"

	"github.com/tender-edge/tender/fleet/store"
)

// StaleHeader is set on an answer that may be stale: the controller's
// store (etcd) had no quorum, and the answer comes from what a member
// that is still up holds, or from this controller's last view. Its value
// says why and as of when: "no quorum; as of revision 1234" (the
// member's revision) or "no quorum; as of 2026-11-30T21:00:00Z" (the
// time of the view). Answers with a natural place for it carry the same
// text in their "stale" field (status, a device, a rollout).
const StaleHeader = "Tender-Stale"

// markStale sets the header on w and the stale field of out, if it has
// one; it returns out.
func markStale(w http.ResponseWriter, out any, st store.Staleness) any {
	text := st.String()
	w.Header().Set(StaleHeader, text)
	switch v := out.(type) {
	case StatusView:
		v.Stale = text
		return v
	case DeviceDetail:
		v.Stale = text
		return v
	case RolloutView:
		v.Stale = text
		return v
	}
	return out
}
