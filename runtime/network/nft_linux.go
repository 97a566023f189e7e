package network

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sort"

	"github.com/containerd/errdefs"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the name of Tender's nftables tables (family ip: NAT,
// published ports, forwarding; family bridge: isolation between groups).
const TableName = "tender"

// ErrNoNftables says the kernel cannot do what the bridge network needs.
var ErrNoNftables = fmt.Errorf("the kernel has no usable nftables (CONFIG_NF_TABLES, NF_NAT, NF_TABLES_BRIDGE are needed for network bridge): %w", errdefs.ErrNotImplemented)

func nftErr(what string, err error) error {
	if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("%s: %v: %w", what, err, ErrNoNftables)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func ipTable() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
}

func bridgeTable() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyBridge}
}

// sync rebuilds both tables for eps in one transaction: the old tables and
// whatever was in them go, the new ones come, all at once or not at all.
func (m *Manager) sync(eps []Endpoint) error {
	c, err := nftables.New()
	if err != nil {
		return nftErr("nftables", err)
	}
	build(c, m.cfg, eps)
	if err := c.Flush(); err != nil {
		return nftErr("nftables rules", err)
	}
	return nil
}

// removeTables deletes Tender's tables, and nothing else.
func removeTables() error {
	c, err := nftables.New()
	if err != nil {
		return nftErr("nftables", err)
	}
	for _, t := range []*nftables.Table{ipTable(), bridgeTable()} {
		c.AddTable(t)
		c.DelTable(t)
	}
	if err := c.Flush(); err != nil {
		return nftErr("remove nftables tables", err)
	}
	return nil
}

// Probe builds the tables for a sample endpoint, then removes them:
// nftables has no dry run. It must run where that does no harm: in a
// network namespace of its own (hostcheck makes one), or where no bridge
// network is in use.
func Probe() error {
	cfg := Config{Bridge: DefaultBridge, Subnet: prefix(DefaultSubnet)}
	ep := Endpoint{ID: "probe", Name: "probe", Groups: []string{"probe"}, IP: cfg.Gateway().Next(),
		Ports: []Port{{HostPort: 1, ContainerPort: 1, Proto: "tcp"}}}
	c, err := nftables.New()
	if err != nil {
		return nftErr("nftables", err)
	}
	build(c, cfg, []Endpoint{ep})
	if err := c.Flush(); err != nil {
		return nftErr("nftables rules", err)
	}
	return removeTables()
}

