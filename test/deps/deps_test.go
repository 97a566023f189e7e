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
var core = []string{"runtime/spec"}

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
	cmd := exec.Command("go", "list", "-deps", "./runtime/...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	if !strings.Contains(string(out), module+"runtime/spec") {
		t.Fatalf("go list did not list the runtime: %s", out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, room := range []string{"agent", "sync", "fleet", "cmd"} {
			if strings.HasPrefix(dep, module+room+"/") || dep == module+room {
				t.Errorf("runtime depends on %s", dep)
			}
		}
	}
}
