package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/containerd/errdefs"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The rtnetlink requests the bridge network makes (links, addresses,
// routes), on mdlayher/netlink, which the nftables client links anyway:
// a general rtnetlink library cost the agent 0.5 MB for these few
// messages (issue 15).

// link is what the package reads of a network interface.
type link struct {
	Index int
	Name  string
	Kind  string // IFLA_INFO_KIND: "bridge", "veth", "" for a plain device
	MTU   int
}

// route is what the package reads of a route: its destination and device.
type route struct {
	Dst       netip.Prefix // invalid for a default route
	LinkIndex int
}

// vethInfoPeer is VETH_INFO_PEER of linux/veth.h: the peer's ifinfomsg
// and attributes in a veth's IFLA_INFO_DATA.
const vethInfoPeer = 1

// errLinkNotFound is a link lookup that found none (the kernel's ENODEV).
var errLinkNotFound = fmt.Errorf("no such network interface: %w", errdefs.ErrNotFound)

// rtnl is an rtnetlink socket in one network namespace.
type rtnl struct{ c *netlink.Conn }

// dialRTNL opens an rtnetlink socket in the network namespace nsFD
// refers to, or in the caller's with nsFD 0.
func dialRTNL(nsFD int) (*rtnl, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: nsFD})
	if err != nil {
		return nil, fmt.Errorf("rtnetlink socket: %w", err)
	}
	return &rtnl{c: c}, nil
}

func (r *rtnl) Close() error { return r.c.Close() }

// withRTNL runs fn on a socket in the caller's namespace.
func withRTNL(fn func(r *rtnl) error) error {
	r, err := dialRTNL(0)
	if err != nil {
		return err
	}
	defer r.Close()
	return fn(r)
}

func (r *rtnl) do(typ netlink.HeaderType, flags netlink.HeaderFlags, body []byte) ([]netlink.Message, error) {
	return r.c.Execute(netlink.Message{Header: netlink.Header{Type: typ, Flags: netlink.Request | flags}, Data: body})
}

// ifinfomsg is struct ifinfomsg (16 bytes) followed by attrs.
func ifinfomsg(index int, flags, change uint32, attrs []byte) []byte {
	b := make([]byte, unix.SizeofIfInfomsg, unix.SizeofIfInfomsg+len(attrs))
	b[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(b[4:], uint32(int32(index)))
	binary.NativeEndian.PutUint32(b[8:], flags)
	binary.NativeEndian.PutUint32(b[12:], change)
	return append(b, attrs...)
}

func encode(fn func(ae *netlink.AttributeEncoder)) []byte {
	ae := netlink.NewAttributeEncoder()
	fn(ae)
	b, err := ae.Encode()
	if err != nil {
		// Only a nested encoder's error can fail Encode; ours return none.
		panic(err)
	}
	return b
}

func parseLink(m netlink.Message) (link, error) {
	if len(m.Data) < unix.SizeofIfInfomsg {
		return link{}, fmt.Errorf("short RTM_NEWLINK message (%d bytes)", len(m.Data))
	}
	l := link{Index: int(int32(binary.NativeEndian.Uint32(m.Data[4:])))}
	ad, err := netlink.NewAttributeDecoder(m.Data[unix.SizeofIfInfomsg:])
	if err != nil {
		return link{}, err
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.IFLA_IFNAME:
			l.Name = ad.String()
		case unix.IFLA_MTU:
			l.MTU = int(ad.Uint32())
		case unix.IFLA_LINKINFO:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					if nad.Type() == unix.IFLA_INFO_KIND {
						l.Kind = nad.String()
					}
				}
				return nil
			})
		}
	}
	return l, ad.Err()
}

