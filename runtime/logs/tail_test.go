package logs

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// writeLongLine writes the CRI records of dir/c1.log directly: a line
// "before", then about size bytes of one stdout line in P records of
// MaxLine bytes (record k filled with the letter 'a'+k%26), with a stderr
// line "in between" halfway, then, when ended, the stdout line's F record
// "end".
func writeLongLine(t *testing.T, dir string, size int, ended bool) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "c1.log"))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	ts := func(i int) string { return t0.Add(time0(i)).Format(timeFormat) }
	fmt.Fprintf(w, "%s stdout F before\n", ts(0))
	records := size / MaxLine
	chunk := make([]byte, MaxLine)
	for k := range records {
		if k == records/2 {
			fmt.Fprintf(w, "%s stderr F in between\n", ts(1+k))
		}
		for i := range chunk {
			chunk[i] = byte('a' + k%26)
		}
		fmt.Fprintf(w, "%s stdout P %s\n", ts(1+k), chunk)
	}
	if ended {
		fmt.Fprintf(w, "%s stdout F end\n", ts(records+1))
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// time0 is the time offset of record i.
func time0(i int) time.Duration { return time.Duration(i) * time.Microsecond }

// wantLongHead checks e is the long stdout line: its first MaxJoined bytes
// and the cut mark.
func wantLongHead(t *testing.T, e Entry, partial bool) {
	t.Helper()
	if e.Stream != "stdout" || e.Partial != partial || !e.Time.Equal(t0.Add(time0(1))) {
		t.Errorf("long line: stream %q partial %v time %v, want stdout %v %v", e.Stream, e.Partial, e.Time, partial, t0.Add(time0(1)))
	}
	if len(e.Text) != MaxJoined+len(CutMark) || !strings.HasSuffix(e.Text, CutMark) {
		t.Fatalf("long line: %d bytes ending %q, want %d bytes ending with the cut mark", len(e.Text), e.Text[max(0, len(e.Text)-40):], MaxJoined+len(CutMark))
	}
	for k := range MaxJoined / MaxLine {
		if got, want := e.Text[k*MaxLine:(k+1)*MaxLine], strings.Repeat(string(rune('a'+k%26)), MaxLine); got != want {
			t.Fatalf("long line: record %d of its head is %q…, want %q…", k, got[:8], want[:8])
		}
	}
}

// TestTail_LongLineBoundedMemory: `logs --tail 1` of a container that wrote
// 200 MB without a newline (issue 9) reads the line's head and its size,
// not the whole line: allocations stay far below the input.
func TestTail_LongLineBoundedMemory(t *testing.T) {
	const size = 200 << 20
	for _, ended := range []bool{true, false} {
		name := map[bool]string{true: "ended", false: "still being written"}[ended]
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeLongLine(t, dir, size, ended)
			var got []Entry
			alloc := allocated(t, func() {
				var err error
				if got, err = Tail(dir, "c1", 1); err != nil {
					t.Fatal(err)
				}
			})
			if len(got) != 1 {
				t.Fatalf("Tail(1) gave %d lines", len(got))
			}
			wantLongHead(t, got[0], !ended)
			if alloc > 16<<20 {
				t.Errorf("Tail(1) of a %d MiB line allocated %d MiB, want under 16 MiB", size>>20, alloc>>20)
			}
			t.Logf("Tail(1) of a %d MiB line allocated %d KiB", size>>20, alloc>>10)

			got, err := Tail(dir, "c1", 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 || got[0].Text != "in between" || got[0].Stream != "stderr" {
				t.Fatalf("Tail(2) = %d lines, first %+v, want the stderr line then the long one", len(got), got[0])
			}
			wantLongHead(t, got[1], !ended)
		})
	}
}

