// Package trace records where a container start goes: named phases with
// their start and end on CLOCK_MONOTONIC, which every process of a start
// (the CLI, the shim, the container's init) reads alike, so phases from
// several processes line up. A nil *Recorder records nothing: with tracing
// off, the start path pays one nil check per phase.
package trace

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// EnvOn turns tracing on (TENDER_TRACE=1); EnvT0 carries the monotonic
// time at which a parent started a process, so that the child's "process
// start" phase is exact rather than in clock ticks.
const (
	EnvOn = "TENDER_TRACE"
	EnvT0 = "TENDER_TRACE_T0"
)

// linePrefix starts a phase in its text form.
const linePrefix = "trace "

// Phase is one step of a start, in one process.
type Phase struct {
	Proc, Name string
	Start, End int64 // CLOCK_MONOTONIC, ns
}

// Duration is the phase's length.
func (p Phase) Duration() time.Duration { return time.Duration(p.End - p.Start) }

// Recorder records phases of one process; phases from other processes may
// be added to it (Add, Decode).
type Recorder struct {
	proc   string
	last   int64
	phases []Phase
}

// Enabled says whether TENDER_TRACE=1.
func Enabled() bool { return os.Getenv(EnvOn) == "1" }

// Now is CLOCK_MONOTONIC in ns.
func Now() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// New returns a recorder for process proc whose first phase, "process
// start", runs from the process's start to now: from TENDER_TRACE_T0 when
// the parent set it, else from the start time in /proc/self/stat (in clock
// ticks: 10 ms steps).
func New(proc string) *Recorder {
	now := Now()
	r := &Recorder{proc: proc, last: now}
	if t0, ok := processStart(); ok && t0 <= now {
		r.phases = append(r.phases, Phase{Proc: proc, Name: "process-start", Start: t0, End: now})
	}
	return r
}

// Begin returns a recorder for process proc whose first phase starts now
// (a long-running process: the daemon).
func Begin(proc string) *Recorder { return &Recorder{proc: proc, last: Now()} }

// FromEnv is New(proc) when tracing is on, else nil.
func FromEnv(proc string) *Recorder {
	if !Enabled() {
		return nil
	}
	return New(proc)
}

// processStart is when this process started, on CLOCK_MONOTONIC.
func processStart() (int64, bool) {
	if v := os.Getenv(EnvT0); v != "" {
		if t, err := strconv.ParseInt(v, 10, 64); err == nil {
			return t, true
		}
	}
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, false
	}
	// Fields after the command name, which is in parentheses and may
	// hold anything: starttime is field 22, the 20th after ")".
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 20 {
		return 0, false
	}
	ticks, err := strconv.ParseInt(f[19], 10, 64)
	if err != nil {
		return 0, false
	}
	// starttime counts from boot (CLOCK_BOOTTIME); move it onto the
	// monotonic clock, which stops during suspend.
	var bt, mt unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &bt)
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &mt)
	const hz = 100 // USER_HZ, the same on every Linux architecture
	return ticks*int64(time.Second/hz) - (bt.Nano() - mt.Nano()), true
}

// Mark ends the phase that began at the previous mark (or at New).
func (r *Recorder) Mark(name string) {
	if r == nil {
		return
	}
	now := Now()
	r.phases = append(r.phases, Phase{Proc: r.proc, Name: name, Start: r.last, End: now})
	r.last = now
}

// Since records a phase of this process from start to now, apart from
// the marks (it does not move the start of the next phase).
func (r *Recorder) Since(name string, start int64) {
	if r == nil {
		return
	}
	r.phases = append(r.phases, Phase{Proc: r.proc, Name: name, Start: start, End: Now()})
}

// Skip moves the start of the next phase to now without recording the
// time since the last mark (another process's phases cover it).
func (r *Recorder) Skip() {
	if r == nil {
		return
	}
	r.last = Now()
}

// Add records phases of another process.
func (r *Recorder) Add(ps ...Phase) {
	if r == nil {
		return
	}
	r.phases = append(r.phases, ps...)
}

// Phases are the phases recorded, in the order they were recorded.
func (r *Recorder) Phases() []Phase {
	if r == nil {
		return nil
	}
	return r.phases
}

// Encode writes the phases as lines for another process (Decode).
func (r *Recorder) Encode(w io.Writer) error {
	if r == nil {
		return nil
	}
	for _, p := range r.phases {
		if _, err := fmt.Fprintln(w, Line(p)); err != nil {
			return err
		}
	}
	return nil
}

// Line is p as Encode writes it, without the newline.
func Line(p Phase) string {
	return fmt.Sprintf("%s%s %s %d %d", linePrefix, p.Proc, p.Name, p.Start, p.End)
}

// Decode reads a line Encode wrote; ok is false for any other line.
func Decode(line string) (p Phase, ok bool) {
	rest, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), linePrefix)
	if !ok {
		return Phase{}, false
	}
	f := strings.Fields(rest)
	if len(f) != 4 {
		return Phase{}, false
	}
	s, err1 := strconv.ParseInt(f[2], 10, 64)
	e, err2 := strconv.ParseInt(f[3], 10, 64)
	if err1 != nil || err2 != nil || e < s {
		return Phase{}, false
	}
	return Phase{Proc: f[0], Name: f[1], Start: s, End: e}, true
}

// DecodeAll reads Encode's lines from rd to EOF, skipping any other.
func DecodeAll(rd io.Reader) []Phase {
	var ps []Phase
	sc := bufio.NewScanner(rd)
	for sc.Scan() {
		if p, ok := Decode(sc.Text()); ok {
			ps = append(ps, p)
		}
	}
	return ps
}

// Timeline orders phases by their start and clips each one to begin where
// the one before ended: where processes overlap (a parent placing its
// child in a cgroup while the child's Go runtime starts), the time counts
// once, for the phase that began first. The durations of a timeline sum
// to at most the time from its first start to its last end.
func Timeline(ps []Phase) []Phase {
	out := append([]Phase(nil), ps...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	var end int64
	for i := range out {
		if i > 0 && out[i].Start < end {
			out[i].Start = min(end, out[i].End)
		}
		end = max(end, out[i].End)
	}
	return out
}

// Print writes the phases' timeline, one line per phase: process, phase
// and milliseconds, then their total.
func Print(w io.Writer, ps []Phase) {
	var sum time.Duration
	for _, p := range Timeline(ps) {
		fmt.Fprintf(w, "trace: %-5s %-16s %8.3f ms\n", p.Proc, p.Name, float64(p.Duration())/1e6)
		sum += p.Duration()
	}
	fmt.Fprintf(w, "trace: total %-16s %8.3f ms\n", "", float64(sum)/1e6)
}

type ctxKey struct{}

// With returns ctx carrying r (nil: ctx unchanged).
func With(ctx context.Context, r *Recorder) context.Context {
	if r == nil {
		return ctx
	}
	return context.WithValue(ctx, ctxKey{}, r)
}

// From is the recorder ctx carries, or nil.
func From(ctx context.Context) *Recorder {
	r, _ := ctx.Value(ctxKey{}).(*Recorder)
	return r
}