// build queues the transaction that replaces both tables.
func build(c *nftables.Conn, cfg Config, eps []Endpoint) {
	it, bt := ipTable(), bridgeTable()
	for _, t := range []*nftables.Table{it, bt} {
		c.AddTable(t)
		c.DelTable(t)
		c.AddTable(t)
	}
	pol := nftables.ChainPolicyAccept
	pre := c.AddChain(&nftables.Chain{Name: "prerouting", Table: it, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &pol})
	out := c.AddChain(&nftables.Chain{Name: "output", Table: it, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest, Policy: &pol})
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: it, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &pol})
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: it, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &pol})
	mark := c.AddChain(&nftables.Chain{Name: "mark", Table: it, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-90), Policy: &pol})
	bfwd := c.AddChain(&nftables.Chain{Name: "forward", Table: bt, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &pol})

	br := ifname(cfg.Bridge)
	subnet := cfg.Subnet
	loop := prefix("127.0.0.0/8")

	// Published ports: to a local address (or the chosen one) from outside
	// (prerouting) and from the host itself (output).
	for _, e := range eps {
		for _, p := range e.Ports {
			ex := dnat(e, p)
			c.AddRule(&nftables.Rule{Table: it, Chain: pre, Exprs: ex, UserData: []byte(e.ID)})
			c.AddRule(&nftables.Rule{Table: it, Chain: out, Exprs: ex, UserData: []byte(e.ID)})
		}
	}
	// Outbound NAT: from the subnet out of any other interface.
	c.AddRule(&nftables.Rule{Table: it, Chain: post, Exprs: concat(
		saddrIn(subnet),
		[]expr.Any{&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: br}, &expr.Masq{}})})
	// Hairpin: a published port reached from a container or from the
	// host's loopback goes back into the bridge with the gateway's address
	// as its source, so the reply comes back through the NAT.
	for _, src := range []netip.Prefix{subnet, loop} {
		c.AddRule(&nftables.Rule{Table: it, Chain: post, Exprs: concat(
			oifIs(br), ctStatus(ipsDstNat), saddrIn(src), []expr.Any{&expr.Masq{}})})
	}
	// Mark connections DNATed (to a published port), both directions, for
	// the bridge family's isolation chain.
	c.AddRule(&nftables.Rule{Table: it, Chain: mark, Exprs: concat(ctStatus(ipsDstNat), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: le32(^uint32(DNATMark)), Xor: le32(DNATMark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1}})})
	// Forwarding into the bridge: replies, published ports, and traffic
	// from the bridge itself; nothing else from outside reaches a
	// container's address.
	c.AddRule(&nftables.Rule{Table: it, Chain: fwd, Exprs: concat(oifIs(br),
		[]expr.Any{&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: le32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: le32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: le32(0)}, accept()})})
	c.AddRule(&nftables.Rule{Table: it, Chain: fwd, Exprs: concat(oifIs(br), ctStatus(ipsDstNat), []expr.Any{accept()})})
	c.AddRule(&nftables.Rule{Table: it, Chain: fwd, Exprs: concat(oifIs(br),
		[]expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: br}, accept()})})
	c.AddRule(&nftables.Rule{Table: it, Chain: fwd, Exprs: concat(oifIs(br), []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}})})

	// Isolation: between two containers, IPv4 passes the bridge only
	// within a group; IPv6 never (no container has more than link-local).
	groups := map[string][]Endpoint{}
	for _, e := range eps {
		for _, g := range e.Groups {
			groups[g] = append(groups[g], e)
		}
	}
	names := make([]string, 0, len(groups))
	for g := range groups {
		names = append(names, g)
	}
	sort.Strings(names)
	fromVeth := []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(VethPrefix)}}
	// Published ports are open to every group. Where br_netfilter is
	// loaded, a connection to one that the host DNATs back into the bridge
	// is bridged from port to port and meets this chain. The bridge family
	// cannot read conntrack without nf_conntrack_bridge: the ip family
	// marks such packets (DNATMark) after its DNAT, and this accepts them.
	c.AddRule(&nftables.Rule{Table: bt, Chain: bfwd, Exprs: concat(fromVeth, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: le32(DNATMark), Xor: le32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: le32(0)}, accept()})})
	for i, g := range names {
		if len(groups[g]) < 2 {
			continue
		}
		set := &nftables.Set{Table: bt, Name: setName(g), KeyType: nftables.TypeIPAddr, ID: uint32(i + 1)}
		var elems []nftables.SetElement
		for _, e := range groups[g] {
			elems = append(elems, nftables.SetElement{Key: e.IP.AsSlice()})
		}
		_ = c.AddSet(set, elems)
		c.AddRule(&nftables.Rule{Table: bt, Chain: bfwd, UserData: []byte(g), Exprs: concat(fromVeth, etherType(unix.ETH_P_IP), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
			accept()})})
	}
	for _, et := range []uint16{unix.ETH_P_IP, unix.ETH_P_IPV6} {
		c.AddRule(&nftables.Rule{Table: bt, Chain: bfwd, Exprs: concat(fromVeth, etherType(et),
			[]expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}})})
	}
}

// DNATMark is the packet mark bit set on packets of connections to a
// published port (see build); Tender uses no other.
const DNATMark = 0x10000000

// ipsDstNat is IPS_DST_NAT of the conntrack status bits.
const ipsDstNat = 1 << 5

func dnat(e Endpoint, p Port) []expr.Any {
	var ex []expr.Any
	if p.HostIP.IsValid() {
		ex = append(ex, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.HostIP.AsSlice()})
	} else {
		ex = append(ex, &expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: le32(unix.RTN_LOCAL)})
	}
	proto := byte(unix.IPPROTO_TCP)
	if p.Proto == "udp" {
		proto = unix.IPPROTO_UDP
	}
	return append(ex,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(p.HostPort)},
		&expr.Immediate{Register: 1, Data: e.IP.AsSlice()},
		&expr.Immediate{Register: 2, Data: be16(p.ContainerPort)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	)
}

func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// saddrIn matches an IPv4 source address inside p.
func saddrIn(p netip.Prefix) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: net.CIDRMask(p.Bits(), 32), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

func accept() expr.Any { return &expr.Verdict{Kind: expr.VerdictAccept} }

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func oifIs(name []byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name}}
}

func ctStatus(bits uint32) []expr.Any {
	return []expr.Any{&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: le32(bits), Xor: le32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: le32(0)}}
}

func etherType(t uint16) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(t)}}
}

func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

func le32(v uint32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, v)
	return b
}

func be16(v uint16) []byte {
	b := make([]byte, 2)
	binary.BigEndian.PutUint16(b, v)
	return b
}

// setName is a group's set: "g" and 12 hex digits of its name's hash
// (group names are app names, longer than a set name may be).
func setName(g string) string {
	h := sha256.Sum256([]byte(g))
	return "g" + hex.EncodeToString(h[:6])
}

// ProbeIsolated runs Probe in a network namespace of its own, made for it
// on a thread that is thrown away afterwards: the caller's namespace is
// never touched.
func ProbeIsolated() error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with the goroutine, and with it
		// the namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("network namespace for the nftables probe: %w", err)
			return
		}
		errc <- Probe()
	}()
	return <-errc
}