// allocated returns the bytes fn allocates.
func allocated(t *testing.T, fn func()) uint64 {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestTail_FromEndMatchesForwardRead: lines of every length (long ones
// split into P records, streams interleaved) written across rotated files:
// Tail(n) from the end equals the last n lines of a read of everything.
func TestTail_FromEndMatchesForwardRead(t *testing.T) {
	dir := t.TempDir()
	w := open(t, dir, Options{MaxBytes: 100 << 10, MaxFiles: 4})
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		stream := []string{"stdout", "stderr"}[rng.IntN(2)]
		n := rng.IntN(200)
		if rng.IntN(10) == 0 {
			n = MaxLine + rng.IntN(3*MaxLine) // spans records, and files
		}
		line := fmt.Sprintf("%s %03d ", stream, i) + strings.Repeat(string(rune('a'+i%26)), n)
		write(t, w.Stream(stream), line+"\n")
	}
	// A line still being written at the end.
	write(t, w.Stream("stdout"), strings.Repeat("z", 2*MaxLine+10))
	if _, err := os.Stat(filepath.Join(dir, "c1.log.3")); err != nil {
		t.Fatalf("expected 3 rotated files: %v", err)
	}
	all, err := Tail(dir, "c1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if last := all[len(all)-1]; !last.Partial || last.Text != strings.Repeat("z", 2*MaxLine) {
		t.Fatalf("forward read: last line partial=%v with %d bytes, want the unfinished line's 2 records", last.Partial, len(last.Text))
	}
	for _, n := range []int{1, 2, 3, 5, 10, 50, 100, len(all) - 1, len(all), len(all) + 5} {
		got, err := Tail(dir, "c1", n)
		if err != nil {
			t.Fatal(err)
		}
		want := all[max(0, len(all)-n):]
		if len(got) != len(want) {
			t.Fatalf("Tail(%d) gave %d lines, want %d", n, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("Tail(%d)[%d] = %s %q… (%d bytes), want %s %q… (%d bytes)", n, i,
					got[i].Stream, got[i].Text[:min(20, len(got[i].Text))], len(got[i].Text),
					want[i].Stream, want[i].Text[:min(20, len(want[i].Text))], len(want[i].Text))
			}
		}
	}
}

// TestFollow_ContinuesLineBeingWritten: Follow from the last lines picks
// up a line whose P records were written before it started.
func TestFollow_ContinuesLineBeingWritten(t *testing.T) {
	dir := t.TempDir()
	w := open(t, dir, Options{})
	write(t, w.Stream("stdout"), "before\n")
	head := strings.Repeat("h", 2*MaxLine+100) // two P records written, 100 bytes buffered
	write(t, w.Stream("stdout"), head)
	ch, stop := follower(t, dir, 1)
	expect(t, ch, "before")
	write(t, w.Stream("stdout"), "tail\n")
	expect(t, ch, head+"tail")
	if err := stop(); err == nil {
		t.Error("Follow returned nil after cancel")
	}
}

// TestTail_CutsJoinedLineAtMax: the forward read (Tail of all lines, and
// Follow) cuts a long line too.
func TestTail_CutsJoinedLineAtMax(t *testing.T) {
	dir := t.TempDir()
	w := open(t, dir, Options{MaxBytes: 100 << 20})
	long := strings.Repeat("x", MaxJoined+3*MaxLine)
	write(t, w.Stream("stdout"), long+"\nshort\n")
	all, err := Tail(dir, "c1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].Text != long[:MaxJoined]+CutMark || all[1].Text != "short" {
		t.Fatalf("Tail(0): %d lines, first %d bytes", len(all), len(all[0].Text))
	}
	last2, err := Tail(dir, "c1", 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(last2) != 2 || last2[0] != all[0] || last2[1] != all[1] {
		t.Fatalf("Tail(2) differs from Tail(0)")
	}
}

// TestTail_ReadsFromTheEnd: the last lines of a large log are found by
// reading its end, not everything before (measured in bytes read through
// system calls, /proc/self/io rchar).
func TestTail_ReadsFromTheEnd(t *testing.T) {
	if _, err := rchar(); err != nil {
		t.Skipf("no /proc/self/io: %v", err)
	}
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "c1.log"))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	const lines = 500_000 // about 50 MB
	for i := range lines {
		fmt.Fprintf(w, "%s stdout F line %07d %s\n", t0.Add(time0(i)).Format(timeFormat), i, strings.Repeat("-", 40))
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	before, _ := rchar()
	got, err := Tail(dir, "c1", 10)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := rchar()
	if len(got) != 10 || got[0].Text != fmt.Sprintf("line %07d %s", lines-10, strings.Repeat("-", 40)) {
		t.Fatalf("Tail(10) = %d lines, first %+v", len(got), got[0])
	}
	if read := after - before; read > 1<<20 {
		t.Errorf("Tail(10) of a %d MiB log read %d KiB, want under 1 MiB", lines*100>>20, read>>10)
	}
}

// rchar is the bytes this process read through system calls.
func rchar() (int64, error) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "rchar: "); ok {
			var n int64
			_, err := fmt.Sscan(v, &n)
			return n, err
		}
	}
	return 0, fmt.Errorf("no rchar in /proc/self/io")
}
