package termsafe_test

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tender-edge/tender/internal/termsafe"
)

func TestEscape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text, ünïcode ✓", "plain text, ünïcode ✓"},
		{"\x1b]0;pwned\x07", `\x1b]0;pwned\x07`},
		{"\x1b[2J\x1b[H", `\x1b[2J\x1b[H`},
		{"a\tb\nc\rd", `a\x09b\x0ac\x0dd`},
		{"del\x7f", `del\x7f`},
		{"c1 \u009b31m", `c1 \u009b31m`},
		{"bad \x9b utf8 \xff", `bad \x9b utf8 \xff`},
		{"nul\x00", `nul\x00`},
	} {
		if got := termsafe.Escape(tc.in); got != tc.want {
			t.Errorf("Escape(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestWriter_KeepsLayoutEscapesControls(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"line one\nline two\tcol\n", "line one\nline two\tcol\n"},
		{"crlf\r\n", "crlf\r\n"},
		{"over\rwrite\n", `over\x0dwrite` + "\n"},
		{"\x1b]0;pwned\x07title\n", `\x1b]0;pwned\x07title` + "\n"},
		{"\x1b[31mred\x1b[0m\n", `\x1b[31mred\x1b[0m` + "\n"},
		{"\u009b2J \xc2\x9b2J", `\u009b2J \u009b2J`},
		{"ok ✓ \xe2\x9c", `ok ✓ \xe2\x9c`}, // cut rune at the end: escaped at Flush
	} {
		var b bytes.Buffer
		w := termsafe.NewWriter(&b)
		if n, err := w.Write([]byte(tc.in)); err != nil || n != len(tc.in) {
			t.Fatalf("Write(%q) = %d, %v", tc.in, n, err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if b.String() != tc.want {
			t.Errorf("%q written as %q, want %q", tc.in, b.String(), tc.want)
		}
	}
}

// Escapes and runes split across writes are recognised whole: one byte
// per write gives what one write gives.
func TestWriter_SplitWrites(t *testing.T) {
	in := "é✓ \x1b]0;x\x07 crlf\r\n\u009b lone\r."
	var whole, split bytes.Buffer
	w := termsafe.NewWriter(&whole)
	w.Write([]byte(in))
	w.Flush()
	ws := termsafe.NewWriter(&split)
	for i := 0; i < len(in); i++ {
		ws.Write([]byte{in[i]})
	}
	ws.Flush()
	want := `é✓ \x1b]0;x\x07 crlf` + "\r\n" + `\u009b lone\x0d.`
	if whole.String() != want || split.String() != want {
		t.Errorf("whole %q, split %q, want %q", whole.String(), split.String(), want)
	}
}

func TestFor_EscapesOnlyOnATerminal(t *testing.T) {
	restore := termsafe.SetIsTerminal(func(w io.Writer) bool { return w == io.Writer(&ttyBuf) })
	defer restore()
	var pipe bytes.Buffer
	const hostile = "\x1b]0;pwned\x07\n"
	io.WriteString(termsafe.For(&pipe), hostile)
	if pipe.String() != hostile {
		t.Errorf("a pipe got %q, want the bytes as they are", pipe.String())
	}
	io.WriteString(termsafe.For(&ttyBuf), hostile)
	if got := ttyBuf.String(); got != `\x1b]0;pwned\x07`+"\n" {
		t.Errorf("a terminal got %q", got)
	}
}

var ttyBuf bytes.Buffer

// IsTerminal answers from the kernel: a pty is one, a pipe is not.
func TestIsTerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if termsafe.IsTerminal(w.Fd()) || termsafe.Terminal(w) {
		t.Error("a pipe is taken for a terminal")
	}
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pty here: %v", err)
	}
	defer ptmx.Close()
	if !termsafe.IsTerminal(ptmx.Fd()) || !termsafe.Terminal(ptmx) {
		t.Error("a pty is not taken for a terminal")
	}
	if termsafe.Terminal(&strings.Builder{}) {
		t.Error("a strings.Builder is taken for a terminal")
	}
}
