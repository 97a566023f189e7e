package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	fleetctl "github.com/tender-edge/tender/fleet/controller"
	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/fleet/store/boltdb"
	"github.com/tender-edge/tender/fleet/store/etcdstore"
)

// storeFlags say where the fleet store is: bbolt in the data directory
// (the default), or an etcd cluster.
type storeFlags struct {
	url  string // "" (bbolt in --data) or etcd[s]://h1:2379,h2:2379[/prefix]
	ca   string
	cert string
	key  string
}

func (f *storeFlags) add(fs *pflag.FlagSet, name, usage string) {
	fs.StringVar(&f.url, name, "", usage)
	fs.StringVar(&f.ca, "store-ca", "", "CA file of the etcd members' certificates (etcds://; default: the system's roots)")
	fs.StringVar(&f.cert, "store-cert", "", "client certificate file for etcd (etcds://, with --store-key)")
	fs.StringVar(&f.key, "store-key", "", "client key file for etcd (etcds://, with --store-cert)")
}

// etcdTarget is a parsed etcd[s]:// store URL.
type etcdTarget struct {
	endpoints []string
	prefix    string
	tls       bool
}

// parseStoreURL reads etcd://h1:2379,h2:2379/prefix (etcds:// for TLS);
// a member without a port gets 2379, no path the default prefix.
func parseStoreURL(s string) (etcdTarget, error) {
	var t etcdTarget
	scheme, rest, ok := strings.Cut(s, "://")
	switch {
	case !ok:
		return t, invalid(fmt.Errorf("store %q: want etcd://HOST:PORT[,HOST:PORT...][/PREFIX] or etcds://... (TLS)", s))
	case scheme == "etcds":
		t.tls = true
	case scheme != "etcd":
		return t, invalid(fmt.Errorf("store %q: unknown scheme %q: want etcd:// or etcds:// (TLS)", s, scheme))
	}
	hosts, path, _ := strings.Cut(rest, "/")
	for h := range strings.SplitSeq(hosts, ",") {
		if h == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(strings.Trim(h, "[]"), "2379")
		}
		if _, err := url.Parse("http://" + h); err != nil {
			return t, invalid(fmt.Errorf("store %q: member %q: %v", s, h, err))
		}
		t.endpoints = append(t.endpoints, h)
	}
	if len(t.endpoints) == 0 {
		return t, invalid(fmt.Errorf("store %q names no etcd member", s))
	}
	t.prefix = etcdstore.DefaultPrefix
	if path = strings.Trim(path, "/"); path != "" {
		t.prefix = "/" + path + "/"
	}
	return t, nil
}

// tlsConfig builds the client TLS of an etcds:// store; the TLS flags
// with plain etcd:// are refused rather than ignored.
func (f *storeFlags) tlsConfig(t etcdTarget) (*tls.Config, error) {
	if !t.tls {
		if f.ca != "" || f.cert != "" || f.key != "" {
			return nil, invalid(fmt.Errorf("--store-ca, --store-cert and --store-key are for TLS: write the store as etcds://"))
		}
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, invalid(fmt.Errorf("--store-ca: %w", err))
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, invalid(fmt.Errorf("--store-ca %s: no PEM certificate in it", f.ca))
		}
	}
	if (f.cert == "") != (f.key == "") {
		return nil, invalid(fmt.Errorf("--store-cert and --store-key go together"))
	}
	if f.cert != "" {
		c, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, invalid(fmt.Errorf("--store-cert/--store-key: %w", err))
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg, nil
}

// openEtcd opens the etcd store the flags name.
func (f *storeFlags) openEtcd(ctx context.Context) (*etcdstore.DB, error) {
	t, err := parseStoreURL(f.url)
	if err != nil {
		return nil, err
	}
	tc, err := f.tlsConfig(t)
	if err != nil {
		return nil, err
	}
	return etcdstore.Open(ctx, etcdstore.Config{Endpoints: t.endpoints, Prefix: t.prefix, TLS: tc})
}

// openStore opens the controller's store: bbolt in dataDir unless the
// flags name an etcd cluster. It returns a description for the log.
// The etcd store is returned too (nil with bbolt), for the election.
func (f *storeFlags) openStore(ctx context.Context, dataDir string) (store.Store, *etcdstore.DB, string, error) {
	if f.url == "" {
		path := filepath.Join(dataDir, fleetctl.StoreFile)
		db, err := boltdb.Open(path, nil)
		if err != nil {
			return store.Store{}, nil, "", err
		}
		return db.Store(), nil, "bbolt " + path, nil
	}
	db, err := f.openEtcd(ctx)
	if err != nil {
		return store.Store{}, nil, "", fmt.Errorf("open store: %w", err)
	}
	return db.Store(), db, f.url, nil
}

// storeCmd is `tender store`: the controller's store, offline.
func storeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Work on the controller's store (stop tender serve first)",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(migrateCmd())
	return cmd
}

func migrateCmd() *cobra.Command {
	var (
		from  string
		to    storeFlags
		force bool
	)
	cmd := &cobra.Command{
		Use:   "migrate --from DATA/fleet.db --to etcd://HOST:2379,...",
		Short: "Copy a bbolt store into etcd, for controllers in HA",
		Long: `Copy the store of a single controller (bbolt, DATA/fleet.db) into an etcd
cluster, then count every kind of record on both sides.

Stop 'tender serve' first: the bbolt file is locked while it runs. The
target prefix (the URL's path, default /tender/) must be empty; --force
deletes what is there first. The rest of the data directory (keys, CA,
certificates) is not in the store: copy it to every controller.

  tender store migrate --from /var/lib/tender/fleet.db --to etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379
  tender serve --data /var/lib/tender --store etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return migrate(cmd.Context(), from, to, force, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "the bbolt store file (DATA/fleet.db)")
	to.add(f, "to", "the etcd cluster: etcd://HOST:PORT[,HOST:PORT...][/PREFIX], etcds:// for TLS")
	f.BoolVar(&force, "force", false, "delete what the target prefix holds first")
	_ = cmd.MarkFlagRequired("from")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

func migrate(ctx context.Context, from string, to storeFlags, force bool, stdout io.Writer) error {
	if _, err := parseStoreURL(to.url); err != nil {
		return err
	}
	if _, err := os.Stat(from); err != nil {
		return invalid(fmt.Errorf("--from: %w", err))
	}
	src, err := boltdb.Open(from, nil)
	if err != nil {
		return fmt.Errorf("open source: %w", err)
	}
	defer src.Close()
	dump, err := src.Export(ctx)
	if err != nil {
		return fmt.Errorf("read source %s: %w", from, err)
	}
	dst, err := to.openEtcd(ctx)
	if err != nil {
		return fmt.Errorf("open target: %w", err)
	}
	defer dst.Close()
	if err := dst.Import(ctx, dump, force); err != nil {
		if errdefs.IsAlreadyExists(err) {
			return fmt.Errorf("copy %s to %s: %w (--force deletes it first)", from, to.url, err)
		}
		return fmt.Errorf("copy %s to %s: %w", from, to.url, err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "copied %s to %s%s, counts checked:\n", from, strings.Join(dst.Endpoints(), ","), dst.Prefix())
	counts := dump.Counts()
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		fmt.Fprintf(tw, "  %s\t%d\n", k, counts[k])
	}
	return tw.Flush()
}
