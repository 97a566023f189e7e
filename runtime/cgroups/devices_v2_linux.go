package cgroups

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// setDeviceFilter makes devs the device rules of the v2 group at dir: it
// compiles them with containerd's cgroup2.DeviceFilter, attaches the new
// program, then detaches every other device program of the group.
//
// containerd's own Manager.Update only ever attaches (BPF_F_ALLOW_MULTI):
// each update would add a program, only new denials would take effect (a
// device is allowed only if every attached program allows it) and
// programs would pile up (runc#2366). Attaching before detaching means
// there is never a moment without a filter; in between, both apply, which
// is stricter than either.
func setDeviceFilter(dir string, devs []specs.LinuxDeviceCgroup) error {
	insts, license, err := cgroup2.DeviceFilter(devs)
	if err != nil {
		return fmt.Errorf("compile device filter: %w", err)
	}
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.CGroupDevice, Instructions: insts, License: license})
	if err != nil {
		return fmt.Errorf("load device filter: %w", err)
	}
	defer prog.Close() // the attachment holds its own reference
	info, err := prog.Info()
	if err != nil {
		return fmt.Errorf("device filter info: %w", err)
	}
	id, ok := info.ID()
	if !ok {
		return errors.New("device filter: the kernel gives no program id")
	}
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{
		Target: fd, Program: prog, Attach: ebpf.AttachCGroupDevice, Flags: unix.BPF_F_ALLOW_MULTI,
	}); err != nil {
		return fmt.Errorf("attach device filter: %w", err)
	}
	old, err := deviceFilters(fd)
	if err != nil {
		return err
	}
	for _, o := range old {
		if o == id {
			continue
		}
		p, err := ebpf.NewProgramFromID(o)
		if err != nil {
			return fmt.Errorf("open old device filter %d: %w", o, err)
		}
		err = link.RawDetachProgram(link.RawDetachProgramOptions{Target: fd, Program: p, Attach: ebpf.AttachCGroupDevice})
		p.Close()
		if err != nil {
			return fmt.Errorf("detach old device filter %d: %w", o, err)
		}
	}
	return nil
}

// deviceFilters lists the ids of the device programs attached to the group
// open at fd (not those inherited from its ancestors).
func deviceFilters(fd int) ([]ebpf.ProgramID, error) {
	res, err := link.QueryPrograms(link.QueryOptions{Target: fd, Attach: ebpf.AttachCGroupDevice})
	if err != nil {
		return nil, fmt.Errorf("list device filters: %w", err)
	}
	ids := make([]ebpf.ProgramID, len(res.Programs))
	for i, p := range res.Programs {
		ids[i] = p.ID
	}
	return ids, nil
}

// ProbeDeviceFilter loads (and releases) a deny-all device program, as
// Create does on v2: it fails where the kernel cannot enforce v2 device
// rules (no BPF, or no BPF_PROG_TYPE_CGROUP_DEVICE). It attaches nothing.
func ProbeDeviceFilter() error {
	wild := int64(-1)
	insts, license, err := cgroup2.DeviceFilter([]specs.LinuxDeviceCgroup{{Allow: false, Type: "a", Major: &wild, Minor: &wild, Access: "rwm"}})
	if err != nil {
		return fmt.Errorf("compile device filter: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.CGroupDevice, Instructions: insts, License: license})
	if err != nil {
		return fmt.Errorf("load device filter: %w", err)
	}
	return prog.Close()
}
