package sim_test

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tender-edge/tender/test/sim"
)

// seeds is how many seeds each scenario runs: TENDER_SIM_SEEDS widens it.
func seeds(t *testing.T, def int) uint64 {
	if s := os.Getenv("TENDER_SIM_SEEDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("TENDER_SIM_SEEDS=%q: %v", s, err)
		}
		return uint64(n)
	}
	if testing.Short() {
		return 1
	}
	return uint64(def)
}

func chaos(seed uint64, devices int) sim.Options {
	return sim.Options{
		Seed: seed, Devices: devices,
		Waves: []string{"1%", "10%", "50%", "100%"}, MaxUnavailable: "5%", FailureThreshold: "10%",
		HealthyFor: 10 * time.Minute, Pace: devices / 40,
		OfflineRate: 0.0005, DieRate: 0.00002, DeferRate: 0.02, Windows: true,
	}
}

func run(t *testing.T, o sim.Options) *sim.World {
	t.Helper()
	w, err := sim.New(o)
	if err != nil {
		t.Fatalf("seed=%d: %v", o.Seed, err)
	}
	if err := w.Run(); err != nil {
		t.Fatalf("%v\n%s\ntrace (last lines):\n%s", err, w.Summary(), w.Trace())
	}
	t.Log(w.Summary())
	return w
}

func TestSim_GoodVersionReachesEveryDevice(t *testing.T) {
	for seed := range seeds(t, 4) {
		run(t, chaos(seed+1, 10000))
	}
}

func TestSim_BadVersionStopsAndRollsBack(t *testing.T) {
	for seed := range seeds(t, 4) {
		o := chaos(seed+100, 10000)
		o.Bad, o.BadRate = true, 0.3
		run(t, o)
	}
}

// Many small fleets: more seeds, more shapes of failure, and an operator
// who pauses, resumes and undoes.
func TestSim_ManySeeds(t *testing.T) {
	for seed := range seeds(t, 200) {
		o := chaos(seed+1000, 200+int(seed%5)*100)
		o.Waves = []string{"1", "10%", "100%"}
		o.OfflineRate, o.DeferRate = 0.002, 0.1
		if seed%4 == 3 {
			o.PauseAt, o.ResumeAt = time.Duration(seed%7)*20*time.Minute+time.Minute, 3*time.Hour
		}
		o.UndoAfterSuccess = seed%5 == 4
		switch seed % 3 {
		case 1:
			o.Bad, o.BadRate = true, 0.5
		case 2:
			o.Bad, o.BadRate = true, 0.05 // may pass the threshold: failed devices are kept on A
		}
		run(t, o)
	}
}

// The same seed gives the same decisions.
func TestSim_SameSeedSameDecisions(t *testing.T) {
	o := chaos(7, 2000)
	o.Bad, o.BadRate = true, 0.2
	a, b := run(t, o), run(t, o)
	if a.Hash() != b.Hash() {
		t.Fatalf("seed 7 gave two different action traces: %x and %x", a.Hash(), b.Hash())
	}
	o.Seed = 8
	if c := run(t, o); c.Hash() == a.Hash() {
		t.Fatalf("seeds 7 and 8 gave the same trace: the seed is not used")
	}
}

// Placement over 10,000 devices churning for an hour of virtual time: devices
// going offline, dying, moving site and enrolling, app specs changing; at
// every minute capacity, selectors and arch, counts, failover and
// stability hold, and the decisions do not depend on input order.
func TestSim_PlacementUnderChurn(t *testing.T) {
	var digests []string
	for seed := range seeds(t, 2) {
		o := sim.PlacementOptions{Seed: seed + 1, Devices: 10000, Apps: 12, Steps: 60, OfflineRate: 0.002, DieRate: 0.0002, MoveRate: 0.0005, ChangeRate: 0.1, EnrollRate: 0.0005}
		s, err := sim.RunPlacement(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Log(s)
		if s.FailedOver == 0 || s.Placed == 0 {
			t.Fatalf("seed %d: nothing was placed or failed over: the run proves nothing: %v", o.Seed, s)
		}
		if seed == 0 {
			again, err := sim.RunPlacement(o)
			if err != nil {
				t.Fatal(err)
			}
			if again.Digest != s.Digest {
				t.Fatalf("seed %d replayed to different decisions: %s then %s", o.Seed, s.Digest, again.Digest)
			}
		}
		digests = append(digests, s.Digest)
	}
	if len(digests) > 1 && digests[0] == digests[1] {
		t.Fatal("two seeds gave the same decisions: the seed does not drive the run")
	}
}
