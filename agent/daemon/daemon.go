// Package daemon wires the agent's rooms into the running daemon: the
// state file (agent/store), the image store and the container runtime,
// the shell (agent), the local API (agent/api), the fleet link
// (agent/fleetlink) and the device-local policy (agent/policy). Run owns
// every goroutine of them and returns when all have ended.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/containerd/errdefs"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/tender-edge/tender/agent"
	"github.com/tender-edge/tender/agent/api"
	"github.com/tender-edge/tender/agent/fleetlink"
	"github.com/tender-edge/tender/agent/policy"
	"github.com/tender-edge/tender/agent/store"
	"github.com/tender-edge/tender/runtime/container"
	"github.com/tender-edge/tender/runtime/image"
)

// TestClockOffsetEnv is a TEST HOOK: a Go duration (e.g. "-500000h") added
// to the fleet link's system clock, to play a device that boots in 1970.
// It is read only when set and logged loudly.
const TestClockOffsetEnv = "TENDER_TEST_CLOCK_OFFSET"

// Deps are what main passes in.
type Deps struct {
	Log zerolog.Logger
	// Getenv reads the environment (systemd's notify variables, test
	// hooks); default os.Getenv.
	Getenv func(string) string
	// PolicyPath is the device-local policy file (default
	// policy.DefaultPath; a missing file is the default policy).
	PolicyPath string
	// Version is the agent's version as stamped at build time.
	Version string
}

// Daemon is the running agent.
type Daemon struct {
	cfg    agent.Config
	log    zerolog.Logger
	notify notifier
	db     *store.DB
	images *image.Store
	agent  *agent.Agent
	api    *api.Server
	link   *fleetlink.Link // nil when standalone
}

