package logs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Entry is one log line. Tail and Follow join the P records of a long line
// with its F record into one full Entry; Partial is set only on a line whose
// end was never written.
type Entry struct {
	Time    time.Time
	Stream  string
	Partial bool
	Text    string
}

// followPoll is how often Follow looks for new data and rotation.
const followPoll = 100 * time.Millisecond

// testHook, when set by a test, is called with "waiting" when Follow
// first finds no file and with "following" once it has read its starting
// point.
var testHook func(event string)

// parseRecord parses one record (without its newline); ok is false for a
// malformed one.
func parseRecord(line []byte) (e Entry, ok bool) {
	ts, rest, ok1 := bytes.Cut(line, []byte{' '})
	stream, rest, ok2 := bytes.Cut(rest, []byte{' '})
	tag, text, ok3 := bytes.Cut(rest, []byte{' '})
	if !ok1 || !ok2 {
		return Entry{}, false
	}
	if !ok3 { // "ts stream F" with empty text has no trailing space
		tag, text = rest, nil
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil || len(stream) == 0 {
		return Entry{}, false
	}
	switch string(tag) {
	case "P":
		e.Partial = true
	case "F":
	default:
		return Entry{}, false
	}
	e.Time, e.Stream, e.Text = t, string(stream), string(text)
	return e, true
}

// joiner joins partial records per stream into full lines.
type joiner struct {
	pending map[string]*Entry
}

// add takes one record and returns the full line it completes, if any.
func (j *joiner) add(r Entry) (Entry, bool) {
	if j.pending == nil {
		j.pending = map[string]*Entry{}
	}
	p := j.pending[r.Stream]
	if r.Partial {
		if p == nil {
			c := r
			j.pending[r.Stream] = &c
		} else {
			p.Text += r.Text
		}
		return Entry{}, false
	}
	if p != nil {
		delete(j.pending, r.Stream)
		p.Text += r.Text
		p.Partial = false
		return *p, true
	}
	return r, true
}

// rest returns the lines left unfinished, oldest first.
func (j *joiner) rest() []Entry {
	var out []Entry
	for _, p := range j.pending {
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b Entry) int { return a.Time.Compare(b.Time) })
	return out
}

// files lists the log files of name, oldest first.
func files(dir, name string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var nums []int
	for _, e := range ents {
		s, ok := strings.CutPrefix(e.Name(), name+".log.")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			nums = append(nums, n)
		}
	}
	slices.Sort(nums)
	slices.Reverse(nums)
	var out []string
	for _, n := range nums {
		out = append(out, filePath(dir, name, n))
	}
	if _, err := os.Stat(filePath(dir, name, 0)); err == nil {
		out = append(out, filePath(dir, name, 0))
	}
	return out, nil
}

// scan feeds every well-formed record of r to fn and returns how many
// bytes it consumed: a trailing record without its newline (still being
// written) is not consumed. Malformed records are skipped.
func scan(r io.Reader, fn func(Entry) error) (consumed int64, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A record longer than any we write: skip it whole.
			consumed += int64(len(line))
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				consumed += int64(len(line))
			}
			if err != nil {
				return consumed - int64(len(line)), ignoreEOF(err)
			}
			continue
		}
		if err != nil {
			return consumed, ignoreEOF(err)
		}
		consumed += int64(len(line))
		if e, ok := parseRecord(line[:len(line)-1]); ok {
			if err := fn(e); err != nil {
				return consumed, err
			}
		}
	}
}

func ignoreEOF(err error) error {
	if err == io.EOF {
		return nil
	}
	return err
}

// Tail returns the last n lines of the log of name in dir, oldest first
// (all of them when n <= 0), reading the rotated files too.
func Tail(dir, name string, n int) ([]Entry, error) {
	out, _, _, err := tail(dir, name, n, nil)
	if err != nil {
		return nil, fmt.Errorf("tail log %s: %w", name, err)
	}
	return out, nil
}

