package agent

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/sync/wire"
)

func TestPortConflicts(t *testing.T) {
	app := func(name string, ports ...string) wire.App {
		return wire.App{Name: name, Version: "1", Containers: []wire.Container{{Name: "web", Image: "x", Network: wire.NetworkBridge, Ports: ports}}}
	}
	apps := []wire.App{
		app("first", "8080:80"),
		app("second", "8081:80", "0.0.0.0:8080:81"), // all addresses overlaps all addresses
		app("third", "192.168.1.10:8081:80"),        // overlaps second's, which is refused: free
		app("fourth", "8080:80/udp"),                // another protocol
		app("fifth", "192.168.1.10:8081:82"),        // third holds it now
	}
	got := portConflicts(apps)
	if len(got) != 2 || got["second"] == nil || got["fifth"] == nil {
		t.Fatalf("refused: %v; want second and fifth", got)
	}
	for name, other := range map[string]string{"second": "app first (container web, 8080:80/tcp)", "fifth": "app third"} {
		if err := got[name]; !errdefs.IsConflict(err) || !strings.Contains(err.Error(), "already published by "+other) {
			t.Errorf("%s: %v; want a conflict naming %s", name, err, other)
		}
	}
}
