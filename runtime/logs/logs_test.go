package logs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)

// fixedClock returns a clock that advances one nanosecond per call.
func fixedClock() func() time.Time {
	var mu sync.Mutex
	n := 0
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		n++
		return t0.Add(time.Duration(n))
	}
}

func open(t *testing.T, dir string, opts Options) *Writer {
	t.Helper()
	if opts.Now == nil {
		opts.Now = fixedClock()
	}
	w, err := Open(dir, "c1", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

func write(t *testing.T, w interface{ Write([]byte) (int, error) }, s string) {
	t.Helper()
	if _, err := w.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

func TestWriter_Format(t *testing.T) {
	dir := t.TempDir()
	w := open(t, dir, Options{})
	write(t, w.Stream("stdout"), "hello ")
	write(t, w.Stream("stdout"), "world\n\n")
	write(t, w.Stream("stderr"), "oops\nno newline")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "c1.log"))
	if err != nil {
		t.Fatal(err)
	}
	want := "2026-11-27T00:00:00.000000001Z stdout F hello world\n" +
		"2026-11-27T00:00:00.000000002Z stdout F \n" +
		"2026-11-27T00:00:00.000000003Z stderr F oops\n" +
		"2026-11-27T00:00:00.000000004Z stderr F no newline\n"
	if string(b) != want {
		t.Errorf("file =\n%s\nwant\n%s", b, want)
	}
	got, err := Tail(dir, "c1", 0)
	if err != nil {
		t.Fatal(err)
	}
	texts := []string{"hello world", "", "oops", "no newline"}
	if len(got) != len(texts) {
		t.Fatalf("Tail = %+v", got)
	}
	for i, e := range got {
		if e.Text != texts[i] || e.Partial || !e.Time.Equal(t0.Add(time.Duration(i+1))) {
			t.Errorf("entry %d = %+v, want text %q", i, e, texts[i])
		}
	}
	if _, err := w.Stream("stdout").Write([]byte("late\n")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("write after Close: %v", err)
	}
}

func TestWriter_SplitsLongLines(t *testing.T) {
	dir := t.TempDir()
	w := open(t, dir, Options{})
	long := strings.Repeat("x", 2*MaxLine+100)
	// Written in small pieces, so the writer must emit partials as it goes.
	for i := 0; i < len(long); i += 1000 {
		write(t, w.Stream("stdout"), long[i:min(i+1000, len(long))])
	}
	write(t, w.Stream("stdout"), "\nshort\n")
	b, err := os.ReadFile(filepath.Join(dir, "c1.log"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	var tags []string
	for _, l := range lines {
		f := strings.SplitN(l, " ", 4)
		tags = append(tags, f[2]+strconv.Itoa(len(f[3])))
	}
	if got, want := strings.Join(tags, ","), fmt.Sprintf("P%d,P%d,F100,F5", MaxLine, MaxLine); got != want {
		t.Errorf("records %s, want %s", got, want)
	}
	got, err := Tail(dir, "c1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Text != long || got[0].Partial || got[1].Text != "short" {
		t.Errorf("Tail returned %d entries, first %d bytes", len(got), len(got[0].Text))
	}
}

func TestWriter_RotationCapsSize(t *testing.T) {
	dir := t.TempDir()
	const maxBytes = 256 << 10
	w := open(t, dir, Options{MaxBytes: maxBytes, MaxFiles: 3})
	line := strings.Repeat("y", 1000)
	var total int
	for i := 0; total < 8<<20; i++ {
		s := fmt.Sprintf("%d %s\n", i, line[:i%1000])
		write(t, w.Stream("stdout"), s)
		total += len(s)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var sum int64
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, e.Name())
		if fi.Size() > maxBytes {
			t.Errorf("%s is %d bytes, cap %d", e.Name(), fi.Size(), maxBytes)
		}
		if e.Name() != "c1.log" && fi.Size() < maxBytes-2000 {
			t.Errorf("rotated %s is only %d bytes", e.Name(), fi.Size())
		}
		sum += fi.Size()
	}
	if got := strings.Join(names, " "); got != "c1.log c1.log.1 c1.log.2" {
		t.Errorf("files %q", got)
	}
	if sum > 3*maxBytes {
		t.Errorf("total %d bytes over %d", sum, 3*maxBytes)
	}
}

func TestTail_AcrossRotatedFiles(t *testing.T) {
	dir := t.TempDir()
	w := open(t, dir, Options{MaxBytes: 500, MaxFiles: 4})
	for i := 0; i < 100; i++ {
		write(t, w.Stream("stdout"), fmt.Sprintf("line %02d\n", i))
	}
	for _, n := range []int{1, 10, 30} {
		got, err := Tail(dir, "c1", n)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != n {
			t.Fatalf("Tail(%d) gave %d entries", n, len(got))
		}
		for i, e := range got {
			if want := fmt.Sprintf("line %02d", 100-n+i); e.Text != want {
				t.Errorf("Tail(%d)[%d] = %q, want %q", n, i, e.Text, want)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "c1.log.3")); err != nil {
		t.Fatalf("expected 3 rotated files: %v", err)
	}
	all, err := Tail(dir, "c1", 0)
	if err != nil {
		t.Fatal(err)
	}
	// All that is kept: consecutive, oldest first, ending at the last line.
	first, _ := strconv.Atoi(strings.TrimPrefix(all[0].Text, "line "))
	if len(all) != 100-first || len(all) < 30 {
		t.Fatalf("Tail(0) gave %d entries from line %d", len(all), first)
	}
	for i, e := range all {
		if want := fmt.Sprintf("line %02d", first+i); e.Text != want {
			t.Fatalf("Tail(0)[%d] = %q, want %q", i, e.Text, want)
		}
	}
}

func TestTail_SkipsMalformedLines(t *testing.T) {
	dir := t.TempDir()
	content := "garbage\n" +
		"2026-11-27T00:00:00.000000001Z stdout F one\n" +
		"not-a-time stdout F two\n" +
		"2026-11-27T00:00:00.000000002Z stdout X three\n" +
		"2026-11-27T00:00:00.000000003Z stdout\n" +
		"\n" +
		"2026-11-27T00:00:00.000000004Z stderr F four with  spaces \n" +
		"2026-11-27T00:00:00.000000005Z stdout F cut mid-wr"
	if err := os.WriteFile(filepath.Join(dir, "c1.log"), []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	got, err := Tail(dir, "c1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Text != "one" || got[1].Text != "four with  spaces " || got[1].Stream != "stderr" {
		t.Errorf("Tail = %+v", got)
	}
	if _, err := Tail(filepath.Join(dir, "missing"), "c1", 0); err == nil {
		t.Error("Tail of a missing directory succeeded")
	}
}

func TestWriter_ConcurrentStreamsWriteWholeLines(t *testing.T) {
	dir := t.TempDir()
	w := open(t, dir, Options{MaxBytes: 64 << 10, MaxFiles: 100})
	const lines = 2000
	var wg sync.WaitGroup
	for _, s := range []string{"stdout", "stderr"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := w.Stream(s)
			for i := 0; i < lines; i++ {
				msg := fmt.Sprintf("%s-%d-%s\n", s, i, strings.Repeat("z", i%50))
				for len(msg) > 0 { // tiny writes interleave the two streams
					k := min(3, len(msg))
					if _, err := st.Write([]byte(msg[:k])); err != nil {
						t.Error(err)
						return
					}
					msg = msg[k:]
				}
			}
		}()
	}
	wg.Wait()
	got, err := Tail(dir, "c1", 0)
	if err != nil {
		t.Fatal(err)
	}
	next := map[string]int{}
	for _, e := range got {
		want := fmt.Sprintf("%s-%d-%s", e.Stream, next[e.Stream], strings.Repeat("z", next[e.Stream]%50))
		if e.Text != want || e.Partial {
			t.Fatalf("got %q (partial %v), want %q", e.Text, e.Partial, want)
		}
		next[e.Stream]++
	}
	if next["stdout"] != lines || next["stderr"] != lines {
		t.Errorf("counts %v, want %d each", next, lines)
	}
}

func TestCopyFrom_PipeEndsPendingLine(t *testing.T) {
	dir := t.TempDir()
	w := open(t, dir, Options{})
	r, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_, _ = pw.Write([]byte("a\nb\nunterminated"))
		pw.Close()
	}()
	if err := w.CopyFrom("stderr", r); err != nil {
		t.Fatal(err)
	}
	r.Close()
	got, err := Tail(dir, "c1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[2].Text != "unterminated" || got[2].Stream != "stderr" {
		t.Errorf("Tail = %+v", got)
	}
}

// follower runs Follow in the background and hands its entries over a
// channel.
func follower(t *testing.T, dir string, from int) (<-chan Entry, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan Entry)
	done := make(chan error, 1)
	go func() {
		done <- Follow(ctx, dir, "c1", from, func(e Entry) error {
			select {
			case ch <- e:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	var (
		once sync.Once
		err  error
	)
	stop := func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return ch, stop
}

func expect(t *testing.T, ch <-chan Entry, want string) {
	t.Helper()
	select {
	case e := <-ch:
		if e.Text != want {
			t.Fatalf("followed %q, want %q", e.Text, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no entry %q within 10s", want)
	}
}

func TestFollow_NewLinesAndRotation(t *testing.T) {
	dir := t.TempDir()
	w := open(t, dir, Options{MaxBytes: 400, MaxFiles: 2})
	for i := 0; i < 5; i++ {
		write(t, w.Stream("stdout"), fmt.Sprintf("old %d\n", i))
	}
	ch, stop := follower(t, dir, 2)
	expect(t, ch, "old 3")
	expect(t, ch, "old 4")
	// Each line is written once the previous one was seen, so at most one
	// rotation happens between two polls; 40 lines rotate several times.
	for i := 0; i < 40; i++ {
		text := fmt.Sprintf("new %02d %s", i, strings.Repeat("n", 30))
		write(t, w.Stream("stdout"), text+"\n")
		expect(t, ch, text)
	}
	long := strings.Repeat("L", MaxLine+10)
	w.opts.MaxBytes = 1 << 20 // room for a long line in one file
	write(t, w.Stream("stderr"), long+"\n")
	expect(t, ch, long)
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Follow ended with %v, want context.Canceled", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "c1.log.1")); err != nil {
		t.Errorf("no rotation happened: %v", err)
	}
}

// hook installs testHook for the test and returns the channel of its events.
func hook(t *testing.T) <-chan string {
	ev := make(chan string, 10)
	testHook = func(e string) { ev <- e }
	t.Cleanup(func() { testHook = nil })
	return ev
}

func waitEvent(t *testing.T, ev <-chan string, want string) {
	t.Helper()
	select {
	case e := <-ev:
		if e != want {
			t.Fatalf("Follow event %q, want %q", e, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no Follow event %q within 10s", want)
	}
}

func TestFollow_FromZeroWaitsForFile(t *testing.T) {
	dir := t.TempDir()
	ev := hook(t)
	ch, _ := follower(t, dir, 0)
	waitEvent(t, ev, "waiting")
	w := open(t, dir, Options{})
	write(t, w.Stream("stdout"), "first\n")
	waitEvent(t, ev, "following")
	expect(t, ch, "first") // the file is new: all of it is followed
}

func TestFollow_FromZeroSkipsOld(t *testing.T) {
	dir := t.TempDir()
	w := open(t, dir, Options{})
	write(t, w.Stream("stdout"), "first\n")
	ev := hook(t)
	ch, _ := follower(t, dir, 0)
	waitEvent(t, ev, "following")
	write(t, w.Stream("stdout"), "second\n")
	expect(t, ch, "second") // "first" was there before: skipped

	ch2, _ := follower(t, dir, 1)
	expect(t, ch2, "second")
	write(t, w.Stream("stdout"), "third\n")
	expect(t, ch, "third")
	expect(t, ch2, "third")
}

func TestFollow_CallbackErrorStops(t *testing.T) {
	dir := t.TempDir()
	w := open(t, dir, Options{})
	write(t, w.Stream("stdout"), "x\n")
	boom := errors.New("boom")
	err := Follow(context.Background(), dir, "c1", -1, func(Entry) error { return boom })
	if !errors.Is(err, boom) {
		t.Errorf("Follow = %v, want boom", err)
	}
}
