package agent

import (
	"fmt"
	"sync"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/runtime/network"
	"github.com/tender-edge/tender/sync/wire"
)

// portConflicts refuses each app that publishes a host port an earlier app
// of apps already publishes (apps in order: the one applied first keeps
// its ports), naming the other app. A refused app claims nothing.
func portConflicts(apps []wire.App) map[string]error {
	type claim struct {
		app, ctr string
		port     network.Port
	}
	var claims []claim
	refused := map[string]error{}
	for _, app := range apps {
		var mine []claim
		var err error
	scan:
		for ci, c := range app.Containers {
			for _, p := range app.Ports()[c.Name] {
				for _, q := range claims {
					if p.Overlaps(q.port) {
						err = fmt.Errorf("app %s: containers[%d] (%s) port %s: host port %d/%s is already published by app %s (container %s, %s): %w",
							app.Name, ci, c.Name, p, p.HostPort, p.Proto, q.app, q.ctr, q.port, errdefs.ErrConflict)
						break scan
					}
				}
				mine = append(mine, claim{app.Name, c.Name, p})
			}
		}
		if err != nil {
			refused[app.Name] = err
			continue
		}
		claims = append(claims, mine...)
	}
	return refused
}

func usesBridge(app wire.App) bool {
	for _, c := range app.Containers {
		if c.Network == wire.NetworkBridge {
			return true
		}
	}
	return false
}

// bridgeProbe is whether this host can run the bridge network, found once.
var bridgeProbe = sync.OnceValue(network.ProbeIsolated)

// admitNetwork refuses app when it needs the bridge network and the host
// cannot run it, or when it publishes a host port one of others (the
// other apps, in order) already publishes.
func admitNetwork(app wire.App, others []wire.App) error {
	if !usesBridge(app) {
		return nil
	}
	if err := bridgeProbe(); err != nil {
		return fmt.Errorf("app %s: network bridge cannot run on this host (tender-agent check says why): %w", app.Name, err)
	}
	all := append(append([]wire.App(nil), others...), app)
	return portConflicts(all)[app.Name]
}
