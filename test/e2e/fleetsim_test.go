package e2e

// tender serve with 200 simulated devices (test/fleetsim): each enrolls
// through POST /v1/enroll with one join token of 200 uses, connects to the
// embedded broker with the certificate it got, and verifies the documents
// the controller signs; two versions roll out in waves of 1%, 10%, 100%.
// The small version of test/bench/fleet.sh.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/test/fleetsim"
	"github.com/tender-edge/tender/test/registry"
)

func simApp(reg, version string) string {
	return fmt.Sprintf(`name: demo
version: "%s"
containers:
  - name: main
    image: %s/tender/workload:1
    env: {V: "%s"}
placement: {selector: {fleet: sim}}
rollout: {waves: ["1%%", "10%%", "100%%"], maxUnavailable: "100%%"}
`, version, reg, version)
}

func TestController_SimulatedFleet(t *testing.T) {
	const n = 200
	reg := registry.Start(t, registry.Options{})
	archive, err := os.ReadFile(testImage)
	if err != nil {
		t.Fatal(err)
	}
	if err := registry.Push(context.Background(), archive, reg.Addr+"/tender/workload:1", true); err != nil {
		t.Fatal(err)
	}
	// The benchmark-only knob: 200 enrollments from one address.
	c := startController(t, reg.Addr, embedded, "--enroll-rate", "1000")
	var tok struct{ Token string }
	c.json(&tok, "token", "create", "--labels", "fleet=sim", "--ttl", "10m", "--uses", fmt.Sprint(n))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ids := fleetsim.DeviceIDs("sim-", n)
	e, err := fleetsim.Enroll(ctx, fleetsim.EnrollConfig{Server: "https://" + c.api, Token: tok.Token, IDs: ids})
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Certificates) != n || len(e.Brokers) == 0 {
		t.Fatalf("enrolled %d devices, brokers %v", len(e.Certificates), e.Brokers)
	}
	// The token is used up: one more device is refused.
	if _, err := fleetsim.Enroll(ctx, fleetsim.EnrollConfig{Server: "https://" + c.api, Token: tok.Token, IDs: []string{"sim-extra"}}); !errdefs.IsPermissionDenied(err) {
		t.Fatalf("enrollment past the token's uses: %v, want permission denied", err)
	}

	sim, err := fleetsim.New(fleetsim.Config{Broker: e.Brokers[0], IDs: ids, FleetKey: e.FleetKey, RootCAs: e.Pool(),
		Certificate: e.Certificate, ConnectRate: 1000, Heartbeat: -1, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = sim.Run(sctx) })
	defer func() { stop(); wg.Wait() }()

	waitFor(t, fmt.Sprintf("%d devices online at the controller", n), 2*time.Minute, func() bool {
		var st struct{ Online int }
		c.json(&st, "status")
		return st.Online == n
	})
	for _, v := range []string{"1", "2"} {
		p := filepath.Join(t.TempDir(), "app.yaml")
		if err := os.WriteFile(p, []byte(simApp(reg.Addr, v)), 0o600); err != nil {
			t.Fatal(err)
		}
		c.ok("apply", "-f", p)
		waitFor(t, "the rollout of "+v+" to succeed", 2*time.Minute, func() bool {
			r := c.rollout("demo")
			return r.Phase == "succeeded" && len(r.To) > 0 && r.To[0] == v[0]
		})
		r := c.rollout("demo")
		total, healthy := 0, 0
		for _, w := range r.Waves {
			total += w.Devices
			healthy += w.Healthy
		}
		if len(r.Waves) != 3 || r.Waves[0].Devices != 2 || r.Waves[1].Devices != 18 || total != n || healthy != n {
			t.Fatalf("rollout of %s: %+v", v, r)
		}
	}
	st := sim.Stats()
	if st.Refused != 0 || st.Verified < 2*n {
		t.Fatalf("devices verified %d documents and refused %d (%v), want at least %d and none", st.Verified, st.Refused, st.RefusedBy, 2*n)
	}
	if got := c.versions("demo"); len(got) != n {
		t.Fatalf("%d devices report demo running, want %d", len(got), n)
	} else {
		for id, v := range got {
			if v != "2" {
				t.Fatalf("%s reports demo %s, want 2", id, v)
			}
		}
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("ran out of time")
	}
}
