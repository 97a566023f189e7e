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
// end was never written. A line longer than MaxJoined is cut there and its
// Text ends with CutMark.
type Entry struct {
	Time    time.Time
	Stream  string
	Partial bool
	Text    string
}

// MaxJoined is the most text of one line that Tail and Follow return; the
// rest of a longer line is dropped and CutMark appended, so that a
// container writing without newlines cannot make a reader hold its whole
// output.
const MaxJoined = 256 << 10

// CutMark ends the text of a line cut at MaxJoined.
const CutMark = "… [line cut at 256 KiB]"

// maxRecord bounds one record with its newline; longer ones (never written
// by a Writer) are skipped.
const maxRecord = 64 << 10

// followPoll is how often Follow looks for new data and rotation.
const followPoll = 100 * time.Millisecond

// testHook, when set by a test, is called with "waiting" when Follow
// first finds no file and with "following" once it has read its starting
// point.
var testHook func(event string)

// record is one parsed record; its slices point into the line it was
// parsed from.
type record struct {
	time    time.Time
	stream  []byte
	partial bool
	text    []byte
}

// parseRecord parses one record (without its newline); ok is false for a
// malformed one.
func parseRecord(line []byte) (r record, ok bool) {
	ts, rest, ok1 := bytes.Cut(line, []byte{' '})
	stream, rest, ok2 := bytes.Cut(rest, []byte{' '})
	tag, text, ok3 := bytes.Cut(rest, []byte{' '})
	if !ok1 || !ok2 {
		return record{}, false
	}
	if !ok3 { // "ts stream F" with empty text has no trailing space
		tag, text = rest, nil
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil || len(stream) == 0 {
		return record{}, false
	}
	switch string(tag) {
	case "P":
		r.partial = true
	case "F":
	default:
		return record{}, false
	}
	r.time, r.stream, r.text = t, stream, text
	return r, true
}

// lineBuf accumulates the text of one line, keeping its first MaxJoined
// bytes.
type lineBuf struct {
	e    Entry // Time and Stream of the first record
	text []byte
	n    int64 // text bytes of the whole line
}

func (b *lineBuf) add(text []byte) {
	b.n += int64(len(text))
	if room := MaxJoined - len(b.text); room > 0 {
		b.text = append(b.text, text[:min(room, len(text))]...)
	}
}

// entry returns the line, cut and marked when it was longer than
// MaxJoined.
func (b *lineBuf) entry(partial bool) Entry {
	e := b.e
	e.Partial = partial
	if b.n > MaxJoined {
		e.Text = string(append(b.text, CutMark...))
	} else {
		e.Text = string(b.text)
	}
	return e
}

// joiner joins partial records per stream into full lines.
type joiner struct {
	pending map[string]*lineBuf
}

// add takes one record and returns the full line it completes, if any.
func (j *joiner) add(r record) (Entry, bool) {
	if j.pending == nil {
		j.pending = map[string]*lineBuf{}
	}
	p := j.pending[string(r.stream)]
	if p == nil {
		if !r.partial { // a whole line in one record: the common case
			return Entry{Time: r.time, Stream: string(r.stream), Text: string(r.text)}, true
		}
		p = &lineBuf{e: Entry{Time: r.time, Stream: string(r.stream)}}
		j.pending[p.e.Stream] = p
	}
	p.add(r.text)
	if r.partial {
		return Entry{}, false
	}
	delete(j.pending, p.e.Stream)
	return p.entry(false), true
}

// rest returns the lines left unfinished, oldest first.
func (j *joiner) rest() []Entry {
	var out []Entry
	for _, p := range j.pending {
		out = append(out, p.entry(true))
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
func scan(r io.Reader, fn func(record) error) (consumed int64, err error) {
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
		if rec, ok := parseRecord(line[:len(line)-1]); ok {
			if err := fn(rec); err != nil {
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
		off, err = scan(cur, func(record) error { return nil })
	default:
		j, off, err = tail(dir, name, from, cur, fn)
	}
	if err != nil {
		return err
	}
	if testHook != nil {
		testHook("following")
	}
	emit := func(r record) error {
		if full, ok := j.add(r); ok {
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
