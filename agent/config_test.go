package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tender-edge/tender/sync/wire"
)

// The samples in configs/ stay valid.
func TestSampleConfigs(t *testing.T) {
	c, err := LoadConfig("../configs/agent.yaml")
	if err != nil {
		t.Fatalf("configs/agent.yaml: %v", err)
	}
	if c.Store.MaxBytes != "2Gi" || c.Registries["mirror.site.local:5000"].Insecure != true {
		t.Errorf("configs/agent.yaml read as %+v", c)
	}
	apps, _ := filepath.Glob("../configs/apps/*.yaml")
	if len(apps) == 0 {
		t.Fatal("no sample apps")
	}
	for _, p := range apps {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := wire.ParseApp(b); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func TestLoadConfig_Rejects(t *testing.T) {
	for name, body := range map[string]string{
		"unknown field":     "bogus: 1\n",
		"relative stateDir": "stateDir: var/lib\n",
		"bad reserve":       "reserve: {memory: lots}\n",
		"negative cpu":      "reserve: {cpu: -1}\n",
		"tiny interval":     "reconcileInterval: 1ms\n",
		"bad duration":      "reconcileInterval: soon\n",
		"cap below base":    "restarts: {backoffBase: 10s, backoffCap: 1s}\n",
		"bad store budget":  "store: {maxBytes: huge}\n",
	} {
		p := filepath.Join(t.TempDir(), "agent.yaml")
		os.WriteFile(p, []byte(body), 0o600)
		if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: err = %v, want an error naming the file", name, err)
		}
	}
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Errorf("a missing config file that was asked for must be an error")
	}
}
