// Package deps checks the rule of the rooms: pure core packages do no I/O,
// and the runtime knows nothing of the agent, the wire or the fleet.
package deps

import (
	"go/build"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/tender-edge/tender/"

// core packages decide; they must not reach the outside world.
var core = []string{"runtime/spec", "agent/reconcile", "sync/topic", "fleet/placement", "fleet/rollout"}

var forbiddenInCore = []string{
	"os", "os/exec", "net", "net/http", "math/rand", "math/rand/v2", "time/tzdata",
	"go.etcd.io/bbolt", "github.com/rs/zerolog", "github.com/eclipse/paho.mqtt.golang",
	"syscall", "golang.org/x/sys/unix",
}

func TestCoreImportsNoIO(t *testing.T) {
	for _, p := range core {
		pkg, err := build.Import(module+p, "", 0)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for _, imp := range pkg.Imports {
			for _, bad := range forbiddenInCore {
				if imp == bad {
					t.Errorf("core package %s imports %s", p, imp)
				}
			}
		}
	}
}

func TestRuntimeKnowsNoAgent(t *testing.T) {
	roomsOf(t, "./runtime/...", "runtime/spec", "agent", "sync", "fleet", "cmd")
}

// The wire is shared by agent and fleet: it knows neither.
func TestSyncKnowsNeitherAgentNorFleet(t *testing.T) {
	roomsOf(t, "./sync/...", "sync/wire", "agent", "fleet", "cmd")
}

// The fleet link and the local API reach the agent through interfaces of
// their own; neither knows the other, and neither imports the agent's
// shell, the daemon's wiring or the CLI.
func TestAgentRoomsKeepTheirDoors(t *testing.T) {
	roomsOf(t, "./agent/fleetlink", "agent/fleetlink", "agent/api", "agent/daemon", "cmd", "fleet")
	roomsOf(t, "./agent/api", "agent/api", "agent/fleetlink", "agent/daemon", "cmd", "fleet")
	for _, p := range []string{"agent/fleetlink", "agent/api"} {
		assertNoImport(t, p, module+"agent")
	}
}

// The agent binary never links the fleet controller.
func TestAgentBinaryLinksNoFleet(t *testing.T) {
	roomsOf(t, "./cmd/tender-agent", "agent/daemon", "fleet")
}

// assertNoImport fails if package p imports imp directly.
func assertNoImport(t *testing.T, p, imp string) {
	t.Helper()
	pkg, err := build.Import(module+p, "", 0)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	for _, i := range pkg.Imports {
		if i == imp {
			t.Errorf("%s imports %s", p, imp)
		}
	}
}

// roomsOf fails if the packages of pattern (which include must) depend on
// any of the rooms.
func roomsOf(t *testing.T, pattern, must string, rooms ...string) {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", pattern)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	if !strings.Contains(string(out), module+must) {
		t.Fatalf("go list %s did not list %s: %s", pattern, must, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, room := range rooms {
			if strings.HasPrefix(dep, module+room+"/") || dep == module+room {
				t.Errorf("%s depends on %s", pattern, dep)
			}
		}
	}
}

// Placement knows the wire, never the agent, the runtime or the CLI.
func TestPlacementKnowsNoAgent(t *testing.T) {
	roomsOf(t, "./fleet/placement", "fleet/placement", "agent", "runtime", "cmd")
}

// Enrollment's two sides share only the wire: the device's side never
// links the controller's, nor the agent's shell; the controller's knows
// nothing of the agent or the runtime.
func TestEnrollSidesShareOnlyTheWire(t *testing.T) {
	roomsOf(t, "./agent/enroll", "agent/enroll", "fleet", "runtime", "cmd")
	assertNoImport(t, "agent/enroll", module+"agent")
	roomsOf(t, "./fleet/enroll", "fleet/enroll", "agent", "runtime", "cmd")
}

// The rollout core knows the wire, never the agent or the runtime.
func TestFleetRolloutKnowsNoAgent(t *testing.T) {
	roomsOf(t, "./fleet/rollout", "fleet/rollout", "agent", "runtime", "cmd")
}

// The fleet's store knows the wire, never the agent, the runtime or the
// controller's other rooms.
func TestFleetStoreKnowsOnlyTheWire(t *testing.T) {
	roomsOf(t, "./fleet/store/...", "fleet/store", "agent", "runtime", "cmd", "fleet/placement", "fleet/rollout", "fleet/publish", "fleet/broker", "fleet/enroll", "fleet/api", "fleet/console", "fleet/controller")
}

// The embedded broker speaks the wire; it knows neither the agent nor the runtime.
func TestFleetBrokerKnowsNoAgent(t *testing.T) {
	roomsOf(t, "./fleet/broker", "fleet/broker", "agent", "runtime", "cmd")
}

// The fleet API and the operator's CLI know the wire and the fleet's
// rooms, never the agent or the runtime.
func TestFleetAPIKnowsNoAgent(t *testing.T) {
	roomsOf(t, "./fleet/api/...", "fleet/api", "agent", "runtime", "cmd")
	roomsOf(t, "./cmd/tender", "fleet/api", "agent", "runtime")
}

// The fleet simulator is a black box's peer: it speaks the wire only, so
// it tests the controller and the broker as devices would.
func TestFleetsimSpeaksOnlyTheWire(t *testing.T) {
	roomsOf(t, "./test/fleetsim/...", "test/fleetsim", "agent", "runtime", "fleet", "cmd")
}

// The controller's shell and its publisher know the wire and the fleet's
// rooms, never the agent or the runtime.
func TestFleetControllerKnowsNoAgent(t *testing.T) {
	roomsOf(t, "./fleet/publish", "fleet/publish", "agent", "runtime", "cmd", "fleet/controller")
	roomsOf(t, "./fleet/controller", "fleet/controller", "agent", "runtime", "cmd")
}

// Neither program links the packaging tool (packaging/, nfpm and what it
// brings: go-git, rpmpack, openpgp...): it is a build tool.
func TestProgramsLinkNoPackaging(t *testing.T) {
	for _, prog := range []string{"./cmd/tender-agent", "./cmd/tender"} {
		roomsOf(t, prog, "cmd/"+strings.TrimPrefix(prog, "./cmd/"), "packaging")
		cmd := exec.Command("go", "list", "-deps", prog)
		cmd.Dir = "../.."
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list: %v", err)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, bad := range []string{"github.com/goreleaser/", "github.com/go-git/", "github.com/google/rpmpack", "github.com/ProtonMail/"} {
				if strings.HasPrefix(dep, bad) {
					t.Errorf("%s depends on %s", prog, dep)
				}
			}
		}
	}
}

// The agent's size (issue 15): what it linked once without needing it.
// vishvananda/netlink: the bridge network's few rtnetlink requests go
// through mdlayher/netlink, which nftables links anyway (-0.39 MB).
func TestAgentLinksNoDeadWeight(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "./cmd/tender-agent")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	if !strings.Contains(string(out), "github.com/mdlayher/netlink\n") {
		t.Fatalf("go list -deps ./cmd/tender-agent did not list mdlayher/netlink: %s", out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, bad := range []string{"github.com/vishvananda/"} {
			if strings.HasPrefix(dep, bad) {
				t.Errorf("the agent depends on %s", dep)
			}
		}
	}
}