// links lists the namespace's interfaces.
func (r *rtnl) links() ([]link, error) {
	msgs, err := r.do(unix.RTM_GETLINK, netlink.Dump, ifinfomsg(0, 0, 0, nil))
	if err != nil {
		return nil, err
	}
	out := make([]link, 0, len(msgs))
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWLINK {
			continue
		}
		l, err := parseLink(m)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// linkBy looks an interface up by index (when not 0) or by name.
func (r *rtnl) linkBy(index int, name string) (link, error) {
	var attrs []byte
	if index == 0 {
		attrs = encode(func(ae *netlink.AttributeEncoder) { ae.String(unix.IFLA_IFNAME, name) })
	}
	msgs, err := r.do(unix.RTM_GETLINK, 0, ifinfomsg(index, 0, 0, attrs))
	if errors.Is(err, unix.ENODEV) {
		return link{}, errLinkNotFound
	}
	if err != nil {
		return link{}, err
	}
	for _, m := range msgs {
		if m.Header.Type == unix.RTM_NEWLINK {
			return parseLink(m)
		}
	}
	return link{}, errLinkNotFound
}

func (r *rtnl) linkByName(name string) (link, error) {
	l, err := r.linkBy(0, name)
	if err != nil {
		return link{}, fmt.Errorf("interface %s: %w", name, err)
	}
	return l, nil
}

func (r *rtnl) linkByIndex(index int) (link, error) { return r.linkBy(index, "") }

func (r *rtnl) deleteLink(index int) error {
	_, err := r.do(unix.RTM_DELLINK, netlink.Acknowledge, ifinfomsg(index, 0, 0, nil))
	return err
}

// addBridge makes a bridge device named name.
func (r *rtnl) addBridge(name string) error {
	attrs := encode(func(ae *netlink.AttributeEncoder) {
		ae.String(unix.IFLA_IFNAME, name)
		ae.Nested(unix.IFLA_LINKINFO, func(nae *netlink.AttributeEncoder) error {
			nae.String(unix.IFLA_INFO_KIND, "bridge")
			return nil
		})
	})
	_, err := r.do(unix.RTM_NEWLINK, netlink.Acknowledge|netlink.Create|netlink.Excl, ifinfomsg(0, 0, 0, attrs))
	return err
}

// addVeth makes a veth pair: name here, its peer named peer in the
// network namespace peerNS refers to, both with mtu.
func (r *rtnl) addVeth(name string, mtu int, peer string, peerNS int) error {
	attrs := encode(func(ae *netlink.AttributeEncoder) {
		ae.String(unix.IFLA_IFNAME, name)
		ae.Uint32(unix.IFLA_MTU, uint32(mtu))
		ae.Nested(unix.IFLA_LINKINFO, func(li *netlink.AttributeEncoder) error {
			li.String(unix.IFLA_INFO_KIND, "veth")
			li.Nested(unix.IFLA_INFO_DATA, func(data *netlink.AttributeEncoder) error {
				peerAttrs := encode(func(pa *netlink.AttributeEncoder) {
					pa.String(unix.IFLA_IFNAME, peer)
					pa.Uint32(unix.IFLA_MTU, uint32(mtu))
					pa.Uint32(unix.IFLA_NET_NS_FD, uint32(peerNS))
				})
				data.Bytes(vethInfoPeer, ifinfomsg(0, 0, 0, peerAttrs))
				return nil
			})
			return nil
		})
	})
	_, err := r.do(unix.RTM_NEWLINK, netlink.Acknowledge|netlink.Create|netlink.Excl, ifinfomsg(0, 0, 0, attrs))
	return err
}

func (r *rtnl) setUp(index int) error {
	_, err := r.do(unix.RTM_NEWLINK, netlink.Acknowledge, ifinfomsg(index, unix.IFF_UP, unix.IFF_UP, nil))
	return err
}

func (r *rtnl) setMaster(index, master int) error {
	attrs := encode(func(ae *netlink.AttributeEncoder) { ae.Uint32(unix.IFLA_MASTER, uint32(master)) })
	_, err := r.do(unix.RTM_SETLINK, netlink.Acknowledge, ifinfomsg(index, 0, 0, attrs))
	return err
}

// addAddr gives the interface an IPv4 address with its prefix and
// broadcast address; replace keeps an existing one instead of failing.
func (r *rtnl) addAddr(index int, p netip.Prefix, replace bool) error {
	if !p.Addr().Is4() {
		return fmt.Errorf("address %s: want IPv4: %w", p, errdefs.ErrInvalidArgument)
	}
	ip := p.Addr().As4()
	body := make([]byte, unix.SizeofIfAddrmsg)
	body[0] = unix.AF_INET
	body[1] = uint8(p.Bits())
	binary.NativeEndian.PutUint32(body[4:], uint32(index))
	body = append(body, encode(func(ae *netlink.AttributeEncoder) {
		ae.Bytes(unix.IFA_LOCAL, ip[:])
		ae.Bytes(unix.IFA_ADDRESS, ip[:])
		if p.Bits() < 31 {
			bc := ip
			host := ^uint32(0) >> p.Bits()
			binary.BigEndian.PutUint32(bc[:], binary.BigEndian.Uint32(ip[:])|host)
			ae.Bytes(unix.IFA_BROADCAST, bc[:])
		}
	})...)
	flags := netlink.Acknowledge | netlink.Create | netlink.Excl
	if replace {
		flags = netlink.Acknowledge | netlink.Create | netlink.Replace
	}
	_, err := r.do(unix.RTM_NEWADDR, flags, body)
	return err
}

// rtmsg is struct rtmsg (12 bytes) followed by attrs.
func rtmsg(family, dstLen, table, protocol, scope, typ uint8, attrs []byte) []byte {
	b := make([]byte, unix.SizeofRtMsg, unix.SizeofRtMsg+len(attrs))
	b[0], b[1], b[4], b[5], b[6], b[7] = family, dstLen, table, protocol, scope, typ
	return append(b, attrs...)
}

// addDefaultRoute adds a default IPv4 route through gw on the interface.
func (r *rtnl) addDefaultRoute(index int, gw netip.Addr) error {
	g := gw.As4()
	attrs := encode(func(ae *netlink.AttributeEncoder) {
		ae.Bytes(unix.RTA_GATEWAY, g[:])
		ae.Uint32(unix.RTA_OIF, uint32(index))
	})
	body := rtmsg(unix.AF_INET, 0, unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST, attrs)
	_, err := r.do(unix.RTM_NEWROUTE, netlink.Acknowledge|netlink.Create|netlink.Excl, body)
	return err
}

// routes4 lists the IPv4 routes of the main table, as `ip route` shows
// them (cloned routes left out).
func (r *rtnl) routes4() ([]route, error) {
	msgs, err := r.do(unix.RTM_GETROUTE, netlink.Dump, rtmsg(unix.AF_INET, 0, 0, 0, 0, 0, nil))
	if err != nil {
		return nil, err
	}
	var out []route
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWROUTE || len(m.Data) < unix.SizeofRtMsg {
			continue
		}
		d := m.Data
		if d[0] != unix.AF_INET || binary.NativeEndian.Uint32(d[8:])&unix.RTM_F_CLONED != 0 {
			continue
		}
		table, dstLen := uint32(d[4]), int(d[1])
		var rt route
		ad, err := netlink.NewAttributeDecoder(d[unix.SizeofRtMsg:])
		if err != nil {
			return nil, err
		}
		for ad.Next() {
			switch ad.Type() {
			case unix.RTA_TABLE:
				table = ad.Uint32()
			case unix.RTA_OIF:
				rt.LinkIndex = int(ad.Uint32())
			case unix.RTA_DST:
				if a, ok := netip.AddrFromSlice(ad.Bytes()); ok {
					rt.Dst = netip.PrefixFrom(a.Unmap(), dstLen)
				}
			}
		}
		if err := ad.Err(); err != nil {
			return nil, err
		}
		if table == unix.RT_TABLE_MAIN {
			out = append(out, rt)
		}
	}
	return out, nil
}
