package placement

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/internal/quantity"
)

// Code says why a device was or was not chosen for an app.
type Code string

// Reason codes: the first two are chosen, the others not.
const (
	CodeKept      Code = "kept"       // already placed there and still valid
	CodePlaced    Code = "placed"     // newly placed there
	CodeLabel     Code = "label"      // a selector label is missing or differs
	CodeArch      Code = "arch"       // the device's arch is not in placement.arch
	CodeOffline   Code = "offline"    // N-device app: offline (past the grace, or not online for a new placement)
	CodeMemory    Code = "memory"     // not enough memory left
	CodeCPU       Code = "cpu"        // not enough CPU left
	CodeNotNeeded Code = "not-needed" // N-device app: N devices already placed
)

var codes = [...]Code{
	codeKept: CodeKept, codePlaced: CodePlaced, codeLabel: CodeLabel, codeArch: CodeArch,
	codeOffline: CodeOffline, codeMemory: CodeMemory, codeCPU: CodeCPU, codeNotNeeded: CodeNotNeeded,
}

// Reason is why one device was or was not chosen for one app, in words an
// operator reads: "arch armv7 not in [arm64 amd64]", "memory: needs 64Mi,
// 40Mi free", "label site=paris, want berlin", "offline for 12m (grace
// 5m)", "not needed: 3 of 3 devices placed".
type Reason struct {
	Device  string `json:"device"`
	Chosen  bool   `json:"chosen"`
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

// Explain says, device by device (sorted by ID), why app was or was not
// placed there. It fails with ErrNotFound for an app not in the request.
func (d *Decision) Explain(app string) ([]Reason, error) {
	a, ok := d.apps[app]
	if !ok {
		return nil, fmt.Errorf("explain placement: no app %q in the request: %w", app, errdefs.ErrNotFound)
	}
	rs := make([]Reason, len(d.devices))
	for i := range d.devices {
		rs[i] = d.reason(a, i)
	}
	return rs, nil
}

// ExplainDevice says why app was or was not placed on device. It fails
// with ErrNotFound for an app or a device not in the request.
func (d *Decision) ExplainDevice(app, device string) (Reason, error) {
	a, ok := d.apps[app]
	if !ok {
		return Reason{}, fmt.Errorf("explain placement: no app %q in the request: %w", app, errdefs.ErrNotFound)
	}
	i, ok := d.byID[device]
	if !ok {
		return Reason{}, fmt.Errorf("explain placement of %s: no device %q in the request: %w", app, device, errdefs.ErrNotFound)
	}
	return d.reason(a, i), nil
}

func (d *Decision) reason(a *appState, i int) Reason {
	e, dev := a.entries[i], d.devices[i]
	r := Reason{Device: dev.ID, Chosen: e.code.chosen(), Code: codes[e.code]}
	switch e.code {
	case codeKept, codePlaced:
		msg := "chosen: new placement"
		if e.code == codeKept {
			msg = "chosen: already placed here"
		}
		if a.spread != "" {
			msg += " (" + a.spread + "=" + labelValue(dev, a.spread) + ")"
		}
		if !dev.Online {
			if a.all {
				msg += "; " + d.offline(dev) + ", gets the app when it comes back"
			} else {
				msg += "; " + d.offline(dev) + " (grace " + formatDuration(d.grace) + ")"
			}
		}
		r.Message = msg
	case codeLabel:
		key := a.selKeys[e.a]
		if v, ok := dev.Labels[key]; ok {
			r.Message = fmt.Sprintf("label %s=%s, want %s", key, v, a.sel[key])
		} else {
			r.Message = fmt.Sprintf("label %s missing, want %s", key, a.sel[key])
		}
	case codeArch:
		arch := dev.Arch
		if arch == "" {
			arch = "unknown (not reported)"
		}
		r.Message = "arch " + arch + " not in " + a.archText
	case codeOffline:
		if lost(dev, d.now, d.grace) {
			r.Message = d.offline(dev) + " (grace " + formatDuration(d.grace) + ")"
		} else {
			r.Message = d.offline(dev) + " (grace " + formatDuration(d.grace) + "): new placements go to online devices"
		}
	case codeMemory:
		free := d.freeMem[i]
		if dev.MemoryBytes == 0 {
			free = -1
		}
		r.Message = "memory: needs " + quantity.FormatBytes(a.mem) + ", " + freeBytes(free)
	case codeCPU:
		free := d.freeCPU[i]
		if dev.MilliCPU == 0 {
			free = -1
		}
		r.Message = "cpu: needs " + quantity.FormatMilliCPU(a.cpu) + ", " + freeCPU(free)
	case codeNotNeeded:
		r.Message = fmt.Sprintf("not needed: %d of %d devices placed", e.a, e.b)
	default:
		r.Message = "undecided" // not reached: Place decides every pair
	}
	return r
}

func labelValue(dev *Device, key string) string {
	if v, ok := dev.Labels[key]; ok {
		return v
	}
	return "(none)"
}

// offline says how long dev has been offline: "offline for 12m".
func (d *Decision) offline(dev *Device) string {
	if dev.LastSeen.IsZero() {
		return "offline, never seen"
	}
	return "offline for " + formatDuration(d.now.Sub(dev.LastSeen))
}

func freeBytes(n int64) string {
	if n < 0 {
		return "the device has not reported its memory"
	}
	s := quantity.FormatBytes(n)
	if n >= 1024 && !strings.HasSuffix(s, "i") {
		s = quantity.DisplayBytes(n) // an odd number of bytes: rounded for reading
	}
	return s + " free"
}

func freeCPU(m int64) string {
	if m < 0 {
		return "the device has not reported its CPUs"
	}
	return quantity.FormatMilliCPU(m) + " free"
}

// formatDuration writes d in its two largest units, for people: "12m",
// "3h5m", "2d4h", "45s".
func formatDuration(d time.Duration) string {
	if d < time.Second {
		return "0s"
	}
	units := []struct {
		d    time.Duration
		unit string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}}
	var b strings.Builder
	n := 0
	for _, u := range units {
		if d >= u.d {
			b.WriteString(strconv.FormatInt(int64(d/u.d), 10) + u.unit)
			d %= u.d
			n++
		} else if n > 0 {
			n++ // a zero unit after the first still counts: "2d" not "2d5s"
		}
		if n == 2 {
			break
		}
	}
	return b.String()
}
