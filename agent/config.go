package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tender-edge/tender/agent/reconcile"
	"github.com/tender-edge/tender/internal/quantity"
	"github.com/tender-edge/tender/runtime/image"
)

// DefaultConfigPath is where the agent reads its configuration.
const DefaultConfigPath = "/etc/tender/agent.yaml"

// Config is the agent's configuration (YAML). The zero value of every
// field means its documented default.
type Config struct {
	// DeviceID names this device to the fleet (default: the hostname).
	DeviceID string `json:"deviceId,omitempty"`
	// StateDir holds images, containers and the agent's state (default
	// /var/lib/tender, mode 0700).
	StateDir string `json:"stateDir,omitempty"`
	// Socket is the local API's unix socket (default /run/tender/agent.sock, 0600).
	Socket string `json:"socket,omitempty"`
	// Reserve is what the agent keeps back from apps for the system.
	Reserve Reserve `json:"reserve,omitempty"`
	// Store bounds the image store.
	Store StoreConfig `json:"store,omitempty"`
	// Registries: credentials, mirrors and TLS per registry host.
	Registries map[string]image.Registry `json:"registries,omitempty"`
	// DockerConfig is a docker config.json with registry credentials.
	DockerConfig string `json:"dockerConfig,omitempty"`
	// ReconcileInterval is how often the agent re-checks everything even
	// when nothing happened (default 10s).
	ReconcileInterval Duration `json:"reconcileInterval,omitempty"`
	// Restarts tunes restart backoff and rollback (defaults: 1s doubling
	// to 5m, reset after a 10m run, crash loop after 5 restarts, rollback
	// 2m after healthyFor has passed unconfirmed).
	Restarts RestartPolicy `json:"restarts,omitempty"`
	// Fleet is the link to the controller (issue 5); empty: standalone.
	Fleet FleetConfig `json:"fleet,omitempty"`
	// Network is the bridge of apps with network: bridge.
	Network NetworkConfig `json:"network,omitempty"`
}

// NetworkConfig is the bridge network (defaults: tender0, 10.88.0.0/16).
type NetworkConfig struct {
	Bridge string `json:"bridge,omitempty"`
	Subnet string `json:"subnet,omitempty"`
}

// RestartPolicy is reconcile.Policy in YAML.
type RestartPolicy struct {
	BackoffBase       Duration `json:"backoffBase,omitempty"`
	BackoffCap        Duration `json:"backoffCap,omitempty"`
	ResetAfter        Duration `json:"resetAfter,omitempty"`
	CrashLoopRestarts int      `json:"crashLoopRestarts,omitempty"`
	RolloutGrace      Duration `json:"rolloutGrace,omitempty"`
}

// Policy is the reconcile policy (zero fields take reconcile's defaults).
func (p RestartPolicy) Policy() reconcile.Policy {
	return reconcile.Policy{
		BackoffBase: p.BackoffBase.Duration, BackoffCap: p.BackoffCap.Duration,
		ResetAfter: p.ResetAfter.Duration, CrashLoopRestarts: p.CrashLoopRestarts,
		RolloutGrace: p.RolloutGrace.Duration,
	}
}

// Reserve is kept back for the host.
type Reserve struct {
	Memory string  `json:"memory,omitempty"` // default 64Mi
	CPU    float64 `json:"cpu,omitempty"`    // CPUs, default 0
}

// StoreConfig bounds the image store.
type StoreConfig struct {
	MaxBytes string `json:"maxBytes,omitempty"` // disk budget for images; "" = no budget
}

// FleetConfig is how the agent reaches its fleet over MQTT.
type FleetConfig struct {
	Broker    string `json:"broker,omitempty"`    // tcp://host:1883 or tls://host:8883
	PublicKey string `json:"publicKey,omitempty"` // the fleet's ed25519 key that signs desired state
	Username  string `json:"username,omitempty"`
	Password  string `json:"password,omitempty"`
	CAFile    string `json:"caFile,omitempty"`
	CertFile  string `json:"certFile,omitempty"`
	KeyFile   string `json:"keyFile,omitempty"`
	// Heartbeat is how often a report is sent when nothing changed (default 30s).
	Heartbeat Duration `json:"heartbeat,omitempty"`
	// ReconnectMax caps the jittered reconnect backoff (default 2m).
	ReconnectMax Duration `json:"reconnectMax,omitempty"`
}

