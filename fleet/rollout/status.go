package rollout

// WaveStatus counts the devices of one wave by state, for the UI.
type WaveStatus struct {
	Wave       int `json:"wave"` // 1-based
	Size       int `json:"size"`
	Pending    int `json:"pending"`
	Offline    int `json:"offline"`
	Updating   int `json:"updating"`
	Updated    int `json:"updated"`
	Healthy    int `json:"healthy"`
	Failed     int `json:"failed"`
	Deferred   int `json:"deferred"`
	RolledBack int `json:"rolledBack"`
	// Threshold is the most failed devices the wave tolerates.
	Threshold int `json:"threshold"`
}

// Status sums a rollout up.
type Status struct {
	App            string       `json:"app"`
	From           string       `json:"from"`
	To             string       `json:"to"`
	Phase          Phase        `json:"phase"`
	Paused         bool         `json:"paused,omitempty"`
	Reason         string       `json:"reason,omitempty"`
	Wave           int          `json:"wave"`
	Soaking        bool         `json:"soaking,omitempty"`
	Unavailable    int          `json:"unavailable"`
	MaxUnavailable int          `json:"maxUnavailable"`
	Waves          []WaveStatus `json:"waves"`
}

// Status counts the devices of each wave by state.
func (r *Rollout) Status() Status {
	s := Status{
		App: r.Spec.App, From: r.Spec.From, To: r.Spec.To, Phase: r.Phase, Paused: r.Paused,
		Reason: r.Reason, Wave: r.Wave, Soaking: !r.SoakSince.IsZero(),
		Unavailable: r.Unavailable(), MaxUnavailable: r.MaxUnavailable,
		Waves: make([]WaveStatus, len(r.WaveEnds)),
	}
	start := 0
	for i, end := range r.WaveEnds {
		s.Waves[i] = WaveStatus{Wave: i + 1, Size: end - start, Threshold: r.Thresholds[i]}
		start = end
	}
	for i := range r.Devices {
		d := &r.Devices[i]
		w := &s.Waves[d.Wave-1]
		switch d.State {
		case StatePending:
			w.Pending++
		case StateOffline:
			w.Offline++
		case StateUpdating:
			w.Updating++
		case StateUpdated:
			w.Updated++
		case StateHealthy:
			w.Healthy++
		case StateFailed:
			w.Failed++
		case StateDeferred:
			w.Deferred++
		case StateRolledBack:
			w.RolledBack++
		}
	}
	return s
}
