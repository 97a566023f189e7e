package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"sigs.k8s.io/yaml"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/broker"
	"github.com/tender-edge/tender/fleet/console"
	fleetctl "github.com/tender-edge/tender/fleet/controller"
	"github.com/tender-edge/tender/fleet/enroll"
	"github.com/tender-edge/tender/fleet/store/etcdstore"
	"github.com/tender-edge/tender/sync/mqttc"
)

// serveOptions are the flags of `tender serve`.
type serveOptions struct {
	data        string
	listen      string
	mqtt        string
	insecureTCP string
	brokerURL   string
	deviceURL   string // what devices are told at enrollment (default brokerURL)
	brokerUser  string
	brokerPass  string // file holding the password
	brokerCA    string
	hosts       []string
	registries  string
	grace       time.Duration
	logLevel    string
	enrollRate  int
	store       storeFlags
	debugAddr   string
	leaseTTL    time.Duration
	tokenTTL    time.Duration
	id          string
	brokerID    string
}

func serveCmd() *cobra.Command {
	o := serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve --data DIR",
		Short: "Run the fleet controller: API, embedded MQTT broker, placement and rollouts",
		Long: `Run the fleet controller. On first start it creates, under --data (0700),
the fleet's signing key, its CA and server certificate, the store, and an
admin API token, printed once and written to DIR/admin.token (0600).
The store is DIR/fleet.db (bbolt) unless --store names an etcd cluster
(see 'tender store migrate'); the keys and the CA stay in DIR.

The API is HTTPS on --listen; devices speak MQTT over TLS to the embedded
broker on --mqtt (plain TCP only on --insecure-tcp), or, with --broker, to
an external broker the controller joins as one more authenticated client
(configs/mosquitto): with the client certificate DATA/controller.crt that
it issues itself from the fleet CA (CN tender-controller), or with
--broker-user and --broker-password-file. The broker must present a
certificate of the fleet CA (DATA/server.crt, made for the --host names)
and read DATA/crl.pem, which the controller writes before it connects
and rewrites on every revocation.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.data, "data", "", "data directory (keys, CA, store)")
	f.StringVar(&o.listen, "listen", ":8443", "API address (HTTPS)")
	f.StringVar(&o.mqtt, "mqtt", ":8883", "embedded broker's TLS address")
	f.StringVar(&o.insecureTCP, "insecure-tcp", "", "also serve MQTT over plain TCP on this address (loopback, tests)")
	f.StringVar(&o.brokerURL, "broker", "", "external broker URL (tls://host:8883) instead of the embedded one")
	f.StringVar(&o.deviceURL, "device-broker", "", "external broker URL devices are told at enrollment (default: --broker)")
	f.StringVar(&o.brokerUser, "broker-user", enroll.ControllerID, "user name at the external broker, with --broker-password-file")
	f.StringVar(&o.brokerPass, "broker-password-file", "", "file holding the password at the external broker (default: log in with DATA/controller.crt, CN "+enroll.ControllerID+")")
	f.StringVar(&o.brokerCA, "broker-ca", "", "CA file of the external broker (default: the fleet CA)")
	f.StringSliceVar(&o.hosts, "host", nil, "names and addresses devices reach this controller by (default: the host name)")
	f.StringVar(&o.registries, "registries", "", "registries config (YAML: registries: {host: {insecure, username, password}})")
	f.DurationVar(&o.grace, "grace", 0, "how long a device may be offline before its share of an N-device app moves (default 5m)")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	o.store.add(f, "store", "the store: etcd://HOST:PORT[,HOST:PORT...][/PREFIX] (etcds:// for TLS) for controllers in HA; default bbolt in --data")
	f.IntVar(&o.enrollRate, "enroll-rate", 0, "benchmarks only: enrollments allowed per second from one address, burst as many (default: 10, then one every 6s)")
	f.StringVar(&o.debugAddr, "debug-addr", "", "serve Go's profiles (/debug/pprof/) on this loopback address, plain HTTP, no token (off by default)")
	f.DurationVar(&o.tokenTTL, "token-cache-ttl", api.DefaultTokenCacheTTL, "with an etcd store: how long after the store last confirmed an API token it is still taken while the store has no quorum")
	f.DurationVar(&o.leaseTTL, "lease-ttl", etcdstore.DefaultLeaseTTL, "with an etcd store: the leader's lease; a leader killed, paused or cut off is replaced within it")
	f.StringVar(&o.id, "id", "", "with an etcd store: this controller's name among the others (default: host name and --listen)")
	f.StringVar(&o.brokerID, "broker-identity", enroll.ControllerID, "with --broker: the name this controller logs in with (its certificate's CN; each controller sharing a broker needs its own, starting with "+enroll.ControllerID+")")
	_ = cmd.MarkFlagRequired("data")
	return cmd
}

// registriesFile is the --registries file.
type registriesFile struct {
	Registries map[string]fleetctl.Registry `json:"registries"`
}

func serve(ctx context.Context, o serveOptions, stdout, stderr io.Writer) error {
	lvl, err := zerolog.ParseLevel(o.logLevel)
	if err != nil {
		return usageError{Err: fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel), Path: "tender serve"}
	}
	if o.enrollRate < 0 {
		return usageError{Err: fmt.Errorf("--enroll-rate %d: want a count of enrollments a second per address, or 0 for the default", o.enrollRate), Path: "tender serve"}
	}
	if o.debugAddr != "" {
		if err := checkDebugAddr(o.debugAddr); err != nil {
			return usageError{Err: err, Path: "tender serve"}
		}
	}
	log := zerolog.New(stderr).Level(lvl).With().Timestamp().Logger()
	var enrollLimiter *enroll.Limiter
	if o.enrollRate > 0 {
		// F-04 stays: the limit is per address, only higher, for a
		// simulated fleet enrolling from one host (test/bench/fleet.sh).
		enrollLimiter = enroll.NewLimiter(time.Second/time.Duration(o.enrollRate), o.enrollRate)
		log.Warn().Int("perSecond", o.enrollRate).Msg("enrollment rate limit raised for a benchmark")
	}
	if err := fleetctl.PrepareDir(o.data); err != nil {
		return err
	}
	key, err := fleetctl.LoadOrCreateKey(o.data)
	if err != nil {
		return err
	}
	st, edb, storeDesc, err := o.store.openStore(ctx, o.data)
	if err != nil {
		return err
	}
	defer st.Close()
	started := time.Now()
	var election *etcdstore.Election
	storeName := "bbolt"
	if edb != nil {
		storeName = "etcd"
		if o.id == "" {
			h, _ := os.Hostname()
			o.id = h + o.listen
		}
		election, err = edb.Elect(etcdstore.ElectionConfig{ID: o.id, API: o.listen, Started: started, LeaseTTL: o.leaseTTL,
			Log: log.With().Str("component", "election").Logger()})
		if err != nil {
			return usageError{Err: err, Path: "tender serve"}
		}
		if o.brokerURL == "" {
			log.Warn().Msg("etcd store with the embedded broker: only the devices connected to the leader's broker get desired documents; use --broker for several controllers")
		}
	}
	if tok, err := fleetctl.EnsureAdminToken(ctx, st.APITokens, time.Now()); err != nil {
		return err
	} else if tok != "" {
		path := filepath.Join(o.data, "admin.token")
		if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
			return fmt.Errorf("write admin token: %w", err)
		}
		fmt.Fprintf(stdout, "Admin API token (shown once, also in %s):\n  %s\n", path, tok)
	}

	hosts := o.hosts
	if len(hosts) == 0 {
		if h, err := os.Hostname(); err == nil {
			hosts = []string{h}
		}
	}
	ca, err := enroll.LoadOrCreateCA(o.data, time.Now())
	if err != nil {
		return err
	}
	cert, err := ca.ServerCertificate(hosts, time.Now())
	if err != nil {
		return err
	}
	var resolver fleetctl.Resolver
	if o.registries != "" {
		b, err := os.ReadFile(o.registries)
		if err != nil {
			return fmt.Errorf("registries config: %w", err)
		}
		var rf registriesFile
		if err := yaml.UnmarshalStrict(b, &rf); err != nil {
			return fmt.Errorf("registries config %s: %w", o.registries, err)
		}
		resolver = fleetctl.RegistryResolver{Registries: rf.Registries}
	} else {
		resolver = fleetctl.RegistryResolver{}
	}

	g, gctx := errgroup.WithContext(ctx)
	var (
		tr       fleetctl.Transport
		rv       fleetctl.Revoker
		brokers  []string
		name     string
		ctrlRef  atomic.Pointer[fleetctl.Controller]
		external *mqttc.Client
	)
	if o.brokerURL != "" {
		// The seam for an external broker: the controller is one
		// authenticated client there (configs/mosquitto).
		tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: x509.NewCertPool()}
		tlsCfg.RootCAs.AddCert(ca.Cert)
		if o.brokerCA != "" {
			pem, err := os.ReadFile(o.brokerCA)
			if err != nil {
				return fmt.Errorf("--broker-ca: %w", err)
			}
			tlsCfg.RootCAs.AppendCertsFromPEM(pem)
		}
		user, pass := "", ""
		if o.brokerPass != "" {
			b, err := os.ReadFile(o.brokerPass)
			if err != nil {
				return fmt.Errorf("--broker-password-file: %w", err)
			}
			user, pass = o.brokerUser, strings.TrimSpace(string(b))
		} else {
			// The broker takes the certificate's CN as the user name
			// (use_identity_as_username); no device may enroll as it.
			cc, err := ca.ControllerCertificateAs(o.brokerID, time.Now())
			if err != nil {
				return err
			}
			tlsCfg.Certificates = []tls.Certificate{cc}
		}
		if o.brokerPass != "" && o.brokerUser == enroll.ControllerID {
			user = o.brokerID
		}
		cl, err := mqttc.New(mqttc.Config{Broker: o.brokerURL, ClientID: o.brokerID, Username: user, Password: pass,
			TLS: tlsCfg, CleanSession: true, Log: log.With().Str("component", "mqtt").Logger()})
		if err != nil {
			return err
		}
		m := fleetctl.MQTT{Client: cl}
		devURL := o.deviceURL
		if devURL == "" {
			devURL = o.brokerURL
		}
		tr, rv, brokers, name = m, m, []string{devURL}, o.brokerURL
		// Connected after fleetctl.New, which writes DATA/crl.pem: the
		// broker cannot start before that file exists.
		external = cl
	} else {
		pool := x509.NewCertPool()
		pool.AddCert(ca.Cert)
		b, err := broker.New(broker.Config{
			TLSAddr: o.mqtt, Certificate: &cert, ClientCAs: pool, TCPAddr: o.insecureTCP,
			Revoked: func(serial *big.Int) bool {
				c := ctrlRef.Load()
				return c != nil && c.Enroller().Revoked(serial)
			},
			Passwords: passwords{&ctrlRef},
			Log:       log,
		})
		if err != nil {
			return err
		}
		tr, rv, name = b, b, "embedded"
		_, port, _ := net.SplitHostPort(o.mqtt)
		for _, h := range hosts {
			brokers = append(brokers, "tls://"+net.JoinHostPort(h, port))
		}
		// Started before the controller, which subscribes on it; a
		// device connecting meanwhile is checked against the CRL once
		// the controller is up (enroll keeps the revocations).
		if err := b.Start(); err != nil {
			return err
		}
		defer func() { _ = b.Close() }()
	}

	var metrics *api.Metrics
	var leadership fleetctl.Leadership
	var watch fleetctl.DeviceWatch
	shared := ""
	if edb != nil {
		watch = edb // the loop reads the devices written, not all of them at each pass
	}
	if election != nil {
		leadership = election
		if external != nil {
			shared = "tender" // $share/tender/...: ingest split among the controllers
		}
	}
	ctrl, err := fleetctl.New(ctx, fleetctl.Config{
		Dir: o.data, Brokers: brokers, Broker: name, Version: version, Grace: o.grace, EnrollLimiter: enrollLimiter, Log: log,
		ID: o.id, SharedGroup: shared, StoreName: storeName,
	}, fleetctl.Deps{
		Store: st, Key: key, Transport: tr, Revoker: rv, Resolver: resolver, Leadership: leadership, DeviceWatch: watch,
		Metrics: fleetctl.Metrics{
			PublishLatency: func(d time.Duration) {
				if metrics != nil {
					metrics.PublishLatency.Observe(d.Seconds())
				}
			},
			Ingested: func(reports, events int) {
				if metrics != nil {
					metrics.ReportsIngested.Add(float64(reports))
					metrics.EventsIngested.Add(float64(events))
				}
			},
			Fleet: func(devices, online int, rollouts map[string]int) {
				if metrics == nil {
					return
				}
				metrics.Devices.Set(float64(devices))
				metrics.DevicesOnline.Set(float64(online))
				for p, n := range rollouts {
					metrics.Rollouts.WithLabelValues(p).Set(float64(n))
				}
			},
		},
	})
	if err != nil {
		return err
	}
	ctrlRef.Store(ctrl)
	if external != nil {
		g.Go(func() error { return ignoreCanceled(external.Run(gctx)) })
		log.Info().Str("broker", o.brokerURL).Str("crl", ctrl.Enroller().CRLPath()).Msg("waiting for the external broker")
		if err := external.WaitConnected(gctx); err != nil {
			return fmt.Errorf("external broker %s: %w", o.brokerURL, err)
		}
	}
	// Tokens the store confirmed are taken for a while when it does not
	// answer (an etcd store without a quorum): reads go on (api.TokenCache).
	tokens := api.NewTokenCache(st.APITokens, o.tokenTTL, nil)
	ui, err := console.New(console.Config{
		Controller: ctrl, Tokens: tokens, Sessions: st.Sessions, SessionCacheTTL: o.tokenTTL,
		Log: log.With().Str("component", "console").Logger(),
		AuthFailed: func(reason string) {
			if metrics != nil {
				metrics.AuthFailures.WithLabelValues("console-" + reason).Inc()
			}
		},
	})
	if err != nil {
		return err
	}
	srv, err := api.NewServer(api.Config{
		Addr: o.listen, TLS: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}},
		Controller: ctrl, Tokens: tokens, Enroll: ctrl.EnrollHandler(), Console: ui, Log: log,
	})
	if err != nil {
		return err
	}
	metrics = srv.Metrics()
	log.Info().Str("api", o.listen).Strs("brokers", brokers).Str("data", o.data).Str("store", storeDesc).Msg("controller serving")
	if election != nil {
		g.Go(func() error { return ignoreCanceled(election.Run(gctx)) })
	}
	g.Go(func() error { return ignoreCanceled(ctrl.Run(gctx)) })
	g.Go(func() error { return ignoreCanceled(srv.Serve(gctx)) })
	if o.debugAddr != "" {
		g.Go(func() error { return serveDebug(gctx, o.debugAddr, log) })
	}
	return g.Wait()
}

func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// passwords checks the embedded broker's password fallback against the
// controller, once it runs (until then every password is refused).
type passwords struct {
	ctrl *atomic.Pointer[fleetctl.Controller]
}

func (p passwords) Check(device, password string) bool {
	c := p.ctrl.Load()
	return c != nil && c.CheckPassword(device, password)
}
