package console

import (
	"fmt"
	"html/template"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/tender-edge/tender/internal/termsafe"
)

// funcs are the templates' helpers. html/template escapes everything
// they return (none returns template.HTML).
var funcs = template.FuncMap{
	"cell":   cell,
	"text":   text,
	"bytes":  humanBytes,
	"when":   when,
	"ago":    ago,
	"pct":    pct,
	"w":      widthClass,
	"labels": formatLabels,
	"keys":   func(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) },
	"esc":    url.PathEscape,
	"page":   pageURL,
	"statusPage": func(f filter, by, status string) string {
		f.Status = status
		return pageURL(f, by, 1)
	},
	"add":    func(a, b int) int { return a + b },
	"cores":  func(f float64) string { return fmt.Sprintf("%.2f", f) },
	"title":  func(s string) string { return strings.ToUpper(s[:1]) + s[1:] },
	"memPct": memPct,
	"cpuPct": cpuPct,
}

// cell shows a device-supplied string on one line: control characters
// (a terminal escape, a newline that would forge a row) as escapes.
func cell(s string) string { return termsafe.Escape(s) }

// text shows device output (a log tail) keeping its lines and tabs, every
// other control character escaped.
func text(s string) string {
	var b strings.Builder
	w := termsafe.NewWriter(&b)
	w.Write([]byte(s))
	w.Flush()
	return b.String()
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t).Round(time.Second)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

func pct(n, total int) int {
	if total <= 0 {
		return 0
	}
	return n * 100 / total
}

// widthClass is the CSS class of a bar segment n/total wide (w0..w100),
// since a style attribute is not allowed by the CSP.
func widthClass(n, total int) string {
	p := 0
	if total > 0 {
		p = (n*100 + total/2) / total
		if n > 0 && p == 0 {
			p = 1
		}
	}
	return fmt.Sprintf("w%d", min(p, 100))
}

func formatLabels(m map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(k + "=" + m[k])
	}
	return termsafe.Escape(b.String())
}

func memPct(used, total uint64) int {
	if total == 0 {
		return 0
	}
	return int(min(used*100/total, 100))
}

func cpuPct(cores float64, cpus int) int {
	if cpus <= 0 {
		return 0
	}
	return int(min(cores*100/float64(cpus), 100))
}
