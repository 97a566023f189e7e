// Package network gives bridged containers their own network: a Linux
// bridge (tender0 by default, 10.88.0.0/16), a veth pair per container with
// an address leased from a file-backed allocator, a default route through
// the bridge, outbound NAT, published ports, name resolution between the
// containers of one group (an /etc/hosts per container, rewritten when a
// peer comes or goes) and isolation between groups.
//
// Packet rules live in nftables tables of Tender's own (ip tender and
// bridge tender); nothing else of the host's rule set is read, changed or
// flushed. The tables are rebuilt whole, in one transaction, from the
// leases on disk each time an endpoint comes or goes: a crash can leave no
// half-written rule, and a rebuild (Repair) removes whatever a crash left.
//
// The "host" is whatever network namespace the calling process is in: the
// agent normally runs in the machine's own, tests run it inside one they
// made.
//
// On disk, under ROOT/network (0700):
//
//	config.json        the bridge's name and subnet (Config)
//	lock               flock: one writer of leases and rules at a time
//	leases/ID.json     one per attached container (Endpoint): the lease of its address
package network

import "github.com/tender-edge/tender/internal/portspec"

// Port is a published port (internal/portspec, shared with the app spec).
type Port = portspec.Port

// ParsePort, ParsePorts and FormatPorts are internal/portspec's.
var (
	ParsePort   = portspec.ParsePort
	ParsePorts  = portspec.ParsePorts
	FormatPorts = portspec.FormatPorts
)
