package main

import (
	"bytes"
	"strings"
	"testing"
)

// A cell cannot forge a row or a column, or reach the terminal raw.
func TestTable_CellsEscaped(t *testing.T) {
	var b bytes.Buffer
	c := newCLI(&b, &b)
	tw := c.table("NAME\tVERSION\tMESSAGE")
	row(tw, "web", "1\x1b]0;pwned\x07", "line\nfake\trow")
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.Count(out, "\n") != 2 || strings.ContainsAny(out, "\x1b\x07") ||
		!strings.Contains(out, `1\x1b]0;pwned\x07`) || !strings.Contains(out, `line\x0afake\x09row`) {
		t.Errorf("table:\n%s", out)
	}
}
