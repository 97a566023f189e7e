package nsenter

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"syscall"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Dial connects to addr ("127.0.0.1:8080", "[::1]:80", "localhost:8080")
// from inside the network namespace of pid, which must still be the
// process that started at start (StartTime). network is "tcp", "tcp4",
// "tcp6", "udp", "udp4" or "udp6". Host names other than localhost are not
// resolved: the container's resolver is not ours. The connection, once
// made, works from any thread.
//
// The socket is created on a locked OS thread that has joined the
// namespace; the thread returns to its own namespace before it is unlocked
// (if it cannot, it is never unlocked and dies with its goroutine). A
// net.Dialer given one literal address creates the socket on the calling
// goroutine (no Happy Eyeballs racers); a Control check makes sure of it.
func Dial(ctx context.Context, pid int, start uint64, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
	default:
		return nil, fmt.Errorf("dial %s %s: network: %w", network, addr, errdefs.ErrInvalidArgument)
	}
	ap, err := literalAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", network, addr, err)
	}
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		c, back, err := dialIn(ctx, pid, start, network, ap.String())
		if back {
			runtime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	if r.err != nil {
		return nil, fmt.Errorf("dial %s %s in pid %d: %w", network, addr, pid, r.err)
	}
	return r.c, nil
}

// literalAddr parses host:port with a literal IP or localhost.
func literalAddr(addr string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q: %w", port, errdefs.ErrInvalidArgument)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("host %q: not an IP address: %w", host, errdefs.ErrInvalidArgument)
	}
	return netip.AddrPortFrom(ip, uint16(p)), nil
}

// dialIn runs on a locked thread. back reports whether the thread is in its
// own network namespace again (and may be unlocked).
func dialIn(ctx context.Context, pid int, start uint64, network, addr string) (c net.Conn, back bool, err error) {
	own, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, true, fmt.Errorf("own network namespace: %w", err)
	}
	defer unix.Close(own)
	target, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ENOENT || err == unix.ESRCH {
			return nil, true, fmt.Errorf("pid %d: %w", pid, ErrNotRunning)
		}
		return nil, true, fmt.Errorf("network namespace: %w", err)
	}
	defer unix.Close(target)
	if err := checkStart(pid, start); err != nil {
		return nil, true, err
	}
	var want unix.Stat_t
	if err := unix.Fstat(target, &want); err != nil {
		return nil, true, fmt.Errorf("network namespace: %w", err)
	}
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("join network namespace: %w", err)
	}
	defer func() {
		// On failure the connection, if any, is still fine; the thread
		// is not, and dies with its goroutine.
		back = unix.Setns(own, unix.CLONE_NEWNET) == nil
	}()
	d := net.Dialer{
		ControlContext: func(context.Context, string, string, syscall.RawConn) error {
			var st unix.Stat_t
			if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
				return fmt.Errorf("check network namespace: %w", err)
			}
			if st.Dev != want.Dev || st.Ino != want.Ino {
				return fmt.Errorf("socket created outside the target network namespace")
			}
			return nil
		},
	}
	c, err = d.DialContext(ctx, network, addr)
	return c, true, err
}
