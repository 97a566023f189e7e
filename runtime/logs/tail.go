package logs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/containerd/errdefs"
)

// Tail returns the last n lines of the log of name in dir, oldest first
// (all of them when n <= 0), reading the rotated files too. Lines are cut
// at MaxJoined; a line still being written (no F record yet) comes last,
// with Partial set.
func Tail(dir, name string, n int) ([]Entry, error) {
	var out []Entry
	err := TailFunc(dir, name, n, func(e Entry) error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TailFunc calls fn with the last n lines of the log of name in dir, oldest
// first (all of them when n <= 0), one at a time, and stops at fn's first
// error. With n > 0 it reads the files from their end, so the work and the
// memory do not depend on how much was logged before those lines: memory
// holds one line (at most MaxJoined bytes) at a time.
func TailFunc(dir, name string, n int, fn func(Entry) error) error {
	srcs, err := openSources(dir, name, nil)
	if err != nil {
		return fmt.Errorf("tail log %s: %w", name, err)
	}
	defer srcs.close()
	if n > 0 {
		if err := srcs.tail(n, fn); err != nil {
			return fmt.Errorf("tail log %s: %w", name, err)
		}
		return nil
	}
	j := &joiner{}
	if _, err := srcs.forward(j, fn); err != nil {
		return fmt.Errorf("tail log %s: %w", name, err)
	}
	for _, e := range j.rest() {
		if err := fn(e); err != nil {
			return fmt.Errorf("tail log %s: %w", name, err)
		}
	}
	return nil
}

// tail gives Follow its starting point: it calls fn with the last n lines
// (all when n < 0) of the rotated files and cur, and returns the joiner
// holding the lines of cur still being written, and the offset in cur
// after its last whole record.
func tail(dir, name string, n int, cur *os.File, fn func(Entry) error) (*joiner, int64, error) {
	srcs, err := openSources(dir, name, cur)
	if err != nil {
		return nil, 0, err
	}
	defer srcs.close()
	j := &joiner{pending: map[string]*lineBuf{}}
	if n < 0 {
		off, err := srcs.forward(j, fn)
		return j, off, err
	}
	lines, unfinished, err := srcs.scanBack(n)
	if err != nil {
		return nil, 0, err
	}
	for _, l := range lines {
		b, err := srcs.head(l)
		if err != nil {
			return nil, 0, err
		}
		if err := fn(b.entry(false)); err != nil {
			return nil, 0, err
		}
	}
	for _, l := range unfinished {
		b, err := srcs.head(l)
		if err != nil {
			return nil, 0, err
		}
		j.pending[b.e.Stream] = b
	}
	return j, srcs[len(srcs)-1].end, nil
}

// source is one log file, read up to end.
type source struct {
	f     *os.File
	end   int64
	owned bool // opened here, closed by close
}

// sources are the log files of one container, oldest first.
type sources []source

// openSources opens the rotated files and then cur, or name.log when cur
// is nil. A missing directory is errdefs.ErrNotFound.
func openSources(dir, name string, cur *os.File) (sources, error) {
	paths, err := files(dir, name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no log directory %s: %w", dir, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if cur != nil && len(paths) > 0 && paths[len(paths)-1] == filePath(dir, name, 0) {
		paths = paths[:len(paths)-1]
	}
	var srcs sources
	add := func(f *os.File, owned bool) error {
		st, err := f.Stat()
		if err != nil {
			return err
		}
		srcs = append(srcs, source{f: f, end: st.Size(), owned: owned})
		return nil
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue // rotated away meanwhile
		}
		if err == nil {
			err = add(f, true)
		}
		if err != nil {
			srcs.close()
			return nil, err
		}
	}
	if cur != nil {
		if err := add(cur, false); err != nil {
			srcs.close()
			return nil, err
		}
	}
	return srcs, nil
}

func (s sources) close() {
	for _, src := range s {
		if src.owned {
			src.f.Close()
		}
	}
}

// reader reads source i from off to its end.
func (s sources) reader(i int, off int64) io.Reader {
	return io.NewSectionReader(s[i].f, off, s[i].end-off)
}

// forward reads every source from its start, joins lines with j and calls
// fn with each finished one. It returns how far it read the last source
// (up to its last whole record).
func (s sources) forward(j *joiner, fn func(Entry) error) (off int64, err error) {
	for i := range s {
		off, err = scan(s.reader(i, 0), func(r record) error {
			if full, ok := j.add(r); ok {
				return fn(full)
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	return off, nil
}

// lineRef locates one line found by scanBack: where its first record is
// and how much text it has, without holding the text.
type lineRef struct {
	stream     string
	file       int   // source of the first record
	off        int64 // offset of the first record in it
	n          int64 // text bytes of the whole line
	unfinished bool  // no F record yet
	rank       int   // among finished lines, 0 for the last one
}

// scanBack reads the sources from their end and locates the last n
// finished lines, oldest first, and the lines still being written at the
// end (one per stream at most, found among the records it read). Each
// source it reads gets its end set to the end of its last whole record.
func (s sources) scanBack(n int) (lines, unfinished []*lineRef, err error) {
	var (
		finished []*lineRef              // finished[0] is the last line
		open     = map[string]*lineRef{} // per stream, the line being traced back
		store    = make([]byte, maxRecord+backChunk)
	)
	needed := func(l *lineRef) bool { return l.unfinished || l.rank < n }
	done := func() bool {
		if len(finished) < n {
			return false
		}
		for _, l := range open {
			if needed(l) {
				return false
			}
		}
		return true
	}
	for i := len(s) - 1; i >= 0 && !done(); i-- {
		b := &backScanner{f: s[i].f, pos: s[i].end, skip: true, store: store}
		for !done() {
			line, off, err := b.prev()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, nil, err
			}
			r, ok := parseRecord(line)
			if !ok {
				continue
			}
			l := open[string(r.stream)]
			if !r.partial || l == nil {
				// An F record ends the line before the open one and starts
				// a new one; a stream's last record being P starts a line
				// still being written.
				l = &lineRef{stream: string(r.stream), unfinished: r.partial, rank: -1}
				if !r.partial {
					l.rank = len(finished)
					finished = append(finished, l)
				} else {
					unfinished = append(unfinished, l)
				}
				open[l.stream] = l
			}
			l.file, l.off = i, off
			l.n += int64(len(r.text))
		}
		s[i].end = b.end
	}
	for i := min(n, len(finished)) - 1; i >= 0; i-- {
		lines = append(lines, finished[i])
	}
	return lines, unfinished, nil
}

// tail calls fn with the last n lines, oldest first: the finished ones,
// then the lines still being written (ordered by their first record's
// time), which count towards n.
func (s sources) tail(n int, fn func(Entry) error) error {
	lines, unfinished, err := s.scanBack(n)
	if err != nil {
		return err
	}
	var last []Entry
	for _, l := range unfinished {
		b, err := s.head(l)
		if err != nil {
			return err
		}
		last = append(last, b.entry(true))
	}
	slices.SortFunc(last, func(a, b Entry) int { return a.Time.Compare(b.Time) })
	if len(last) > n {
		last = last[len(last)-n:]
	}
	lines = lines[max(0, len(lines)-(n-len(last))):]
	for _, l := range lines {
		b, err := s.head(l)
		if err != nil {
			return err
		}
		if err := fn(b.entry(false)); err != nil {
			return err
		}
	}
	for _, e := range last {
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

// head reads the records of l forward from its first one, keeping the
// first MaxJoined bytes of its text.
func (s sources) head(l *lineRef) (*lineBuf, error) {
	b := &lineBuf{}
	br := bufio.NewReaderSize(nil, maxRecord)
	first := true
	for i := l.file; i < len(s); i++ {
		off := int64(0)
		if i == l.file {
			off = l.off
		}
		br.Reset(s.reader(i, off))
		for {
			line, err := br.ReadSlice('\n')
			if errors.Is(err, bufio.ErrBufferFull) {
				for errors.Is(err, bufio.ErrBufferFull) { // over-long: skipped, as by scan
					_, err = br.ReadSlice('\n')
				}
				if err != nil {
					break
				}
				continue
			}
			if err != nil {
				break // this file's end: the line goes on in the next one
			}
			r, ok := parseRecord(line[:len(line)-1])
			if !ok || string(r.stream) != l.stream {
				continue
			}
			if first {
				b.e = Entry{Time: r.time, Stream: l.stream}
				first = false
			}
			b.add(r.text)
			if !r.partial || len(b.text) >= MaxJoined {
				b.n = l.n // the rest of the line is known by its size only
				return b, nil
			}
		}
	}
	b.n = l.n
	return b, nil
}

// backChunk is how much a backScanner reads at a time.
const backChunk = 64 << 10

// backScanner returns the records of a file from its end backwards. It
// holds at most maxRecord+backChunk bytes whatever the file holds.
type backScanner struct {
	f     *os.File
	store []byte // workspace
	buf   []byte // file bytes [pos, pos+len(buf)) not returned yet: whole records
	pos   int64
	skip  bool  // dropping bytes back to the previous newline
	found bool  // the last newline was found
	end   int64 // end of the last whole record, once found
}

// prev returns the record before the ones returned so far (without its
// newline) and its offset, or io.EOF at the start of the file. The record
// is valid until the next call. Bytes after the last newline (a record
// being written) and records longer than maxRecord are skipped.
func (b *backScanner) prev() ([]byte, int64, error) {
	for {
		if len(b.buf) > 0 {
			data := b.buf[:len(b.buf)-1]
			if j := bytes.LastIndexByte(data, '\n'); j >= 0 || b.pos == 0 {
				rec := data[j+1:]
				b.buf = b.buf[:j+1]
				if len(rec)+1 > maxRecord {
					continue
				}
				return rec, b.pos + int64(j+1), nil
			}
		}
		if b.pos == 0 {
			return nil, 0, io.EOF
		}
		if err := b.more(); err != nil {
			return nil, 0, err
		}
	}
}

// more reads the chunk before pos.
func (b *backScanner) more() error {
	if len(b.buf) > maxRecord {
		b.skip, b.buf = true, nil // the record at pos is too long
	}
	n := int(min(int64(backChunk), b.pos))
	if b.skip {
		p := b.store[:n]
		if _, err := b.f.ReadAt(p, b.pos-int64(n)); err != nil {
			return err
		}
		b.pos -= int64(n)
		if j := bytes.LastIndexByte(p, '\n'); j >= 0 {
			if !b.found {
				b.end, b.found = b.pos+int64(j+1), true
			}
			b.skip = false
			b.buf = b.store[len(b.store)-(j+1):]
			copy(b.buf, p[:j+1])
		}
		return nil
	}
	top := len(b.store) - len(b.buf)
	copy(b.store[top:], b.buf)
	start := top - n
	if _, err := b.f.ReadAt(b.store[start:top], b.pos-int64(n)); err != nil {
		return err
	}
	b.pos -= int64(n)
	b.buf = b.store[start:]
	return nil
}