// tail reads the rotated files and then cur (or name.log when cur is nil)
// and returns the last n lines, the joiner state and how far it read cur.
func tail(dir, name string, n int, cur *os.File) ([]Entry, *joiner, int64, error) {
	paths, err := files(dir, name)
	if err != nil {
		return nil, nil, 0, err
	}
	if cur != nil && len(paths) > 0 && paths[len(paths)-1] == filePath(dir, name, 0) {
		paths = paths[:len(paths)-1]
	}
	j := &joiner{}
	var out []Entry
	keep := func(e Entry) error {
		if full, ok := j.add(e); ok {
			out = append(out, full)
			if n > 0 && len(out) > 2*n {
				out = append(out[:0], out[len(out)-n:]...)
			}
		}
		return nil
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // rotated away meanwhile
			}
			return nil, nil, 0, err
		}
		_, err = scan(f, keep)
		f.Close()
		if err != nil {
			return nil, nil, 0, err
		}
	}
	var off int64
	if cur != nil {
		if off, err = scan(cur, keep); err != nil {
			return nil, nil, 0, err
		}
	}
	if cur == nil {
		out = append(out, j.rest()...)
	}
	if n > 0 && len(out) > n {
		out = out[len(out)-n:]
	}
	return out, j, off, nil
}

// Follow calls fn with the last `from` lines (none when from is 0, all
// when from < 0) and then with each new line as it is written, across
// rotations, until ctx is done (it then returns ctx.Err()) or fn fails.
// It polls every 100ms.
func Follow(ctx context.Context, dir, name string, from int, fn func(Entry) error) error {
	err := follow(ctx, dir, name, from, fn)
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("follow log %s: %w", name, err)
	}
	return err
}

func follow(ctx context.Context, dir, name string, from int, fn func(Entry) error) error {
	cur, waited, err := openCurrent(ctx, dir, name)
	if err != nil {
		return err
	}
	defer func() { cur.Close() }()
	var (
		j   = &joiner{}
		off int64
	)
	switch {
	case from == 0 && waited:
		// The file appeared after Follow started: all of it is new.
	case from == 0:
		off, err = scan(cur, func(Entry) error { return nil })
	default:
		var initial []Entry
		initial, j, off, err = tail(dir, name, from, cur)
		for _, e := range initial {
			if err != nil {
				break
			}
			err = fn(e)
		}
	}
	if err != nil {
		return err
	}
	if testHook != nil {
		testHook("following")
	}
	emit := func(e Entry) error {
		if full, ok := j.add(e); ok {
			return fn(full)
		}
		return nil
	}
	// readNew reads what was appended to cur since off, up to its last
	// complete record.
	readNew := func() error {
		if _, err := cur.Seek(off, io.SeekStart); err != nil {
			return err
		}
		k, err := scan(cur, emit)
		off += k
		return err
	}
	tick := time.NewTicker(followPoll)
	defer tick.Stop()
	for {
		if err := readNew(); err != nil {
			return err
		}
		rotated, err := replaced(cur, filePath(dir, name, 0))
		if err != nil {
			return err
		}
		if rotated {
			// The writer closes a file before renaming it: finish the old
			// one, then switch to the new one when it exists.
			if err := readNew(); err != nil {
				return err
			}
			next, err := os.Open(filePath(dir, name, 0))
			if err == nil {
				cur.Close()
				cur, off = next, 0
				continue
			}
			if !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// openCurrent opens name.log, waiting for it to appear; waited tells
// whether it had to.
func openCurrent(ctx context.Context, dir, name string) (f *os.File, waited bool, err error) {
	tick := time.NewTicker(followPoll)
	defer tick.Stop()
	for {
		f, err := os.Open(filePath(dir, name, 0))
		if err == nil {
			return f, waited, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, false, err
		}
		if !waited && testHook != nil {
			testHook("waiting")
		}
		waited = true
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-tick.C:
		}
	}
}

// replaced reports whether path no longer names the file f has open.
func replaced(f *os.File, path string) (bool, error) {
	a, err := f.Stat()
	if err != nil {
		return false, err
	}
	b, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return true, nil
		}
		return false, err
	}
	return !os.SameFile(a, b), nil
}
