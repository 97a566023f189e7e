// Package logs keeps a container's stdout and stderr in size-capped,
// rotating files in the CRI log format, one record a line:
//
//	2026-11-27T00:00:00.000000000Z stdout F text
//
// A line longer than MaxLine is split into records tagged P (partial)
// followed by a last one tagged F (full). The current file is dir/name.log;
// when a record would push it past MaxBytes it becomes name.log.1, the
// older ones shift up to name.log.<MaxFiles-1>, and the oldest is dropped.
//
// Readers (Tail, TailFunc, Follow) join a line's records and cut a joined
// line at MaxJoined bytes, ending it with CutMark. Tail and TailFunc with
// n > 0 read the files backwards from their end, so a tail costs memory
// and reading for its own lines only (a cut line is still traced back to
// its start).
package logs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// MaxLine is the longest text one record carries; longer lines are split.
const MaxLine = 16 << 10

// timeFormat is RFC 3339 with a fixed nine-digit fraction.
const timeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// Options tune a Writer. The zero value is usable.
type Options struct {
	MaxBytes int64            // size of one file before it rotates; default 10 MiB
	MaxFiles int              // files kept, the current one included; default 3
	Now      func() time.Time // clock for record times; default time.Now
}

func (o *Options) defaults() {
	if o.MaxBytes <= 0 {
		o.MaxBytes = 10 << 20
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = 3
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Writer appends records to one container's log files. It is safe for
// concurrent use; each stream (see Stream) expects one writer at a time.
type Writer struct {
	dir, name string
	opts      Options

	mu      sync.Mutex
	f       *os.File
	size    int64
	streams map[string]*stream
	closed  bool
	rec     []byte // record scratch buffer
}

// Open opens (or creates) dir/name.log for appending, creating dir if needed.
func Open(dir, name string, opts Options) (*Writer, error) {
	opts.defaults()
	if name == "" || name != filepath.Base(name) || name == "." || name == ".." {
		return nil, fmt.Errorf("open log %q: not a plain file name: %w", name, errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open log %s: %w", name, err)
	}
	w := &Writer{dir: dir, name: name, opts: opts, streams: map[string]*stream{}}
	if err := w.openLocked(); err != nil {
		return nil, fmt.Errorf("open log %s: %w", name, err)
	}
	return w, nil
}

func (w *Writer) path(i int) string { return filePath(w.dir, w.name, i) }

// filePath is name.log for i == 0 and name.log.<i> otherwise.
func filePath(dir, name string, i int) string {
	p := filepath.Join(dir, name+".log")
	if i > 0 {
		p += "." + strconv.Itoa(i)
	}
	return p
}

func (w *Writer) openLocked() error {
	f, err := os.OpenFile(w.path(0), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, st.Size()
	return nil
}

// rotateLocked shifts name.log.i to name.log.i+1, dropping the oldest, and
// starts a new name.log.
func (w *Writer) rotateLocked() error {
	if err := w.f.Close(); err != nil {
		return err
	}
	w.f = nil
	n := w.opts.MaxFiles
	if err := os.Remove(w.path(n - 1)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for i := n - 2; i >= 0; i-- {
		if err := os.Rename(w.path(i), w.path(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return w.openLocked()
}

// writeRecordLocked writes one record, rotating first when it would not
// fit in the current file.
func (w *Writer) writeRecordLocked(stream string, partial bool, text []byte) error {
	if w.closed {
		return os.ErrClosed
	}
	if w.f == nil { // a rotation failed earlier; try again
		if err := w.openLocked(); err != nil {
			return err
		}
	}
	tag := " F "
	if partial {
		tag = " P "
	}
	r := w.opts.Now().UTC().AppendFormat(w.rec[:0], timeFormat)
	r = append(r, ' ')
	r = append(r, stream...)
	r = append(r, tag...)
	r = append(r, text...)
	r = append(r, '\n')
	w.rec = r
	if w.size > 0 && w.size+int64(len(r)) > w.opts.MaxBytes {
		if err := w.rotateLocked(); err != nil {
			return fmt.Errorf("rotate log %s: %w", w.name, err)
		}
	}
	n, err := w.f.Write(r)
	w.size += int64(n)
	return err
}

// Stream returns the writer for "stdout" or "stderr" (any other name is
// kept as given). It buffers text until a newline, or MaxLine bytes, or
// Close.
func (w *Writer) Stream(name string) io.Writer {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, ok := w.streams[name]
	if !ok {
		s = &stream{w: w, name: name}
		w.streams[name] = s
	}
	return s
}

type stream struct {
	w    *Writer
	name string
	buf  []byte // text of the current line not yet written
}

func (s *stream) Write(p []byte) (int, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.buf = append(s.buf, p...)
			break
		}
		line := p[:i]
		if len(s.buf) > 0 {
			s.buf = append(s.buf, line...)
			line = s.buf
		}
		if err := s.emitLocked(line, true); err != nil {
			return 0, err
		}
		s.buf = s.buf[:0]
		p = p[i+1:]
	}
	// Write whole MaxLine chunks of an over-long line as partials now.
	if len(s.buf) > MaxLine {
		k := len(s.buf) / MaxLine * MaxLine
		if k == len(s.buf) {
			k -= MaxLine // keep the last chunk: it may end the line
		}
		if err := s.emitLocked(s.buf[:k], false); err != nil {
			return 0, err
		}
		s.buf = append(s.buf[:0], s.buf[k:]...)
	}
	return n, nil
}

// emitLocked writes text as MaxLine-sized records; the last one is full
// when end is set, partial otherwise.
func (s *stream) emitLocked(text []byte, end bool) error {
	for {
		if len(text) <= MaxLine {
			return s.w.writeRecordLocked(s.name, !end, text)
		}
		if err := s.w.writeRecordLocked(s.name, true, text[:MaxLine]); err != nil {
			return err
		}
		text = text[MaxLine:]
	}
}

// flushLocked ends the stream's pending line, if any, as a full record.
func (s *stream) flushLocked() error {
	if len(s.buf) == 0 {
		return nil
	}
	err := s.emitLocked(s.buf, true)
	s.buf = s.buf[:0]
	return err
}

// CopyFrom copies r (typically the read end of a container's stdout or
// stderr pipe) into stream until EOF, then ends a pending unterminated line.
func (w *Writer) CopyFrom(name string, r io.Reader) error {
	s := w.Stream(name).(*stream)
	_, err := io.CopyBuffer(s, r, make([]byte, 32<<10))
	w.mu.Lock()
	ferr := s.flushLocked()
	w.mu.Unlock()
	if err = errors.Join(err, ferr); err != nil {
		return fmt.Errorf("copy %s to log %s: %w", name, w.name, err)
	}
	return nil
}

// Close ends every stream's pending line and closes the file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	var errs []error
	for _, s := range w.streams {
		errs = append(errs, s.flushLocked())
	}
	w.closed = true
	if w.f != nil {
		errs = append(errs, w.f.Close())
		w.f = nil
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close log %s: %w", w.name, err)
	}
	return nil
}
