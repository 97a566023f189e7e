// Package termsafe shows untrusted text on an operator's terminal without
// letting it drive the terminal. Container output, app versions, names and
// messages can carry control sequences (an OSC that retitles the window, a
// CSI that clears the screen or moves the cursor, a carriage return that
// overwrites what was printed); a terminal acts on them. Escape and Writer
// show them as visible escapes instead: ESC becomes \x1b, DEL \x7f, the C1
// control U+009B \u009b, a byte that is not UTF-8 \xNN.
//
// What passes: printable text, \n and \t, and \r directly before \n (a
// CRLF line ending moves nothing). Everything else below 0x20, DEL, the C1
// controls U+0080–U+009F and bytes that are not part of valid UTF-8 (an
// 8-bit terminal reads 0x9b as CSI) are escaped.
//
// Escaping is for terminals only: For picks it when the destination is a
// terminal and leaves pipes and files the bytes as they are.
package termsafe

import (
	"fmt"
	"io"
	"os"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Escape returns s with every control character escaped, \n and \t
// included: for one cell of a table or one field of a line, where a
// newline or a tab would forge a row or a column.
func Escape(s string) string {
	if clean(s, false) {
		return s
	}
	return string(appendEscaped(nil, []byte(s), false, true))
}

// clean reports whether s needs no escaping.
func clean(s string, keepLayout bool) bool {
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b < 0x20 || b >= 0x7f {
			if keepLayout && (b == '\n' || b == '\t') {
				continue
			}
			return false
		}
	}
	return true
}

// appendEscaped appends p to dst with control characters escaped. With
// keepLayout, \n, \t and a \r before \n pass. With final unset, an
// incomplete UTF-8 sequence at the end of p is left out; the returned n is
// how much of p was consumed.
func appendEscaped(dst, p []byte, keepLayout, final bool) []byte {
	out, _ := appendEscapedN(dst, p, keepLayout, final)
	return out
}

func appendEscapedN(dst, p []byte, keepLayout, final bool) ([]byte, int) {
	i := 0
	for i < len(p) {
		b := p[i]
		switch {
		case b >= 0x20 && b < 0x7f:
			dst = append(dst, b)
			i++
			continue
		case keepLayout && (b == '\n' || b == '\t'):
			dst = append(dst, b)
			i++
			continue
		case keepLayout && b == '\r' && i+1 < len(p) && p[i+1] == '\n':
			dst = append(dst, '\r', '\n')
			i += 2
			continue
		case b < 0x80: // C0 controls and DEL
			dst = fmt.Appendf(dst, `\x%02x`, b)
			i++
			continue
		}
		if !final && !utf8.FullRune(p[i:]) {
			return dst, i // the rest of the rune comes with the next write
		}
		r, size := utf8.DecodeRune(p[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			dst = fmt.Appendf(dst, `\x%02x`, b)
		case r >= 0x80 && r <= 0x9f:
			dst = fmt.Appendf(dst, `\u%04x`, r)
		default:
			dst = append(dst, p[i:i+size]...)
		}
		i += size
	}
	return dst, i
}

// Writer escapes control characters in what it writes to the underlying
// writer, keeping \n, \t and CRLF line endings. It holds back at most the
// first bytes of a UTF-8 sequence split across writes, and a \r at the end
// of a write until it sees whether \n follows; Flush writes them out.
type Writer struct {
	w       io.Writer
	pending []byte
	buf     []byte
}

// NewWriter returns a Writer that escapes what it writes to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write escapes p and writes it. It reports len(p) when the underlying
// write succeeds, whatever the escaped length.
func (w *Writer) Write(p []byte) (int, error) {
	in := p
	if len(w.pending) > 0 {
		in = append(w.pending, p...)
		w.pending = nil
	}
	// A trailing \r waits for the next write: it may start a CRLF.
	hold := 0
	if len(in) > 0 && in[len(in)-1] == '\r' {
		hold = 1
	}
	out, n := appendEscapedN(w.buf[:0], in[:len(in)-hold], true, false)
	w.pending = append(w.pending, in[n:]...)
	w.buf = out
	if len(out) > 0 {
		if _, err := w.w.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush writes what Write held back (a split UTF-8 sequence or a lone \r,
// both escaped since nothing completes them now).
func (w *Writer) Flush() error {
	if len(w.pending) == 0 {
		return nil
	}
	out := appendEscaped(nil, w.pending, true, true)
	w.pending = nil
	_, err := w.w.Write(out)
	return err
}

// IsTerminal reports whether fd is a terminal.
func IsTerminal(fd uintptr) bool {
	_, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
	return err == nil
}

// isTerminal is the check For uses; tests replace it.
var isTerminal = func(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && IsTerminal(f.Fd())
}

// For returns w itself when it is not a terminal, and a Writer that
// escapes into it when it is.
func For(w io.Writer) io.Writer {
	if isTerminal(w) {
		return NewWriter(w)
	}
	return w
}

// Terminal reports whether w is a terminal (an *os.File on one).
func Terminal(w io.Writer) bool { return isTerminal(w) }