// New opens the daemon's state and binds its socket. It starts nothing.
// The state file, if corrupt, is set aside and reported, never fatal.
func New(cfg agent.Config, deps Deps) (_ *Daemon, err error) {
	if deps.Getenv == nil {
		deps.Getenv = os.Getenv
	}
	if deps.PolicyPath == "" {
		deps.PolicyPath = policy.DefaultPath
	}
	log := deps.Log
	pol, err := policy.Load(deps.PolicyPath)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if err := os.Chmod(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	d := &Daemon{cfg: cfg, log: log, notify: newNotifier(deps.Getenv)}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if d.db, err = store.Open(filepath.Join(cfg.StateDir, "agent.db"), nil); err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	if r := d.db.Recovered; r != nil {
		log.Error().Str("kept_as", r.Path).AnErr("cause", r.Cause).
			Msg("state file was corrupt: set aside, rebuilding from the running containers")
	}
	if d.images, err = image.Open(filepath.Join(cfg.StateDir, "images"), image.Options{Log: log, KeepLayerBlobs: true}); err != nil {
		return nil, err
	}
	rt, err := container.New(cfg.StateDir, d.images, log)
	if err != nil {
		return nil, err
	}
	if err := setupNetwork(cfg.Network, rt, log); err != nil {
		return nil, err
	}
	if d.agent, err = agent.New(cfg, agent.Deps{Log: log, Store: d.db, Containers: rt, Images: d.images, Policy: pol, Version: deps.Version}); err != nil {
		return nil, err
	}
	if cfg.Fleet.Broker != "" {
		lc, err := linkConfig(cfg, deps, log)
		if err != nil {
			return nil, err
		}
		if d.link, err = fleetlink.New(lc, d.agent, d.db, log); err != nil {
			return nil, err
		}
	}
	if d.api, err = api.NewServer(api.Config{Socket: cfg.Socket, StateDir: cfg.StateDir, Registries: cfg.RegistryConfig()}, d.agent, d.images, log); err != nil {
		return nil, err
	}
	return d, nil
}

// setupNetwork saves the bridge network's config and repairs what a crash
// left of it: leases, veths and rules of containers that are gone, rules
// of those still running (which kept running while the agent was down).
func setupNetwork(nc agent.NetworkConfig, rt *container.Runtime, log zerolog.Logger) error {
	nm, err := rt.Network()
	if err != nil {
		return err
	}
	cfg := nm.Config()
	if nc.Bridge != "" {
		cfg.Bridge = nc.Bridge
	}
	if nc.Subnet != "" {
		if cfg.Subnet, err = netip.ParsePrefix(nc.Subnet); err != nil {
			return fmt.Errorf("network.subnet %q: %w", nc.Subnet, errdefs.ErrInvalidArgument)
		}
	}
	if err := nm.SetConfig(cfg); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	freed, removed, err := rt.RepairNetwork()
	if err != nil {
		// Host and none networks work without it: say so, go on.
		log.Error().Err(err).Msg("repairing the bridge network")
		return nil
	}
	if freed > 0 || removed > 0 {
		log.Warn().Int("leases_freed", freed).Int("veths_removed", removed).Msg("bridge network: freed what gone containers held")
	}
	return nil
}

func linkConfig(cfg agent.Config, deps Deps, log zerolog.Logger) (fleetlink.Config, error) {
	fc := cfg.Fleet
	lc := fleetlink.Config{
		DeviceID: cfg.DeviceID, Broker: fc.Broker, PublicKey: fc.PublicKey,
		Username: fc.Username, Password: fc.Password, CAFile: fc.CAFile, CertFile: fc.CertFile, KeyFile: fc.KeyFile,
		Heartbeat: fc.Heartbeat.Duration, ReconnectMax: fc.ReconnectMax.Duration,
		System: time.Now, BuildTime: buildTime(),
	}
	if v := deps.Getenv(TestClockOffsetEnv); v != "" {
		off, err := time.ParseDuration(v)
		if err != nil {
			return lc, fmt.Errorf("%s: %w", TestClockOffsetEnv, err)
		}
		log.Warn().Dur("offset", off).Msg("TEST HOOK: the fleet link's system clock is shifted")
		lc.System = func() time.Time { return time.Now().Add(off) }
	}
	return lc, nil
}

// Close releases the state files and the socket. Containers keep running.
func (d *Daemon) Close() error {
	var errs []error
	if d.api != nil {
		errs = append(errs, d.api.Close())
	}
	if d.images != nil {
		errs = append(errs, d.images.Close())
	}
	if d.db != nil {
		errs = append(errs, d.db.Close())
	}
	return errors.Join(errs...)
}

// Run serves until ctx ends, then stops everything it started and waits
// for it; containers keep running.
func (d *Daemon) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.api.Serve(ctx) })
	g.Go(func() error { return d.agent.Run(ctx) })
	if d.link != nil {
		g.Go(func() error { return d.link.Run(ctx) })
	}
	g.Go(func() error {
		select {
		case <-ctx.Done():
			return nil
		case <-d.agent.Ready():
		}
		_ = d.notify.notify("READY=1")
		d.log.Info().Str("state_dir", d.cfg.StateDir).Str("socket", d.cfg.Socket).Msg("agent ready")
		return d.watchdog(ctx)
	})
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// watchdog pings systemd's watchdog while ctx lasts (if it is on).
func (d *Daemon) watchdog(ctx context.Context) error {
	if d.notify.watchdog <= 0 {
		return nil
	}
	t := time.NewTicker(d.notify.watchdog)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			_ = d.notify.notify("WATCHDOG=1")
		}
	}
}

// buildTime is a time the clock cannot truly be before: the newest of the
// VCS commit time stamped in the binary and the binary's modification time.
func buildTime() time.Time {
	var t time.Time
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.time" {
				t, _ = time.Parse(time.RFC3339, s.Value)
			}
		}
	}
	if exe, err := os.Executable(); err == nil {
		if st, err := os.Stat(exe); err == nil && st.ModTime().After(t) {
			t = st.ModTime()
		}
	}
	return t
}