// Duration is a time.Duration written as "10s" in YAML: the one duration
// type of app specs and configs (internal/quantity).
type Duration = quantity.Duration

// LoadConfig reads the configuration at path; a missing file at the
// default path means all defaults. Unknown fields are refused.
func LoadConfig(path string) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist) && path == DefaultConfigPath:
	case err != nil:
		return c, fmt.Errorf("config: %w", err)
	default:
		if err := yaml.UnmarshalStrict(b, &c); err != nil {
			return c, fmt.Errorf("config %s: %w", path, err)
		}
	}
	c.Default()
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Default fills in the defaults.
func (c *Config) Default() {
	if c.DeviceID == "" {
		c.DeviceID, _ = os.Hostname()
	}
	if c.StateDir == "" {
		c.StateDir = "/var/lib/tender"
	}
	if c.Socket == "" {
		c.Socket = "/run/tender/agent.sock"
	}
	if c.Reserve.Memory == "" {
		c.Reserve.Memory = "64Mi"
	}
	if c.ReconcileInterval.Duration == 0 && c.ReconcileInterval.Err() == nil {
		c.ReconcileInterval = quantity.D(10 * time.Second)
	}
}

// Validate rejects a configuration that cannot work, naming the field.
func (c *Config) Validate() error {
	if !filepath.IsAbs(c.StateDir) {
		return fmt.Errorf("stateDir %q: must be an absolute path", c.StateDir)
	}
	if !filepath.IsAbs(c.Socket) {
		return fmt.Errorf("socket %q: must be an absolute path", c.Socket)
	}
	if _, err := quantity.ParseBytes(c.Reserve.Memory); err != nil {
		return fmt.Errorf("reserve.memory: %w", err)
	}
	if c.Reserve.CPU < 0 {
		return fmt.Errorf("reserve.cpu %v: must not be negative", c.Reserve.CPU)
	}
	if c.Store.MaxBytes != "" {
		if _, err := quantity.ParseBytes(c.Store.MaxBytes); err != nil {
			return fmt.Errorf("store.maxBytes: %w", err)
		}
	}
	for _, d := range []struct {
		field string
		d     Duration
	}{
		{"reconcileInterval", c.ReconcileInterval}, {"restarts.backoffBase", c.Restarts.BackoffBase},
		{"restarts.backoffCap", c.Restarts.BackoffCap}, {"restarts.resetAfter", c.Restarts.ResetAfter},
		{"restarts.rolloutGrace", c.Restarts.RolloutGrace}, {"fleet.heartbeat", c.Fleet.Heartbeat},
		{"fleet.reconnectMax", c.Fleet.ReconnectMax},
	} {
		if err := d.d.Err(); err != nil {
			return fmt.Errorf("%s: %w", d.field, err)
		}
	}
	r := c.Restarts
	if r.CrashLoopRestarts < 0 || r.BackoffBase.Duration < 0 || r.BackoffCap.Duration < r.BackoffBase.Duration && r.BackoffCap.Duration != 0 {
		return fmt.Errorf("restarts: backoffCap must not be below backoffBase, and no value may be negative")
	}
	if c.ReconcileInterval.Duration < 100*time.Millisecond {
		return fmt.Errorf("reconcileInterval %s: must be at least 100ms", c.ReconcileInterval.Duration)
	}
	return nil
}

// RegistryConfig is the image store's view of the registry settings.
func (c *Config) RegistryConfig() image.RegistryConfig {
	return image.RegistryConfig{Registries: c.Registries, DockerConfig: c.DockerConfig}
}
