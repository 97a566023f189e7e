package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Defaults of Config.
const (
	DefaultBridge = "tender0"
	DefaultSubnet = "10.88.0.0/16"
)

// VethPrefix starts the host-side name of every veth the package makes;
// "tv" and the first 12 characters of the container's ID.
const VethPrefix = "tv"

// Config is the bridge network of one runtime root.
type Config struct {
	Bridge string       `json:"bridge"`
	Subnet netip.Prefix `json:"subnet"`
}

// Validate checks the bridge name and that the subnet is an IPv4 network
// with room for containers (at most /29).
func (c Config) Validate() error {
	if c.Bridge == "" || len(c.Bridge) > unix.IFNAMSIZ-1 || strings.ContainsAny(c.Bridge, "/ \t\n:") {
		return fmt.Errorf("bridge name %q: want 1 to 15 characters without spaces, slashes or colons: %w", c.Bridge, errdefs.ErrInvalidArgument)
	}
	if !c.Subnet.IsValid() || !c.Subnet.Addr().Is4() || c.Subnet.Bits() > 29 || c.Subnet.Masked() != c.Subnet {
		return fmt.Errorf("bridge subnet %s: want an IPv4 network address with a prefix of at most /29 (such as %s): %w", c.Subnet, DefaultSubnet, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Gateway is the bridge's own address: the subnet's first.
func (c Config) Gateway() netip.Addr { return c.Subnet.Addr().Next() }

// Endpoint is one container's attachment: its lease.
type Endpoint struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Aliases []string `json:"aliases,omitempty"`
	// Groups are the networks it joins: endpoints that share one reach
	// each other by address and by name; others only through published
	// ports.
	Groups []string   `json:"groups"`
	Ports  []Port     `json:"ports,omitempty"`
	IP     netip.Addr `json:"ip,omitzero"`
	// Dir holds its hosts and resolv.conf (bound into the container).
	Dir string `json:"dir"`
}

func (e Endpoint) names() []string {
	return append([]string{e.Name}, e.Aliases...)
}

// Veth is the host-side name of the endpoint's veth.
func (e Endpoint) Veth() string {
	id := e.ID
	if len(id) > 12 {
		id = id[:12]
	}
	return VethPrefix + id
}

// HostsPath and ResolvPath are the files Attach writes for a container
// whose files live in dir; the runtime binds them on /etc/hosts and
// /etc/resolv.conf.
func HostsPath(dir string) string  { return filepath.Join(dir, "hosts") }
func ResolvPath(dir string) string { return filepath.Join(dir, "resolv.conf") }

// Manager attaches and detaches the containers of one runtime root.
type Manager struct {
	dir string // ROOT/network
	cfg Config
}

// Open opens ROOT/network with the config saved there, or the defaults.
func Open(root string) (*Manager, error) {
	dir := filepath.Join(root, "network")
	if err := os.MkdirAll(filepath.Join(dir, "leases"), 0o700); err != nil {
		return nil, fmt.Errorf("network state: %w", err)
	}
	cfg := Config{Bridge: DefaultBridge, Subnet: netip.MustParsePrefix(DefaultSubnet)}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err == nil {
		if err := json.Unmarshal(b, &cfg); err != nil {
			return nil, fmt.Errorf("network config %s: %w", filepath.Join(dir, "config.json"), err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("network config: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Manager{dir: dir, cfg: cfg}, nil
}

// Config is the network's config.
func (m *Manager) Config() Config { return m.cfg }

// SetConfig saves cfg for every later Open of the root. A change of the
// subnet or bridge while containers are attached is refused.
func (m *Manager) SetConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg == m.cfg {
		return nil
	}
	unlock, err := m.lock()
	if err != nil {
		return err
	}
	defer unlock()
	eps, err := m.leases()
	if err != nil {
		return err
	}
	if len(eps) > 0 {
		return fmt.Errorf("bridge network %s %s: %d containers are attached to %s %s; stop them first: %w",
			cfg.Bridge, cfg.Subnet, len(eps), m.cfg.Bridge, m.cfg.Subnet, errdefs.ErrFailedPrecondition)
	}
	b, _ := json.Marshal(cfg)
	if err := writeAtomic(filepath.Join(m.dir, "config.json"), b); err != nil {
		return err
	}
	m.cfg = cfg
	return nil
}

func (m *Manager) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(m.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("network lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("network lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// Leases are the endpoints attached now, by name.
func (m *Manager) Leases() ([]Endpoint, error) { return m.leases() }

func (m *Manager) leases() ([]Endpoint, error) {
	ents, err := os.ReadDir(filepath.Join(m.dir, "leases"))
	if err != nil {
		return nil, fmt.Errorf("network leases: %w", err)
	}
	var eps []Endpoint
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(m.dir, "leases", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("network lease: %w", err)
		}
		var ep Endpoint
		if err := json.Unmarshal(b, &ep); err != nil || ep.ID+".json" != e.Name() {
			// Half a lease cannot be: leases are written by rename.
			return nil, fmt.Errorf("network lease %s is corrupt: %w", e.Name(), errdefs.ErrDataLoss)
		}
		eps = append(eps, ep)
	}
	sort.Slice(eps, func(i, j int) bool { return eps[i].Name < eps[j].Name })
	return eps, nil
}

func (m *Manager) leasePath(id string) string {
	return filepath.Join(m.dir, "leases", id+".json")
}

// allocate picks the lowest free address of the subnet (neither the
// network's, the gateway's nor the broadcast address).
func (m *Manager) allocate(eps []Endpoint) (netip.Addr, error) {
	used := map[netip.Addr]bool{m.cfg.Gateway(): true}
	for _, e := range eps {
		used[e.IP] = true
	}
	p := m.cfg.Subnet
	for a := m.cfg.Gateway().Next(); p.Contains(a); a = a.Next() {
		if !p.Contains(a.Next()) {
			break // the broadcast address
		}
		if !used[a] {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("bridge subnet %s has no free address: %w", p, errdefs.ErrResourceExhausted)
}

// CheckPorts refuses ports that another endpoint (other than id) already
// publishes, naming it.
func CheckPorts(id string, ports []Port, eps []Endpoint) error {
	for _, e := range eps {
		if e.ID == id {
			continue
		}
		for _, q := range e.Ports {
			for _, p := range ports {
				if p.Overlaps(q) {
					return fmt.Errorf("port %s: host port %d/%s is already published by container %s (%s): %w",
						p, p.HostPort, p.Proto, e.Name, q, errdefs.ErrConflict)
				}
			}
		}
	}
	return nil
}

// Attach gives the container whose init is pid (in its own network
// namespace, still only with lo) an address and a veth on the bridge,
// publishes its ports, and writes its hosts and resolv.conf and those of
// its peers. It returns the endpoint with its address. A lease the same
// container left from an earlier start is replaced.
func (m *Manager) Attach(pid int, ep Endpoint) (Endpoint, error) {
	if len(ep.Groups) == 0 {
		return ep, fmt.Errorf("attach %s: no network group: %w", ep.Name, errdefs.ErrInvalidArgument)
	}
	unlock, err := m.lock()
	if err != nil {
		return ep, err
	}
	defer unlock()
	br, err := m.ensureBridge()
	if err != nil {
		return ep, err
	}
	eps, err := m.leases()
	if err != nil {
		return ep, err
	}
	if err := CheckPorts(ep.ID, ep.Ports, eps); err != nil {
		return ep, err
	}
	others := eps[:0:0]
	for _, e := range eps {
		if e.ID != ep.ID {
			others = append(others, e)
		}
	}
	deleteLink(ep.Veth())
	ip, err := m.allocate(others)
	if err != nil {
		return ep, err
	}
	ep.IP = ip
	b, _ := json.Marshal(ep)
	if err := writeAtomic(m.leasePath(ep.ID), b); err != nil {
		return ep, err
	}
	all := append(others, ep)
	if err := m.plug(pid, br, ep); err != nil {
		m.unplug(ep)
		_ = m.sync(others)
		return ep, fmt.Errorf("attach %s: %w", ep.Name, err)
	}
	if err := m.sync(all); err != nil {
		m.unplug(ep)
		_ = m.sync(others)
		return ep, fmt.Errorf("attach %s: %w", ep.Name, err)
	}
	if err := writeResolv(ep.Dir); err != nil {
		return ep, fmt.Errorf("attach %s: %w", ep.Name, err)
	}
	m.writeHosts(all, ep)
	return ep, nil
}

// Detach removes the container's veth, lease and rules and takes it out of
// its peers' hosts files. Detaching what is not attached does nothing.
func (m *Manager) Detach(id string) error {
	unlock, err := m.lock()
	if err != nil {
		return err
	}
	defer unlock()
	b, err := os.ReadFile(m.leasePath(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var ep Endpoint
	if err != nil || json.Unmarshal(b, &ep) != nil {
		ep = Endpoint{ID: id}
	}
	m.unplug(ep)
	eps, err := m.leases()
	if err != nil {
		return err
	}
	if err := m.sync(eps); err != nil {
		return fmt.Errorf("detach %s: %w", ep.Name, err)
	}
	m.writeHosts(eps, ep)
	return nil
}

// Repair frees the leases of containers that are no longer running (live
// says which are), removes veths on the bridge that no lease owns, and
// rebuilds the rules of those left: what an agent or monitor killed mid-way
// leaves behind. It returns the number of leases freed and veths removed.
func (m *Manager) Repair(live func(id string) bool) (freed, removed int, err error) {
	unlock, err := m.lock()
	if err != nil {
		return 0, 0, err
	}
	defer unlock()
	eps, err := m.leases()
	if err != nil {
		return 0, 0, err
	}
	kept := eps[:0:0]
	for _, e := range eps {
		if live(e.ID) {
			kept = append(kept, e)
			continue
		}
		m.unplug(e)
		freed++
	}
	owned := map[string]bool{}
	for _, e := range kept {
		owned[e.Veth()] = true
	}
	bridgeFound := false
	err = withRTNL(func(r *rtnl) error {
		links, err := r.links()
		if err != nil {
			return fmt.Errorf("list links: %w", err)
		}
		for _, l := range links {
			bridgeFound = bridgeFound || l.Name == m.cfg.Bridge
			if l.Kind == "veth" && strings.HasPrefix(l.Name, VethPrefix) && !owned[l.Name] {
				if r.deleteLink(l.Index) == nil {
					removed++
				}
			}
		}
		return nil
	})
	if err != nil {
		return freed, 0, err
	}
	if len(kept) == 0 && freed == 0 && removed == 0 && !bridgeFound {
		// Nothing attached, nothing left: do not make a bridge or
		// tables on a host that never used one.
		return 0, 0, nil
	}
	if _, err := m.ensureBridge(); err != nil {
		return freed, removed, err
	}
	if err := m.sync(kept); err != nil {
		return freed, removed, err
	}
	for _, e := range kept {
		m.writeHosts(kept, e)
	}
	return freed, removed, nil
}

// Remove takes down everything the package made in this namespace: the
// tables and the bridge (and with it any veth still on it). Leases are
// dropped too.
func (m *Manager) Remove() error {
	unlock, err := m.lock()
	if err != nil {
		return err
	}
	defer unlock()
	eps, err := m.leases()
	if err != nil {
		return err
	}
	for _, e := range eps {
		m.unplug(e)
	}
	deleteLink(m.cfg.Bridge)
	return removeTables()
}

func (m *Manager) unplug(ep Endpoint) {
	deleteLink(ep.Veth())
	_ = os.Remove(m.leasePath(ep.ID))
}

func deleteLink(name string) {
	_ = withRTNL(func(r *rtnl) error {
		l, err := r.linkByName(name)
		if err == nil {
			err = r.deleteLink(l.Index)
		}
		return err
	})
}

// writeHosts writes the hosts file of every endpoint sharing a group with
// changed (and of changed itself, when it is in eps). A peer whose file
// cannot be written (removed meanwhile) is skipped.
func (m *Manager) writeHosts(eps []Endpoint, changed Endpoint) {
	for _, e := range eps {
		if e.ID == changed.ID || shareGroup(e, changed) {
			_ = writeInPlace(HostsPath(e.Dir), hostsFile(e, eps))
		}
	}
}

func writeResolv(dir string) error {
	host, err := os.ReadFile("/etc/resolv.conf")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("host resolv.conf: %w", err)
	}
	up, _ := os.ReadFile("/run/systemd/resolve/resolv.conf")
	return writeInPlace(ResolvPath(dir), resolvConf(host, up))
}

// writeInPlace rewrites a file keeping its inode: it is bound into a
// running container, which would keep seeing an old inode after a rename.
func writeInPlace(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// ensureBridge makes the bridge with the gateway address and turns on
// forwarding; a subnet that overlaps a route of the host (other than the
// bridge's own) is refused.
func (m *Manager) ensureBridge() (link, error) {
	gw := netip.PrefixFrom(m.cfg.Gateway(), m.cfg.Subnet.Bits())
	r, err := dialRTNL(0)
	if err != nil {
		return link{}, err
	}
	defer r.Close()
	br, err := r.linkByName(m.cfg.Bridge)
	if err != nil {
		if !errors.Is(err, errLinkNotFound) {
			return link{}, fmt.Errorf("bridge %s: %w", m.cfg.Bridge, err)
		}
		if err := checkOverlap(r, m.cfg.Subnet, -1); err != nil {
			return link{}, err
		}
		if err := r.addBridge(m.cfg.Bridge); err != nil && !errors.Is(err, unix.EEXIST) {
			return link{}, fmt.Errorf("create bridge %s: %w", m.cfg.Bridge, err)
		}
		if br, err = r.linkByName(m.cfg.Bridge); err != nil {
			return link{}, fmt.Errorf("bridge %s: %w", m.cfg.Bridge, err)
		}
	} else if br.Kind != "bridge" {
		kind := br.Kind
		if kind == "" {
			kind = "device"
		}
		return link{}, fmt.Errorf("%s exists and is a %s, not a bridge: %w", m.cfg.Bridge, kind, errdefs.ErrConflict)
	}
	if err := r.addAddr(br.Index, gw, true); err != nil {
		return link{}, fmt.Errorf("bridge %s address %s: %w", m.cfg.Bridge, gw, err)
	}
	if err := r.setUp(br.Index); err != nil {
		return link{}, fmt.Errorf("bridge %s up: %w", m.cfg.Bridge, err)
	}
	for _, s := range []string{"ipv4/ip_forward", "ipv4/conf/" + m.cfg.Bridge + "/route_localnet"} {
		if err := writeSysctl(s, "1"); err != nil {
			return link{}, err
		}
	}
	return br, nil
}

func writeSysctl(name, v string) error {
	p := "/proc/sys/net/" + name
	if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == v {
		return nil
	}
	if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
		return fmt.Errorf("sysctl net.%s=%s: %w", strings.ReplaceAll(name, "/", "."), v, err)
	}
	return nil
}

// CheckOverlap refuses a subnet that overlaps a route of the host's
// (one not through the link whose index is own).
func CheckOverlap(subnet netip.Prefix, own int) error {
	return withRTNL(func(r *rtnl) error { return checkOverlap(r, subnet, own) })
}

func checkOverlap(r *rtnl, subnet netip.Prefix, own int) error {
	routes, err := r.routes4()
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, rt := range routes {
		if !rt.Dst.IsValid() || rt.Dst.Bits() == 0 || rt.LinkIndex == own {
			continue
		}
		dst := rt.Dst.Masked()
		if dst.Overlaps(subnet) {
			dev := ""
			if l, err := r.linkByIndex(rt.LinkIndex); err == nil {
				dev = " dev " + l.Name
			}
			return fmt.Errorf("bridge subnet %s overlaps the host's route %s%s: choose another subnet: %w", subnet, dst, dev, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// plug makes the veth pair, its container end eth0 in pid's network
// namespace with the endpoint's address and a default route through the
// gateway, its host end on the bridge.
func (m *Manager) plug(pid int, br link, ep Endpoint) error {
	ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("network namespace of %d: %w", pid, err)
	}
	defer unix.Close(ns)
	name, mtu := ep.Veth(), br.MTU
	if mtu == 0 {
		mtu = 1500
	}
	r, err := dialRTNL(0)
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.addVeth(name, mtu, "eth0", ns); err != nil {
		return fmt.Errorf("create veth %s: %w", name, err)
	}
	host, err := r.linkByName(name)
	if err != nil {
		return fmt.Errorf("veth %s: %w", name, err)
	}
	if err := r.setMaster(host.Index, br.Index); err != nil {
		return fmt.Errorf("veth %s on %s: %w", name, m.cfg.Bridge, err)
	}
	if err := r.setUp(host.Index); err != nil {
		return fmt.Errorf("veth %s up: %w", name, err)
	}
	h, err := dialRTNL(ns)
	if err != nil {
		return fmt.Errorf("netlink in the container's namespace: %w", err)
	}
	defer h.Close()
	eth, err := h.linkByName("eth0")
	if err != nil {
		return fmt.Errorf("container eth0: %w", err)
	}
	addr := netip.PrefixFrom(ep.IP, m.cfg.Subnet.Bits())
	if err := h.addAddr(eth.Index, addr, false); err != nil {
		return fmt.Errorf("container address %s: %w", addr, err)
	}
	if err := h.setUp(eth.Index); err != nil {
		return fmt.Errorf("container eth0 up: %w", err)
	}
	if lo, err := h.linkByName("lo"); err == nil {
		_ = h.setUp(lo.Index)
	}
	if err := h.addDefaultRoute(eth.Index, m.cfg.Gateway()); err != nil {
		return fmt.Errorf("container default route: %w", err)
	}
	return nil
}
