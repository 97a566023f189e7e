// Package policy is the device-local policy: a root-owned file on the
// device, outside anything the fleet can write, that bounds what any app
// may ask for, whoever signed it (SECURITY.md §1.3 "Local policy as the
// last line of defence", §5.6). An app beyond it is refused at admission
// with the rules it breaks.
//
// Check is pure: (policy, app) in, nil or every violation out. Load is the
// thin shell that reads the file; Parse reads its content.
//
// # The file
//
// /etc/tender/policy.yaml (DefaultPath), YAML, strict: unknown fields
// (keys are spelt exactly: "hostnetwork" is unknown) and duplicate keys are
// refused, with the field named. Every field is optional; a field left out
// keeps the default below, a field given replaces it ("devices: []" allows
// no device; "registries: []" is refused as ambiguous: leave it out to
// allow any registry). configs/policy.yaml is a commented sample.
//
//	devices:            # path.Match patterns of host device nodes apps may pass through
//	  - /dev/ttyUSB*    #   '*' does not cross '/': /dev/* is not /dev/bus/usb/001/002
//	  - /dev/gpiochip*
//	hostNetwork: true   # may an app use "network: host"
//	capabilities: []    # capabilities an app may add to the default set (NET_ADMIN, CAP_SYS_TIME)
//	privilegedPorts: false  # may "ports:" publish host ports below 1024
//	registries:         # registry hosts images may come from; leave out for any
//	  - registry.example.com
//	  - docker.io       # also what "busybox" and "acme/thermo" resolve to
//
// The file and its directory (the directory of the path as given; the
// file itself after symlinks) must be owned by root and not writable by
// group or others; otherwise Load refuses it (errdefs.ErrPermissionDenied)
// naming the file, its owner or mode, and the fix: a policy anyone can
// edit is no policy. A missing file means the default policy. Bad content,
// a file that is not a regular file or is larger than 64 KiB, is refused
// with errdefs.ErrInvalidArgument and every problem named, and no policy
// is returned with the error.
//
// # The default (no file)
//
//   - devices: serial ports (/dev/ttyUSB*, /dev/ttyACM*, /dev/ttyS*,
//     /dev/ttyAMA*), GPIO chips (/dev/gpiochip*), I2C (/dev/i2c-*) and SPI
//     (/dev/spidev*): what gateway apps talk to. No disks (/dev/sd*,
//     /dev/mmcblk*, /dev/nvme*, /dev/vd*), no /dev/kmsg, no /dev/net/tun.
//   - hostNetwork: true, because the shipped sample app
//     (configs/apps/thermo.yaml, DESIGN.md "App spec") uses it; a device
//     that must not share its network with apps says hostNetwork: false.
//   - capabilities: none beyond the default set.
//   - privilegedPorts: false.
//   - registries: any.
//
// /dev/mem, /dev/kmem and /dev/port (NeverDevices) give raw access to the
// host's memory and I/O ports: an app holding one owns the host, so no
// policy allows them. A file naming one is refused, and a pattern that
// matches one (/dev/*) still does not let it through.
//
// # What each rule covers
//
//   - devices: each containers[].devices entry, cleaned, must match a
//     pattern. A device path that resolves through symlinks to another
//     node is the runtime's concern when it creates the node.
//   - hostNetwork: containers[].network: host.
//   - privilegedPorts: the host port of each containers[].ports entry
//     ("[ip:]host:container[/proto]"; a range counts by its lowest port, a
//     port given alone counts as a host port, an entry that cannot be read
//     is refused). With host network an app binds what its capabilities
//     allow (the default set has NET_BIND_SERVICE); to bound that, forbid
//     hostNetwork.
//   - registries: the registry host of each containers[].image, resolved
//     as the image store does (a name without a registry is docker.io's).
//     Images loaded from archives carry names too and are checked the same.
//   - capabilities: the app spec has no field to add capabilities yet;
//     CapabilityAllowed is the rule for when it has one.
//
// The app spec has no host binds (volumes are named and live under the
// agent's state directory), no privileged mode and no host PID or IPC
// namespaces; a field that adds any of them must come with a rule here
// whose default refuses it.
//
// # Errors
//
// Check returns the violations joined (errors.Join); each is a *Violation
// naming the app, the container, the spec's field, the rule and what was
// asked, and matches errdefs.ErrPermissionDenied. Violations(err) lists
// them, so the agent can report each rule to the fleet. The message reads:
//
//	app thermo, container reader: device /dev/sda is not allowed by the device policy (/etc/tender/policy.yaml allows /dev/ttyUSB*, /dev/ttyACM*)
package policy
