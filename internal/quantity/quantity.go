// Package quantity is the one grammar for the quantities operators write:
// sizes in bytes and CPUs as Kubernetes quantities, and durations as Go
// duration strings.
//
// Sizes (ParseBytes) take the Kubernetes quantity forms: a plain integer
// number of bytes, or a number, with an optional decimal fraction, and one
// suffix: Ki Mi Gi Ti Pi Ei (powers of 1024) or k M G T P E (powers of
// 1000). "64Mi", "1.5Gi", "500M", "1048576". Nothing else: no spaces, no
// "MB" or "MiB", no exponents ("1e3"), and no lower-case "m", which in a
// Kubernetes quantity means thousandths, not mega.
//
// CPUs (ParseMilliCPU) are "250m" (thousandths of a CPU), "0.5" or "2".
//
// Every parse error wraps errdefs.ErrInvalidArgument and names the value
// and the accepted forms. The package does no I/O.
package quantity

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// sizeForms is what a size error says is accepted.
const sizeForms = "want a whole number of bytes, or a number with one of the suffixes Ki, Mi, Gi, Ti, Pi, Ei (powers of 1024) or k, M, G, T, P, E (powers of 1000), like 64Mi or 1.5Gi"

// suffixes are the size suffixes, two-letter ones first.
var suffixes = []struct {
	s    string
	mult int64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"Pi", 1 << 50}, {"Ei", 1 << 60},
	{"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"P", 1e15}, {"E", 1e18},
}

func sizeError(s, why string) error {
	if why != "" {
		why += "; "
	}
	return fmt.Errorf("size %q: %s%s: %w", s, why, sizeForms, errdefs.ErrInvalidArgument)
}

// ParseBytes reads a size in bytes (see the package doc). A fraction of a
// byte is rounded up, as Kubernetes does ("0.1Ki" is 103).
func ParseBytes(s string) (int64, error) {
	num, mult := s, int64(1)
	for _, u := range suffixes {
		if t, ok := strings.CutSuffix(s, u.s); ok {
			num, mult = t, u.mult
			break
		}
	}
	if why := unitHint(s); why != "" {
		return 0, sizeError(s, why)
	}
	v, ok := decimalTimes(num, mult)
	if !ok {
		return 0, sizeError(s, "")
	}
	if !v.IsInt64() {
		return 0, sizeError(s, "too large")
	}
	return v.Int64(), nil
}

// unitHint explains the usual mistakes; "" when there is none to explain.
func unitHint(s string) string {
	if s == "" {
		return "empty"
	}
	if strings.ContainsAny(s, " \t\r\n") {
		return "contains spaces"
	}
	if strings.HasPrefix(s, "-") {
		return "negative"
	}
	i := strings.IndexFunc(s, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.') })
	if i < 0 {
		return ""
	}
	num, unit := s[:i], s[i:]
	switch {
	case unit == "m":
		return fmt.Sprintf("a lower-case m means thousandths in a quantity: for mebibytes write %sMi", num)
	case unit == "K":
		return fmt.Sprintf("write %sKi (1024) or %sk (1000)", num, num)
	case len(unit) == 2 && (unit[1] == 'B' || unit[1] == 'b') && strings.ContainsRune("kKmMgGtTpPeE", rune(unit[0])):
		up := strings.ToUpper(unit[:1])
		if up == "K" {
			return fmt.Sprintf("write %sKi (1024) or %sk (1000)", num, num)
		}
		return fmt.Sprintf("write %s%si (powers of 1024) or %s%s (powers of 1000)", num, up, num, up)
	case strings.HasSuffix(unit, "iB"):
		return fmt.Sprintf("write %s%s, without the B", num, strings.TrimSuffix(unit, "B"))
	case unit == "B" || unit == "b":
		return fmt.Sprintf("write %s, without the B", num)
	case (unit[0] == 'e' || unit[0] == 'E') && len(unit) > 1 && strings.ContainsRune("0123456789+-", rune(unit[1])):
		return "exponents are not accepted"
	}
	return ""
}

// decimalTimes parses num, digits with at most one '.', times mult, rounded
// up to an integer. Digits must stand on both sides of the point.
func decimalTimes(num string, mult int64) (*big.Int, bool) {
	whole, frac, hasPoint := strings.Cut(num, ".")
	if whole == "" || hasPoint && frac == "" || !digits(whole) || !digits(frac) || len(num) > 40 {
		return nil, false
	}
	n, _ := new(big.Int).SetString(whole+frac, 10)
	n.Mul(n, big.NewInt(mult))
	den := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil)
	q, r := new(big.Int).QuoRem(n, den, new(big.Int))
	if r.Sign() > 0 {
		q.Add(q, big.NewInt(1))
	}
	return q, true
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// FormatBytes writes n in the grammar ParseBytes reads, exactly
// (ParseBytes(FormatBytes(n)) == n): in the largest binary unit in which it
// needs at most three decimals ("512Mi", "1.5Gi", "300.5Mi"), or as a
// plain number of bytes. Use it wherever a size may be read back or typed
// into a spec (messages, configs); tables use DisplayBytes.
func FormatBytes(n int64) string {
	if n < 0 {
		return strconv.FormatInt(n, 10) // not a size; written as is
	}
	for i := 5; i >= 0; i-- {
		u := suffixes[i]
		if n < u.mult {
			continue
		}
		// n/mult with three decimals is exact when n*1000 is a multiple
		// of mult.
		whole, rem := n/u.mult, n%u.mult
		milli := new(big.Int).Mul(big.NewInt(rem), big.NewInt(1000))
		q, r := new(big.Int).QuoRem(milli, big.NewInt(u.mult), new(big.Int))
		if r.Sign() != 0 {
			continue
		}
		s := strconv.FormatInt(whole, 10)
		if f := q.Int64(); f != 0 {
			s += strings.TrimRight(fmt.Sprintf(".%03d", f), "0")
		}
		return s + u.s
	}
	return strconv.FormatInt(n, 10)
}

// DisplayBytes writes n for a table column the way docker does, rounded
// to one decimal in the largest binary unit: "31.5MiB", "512B". It is
// for people only: the "iB" form is not the input grammar and the
// rounding loses bytes, which is why it is a second function next to
// FormatBytes rather than the same one.
func DisplayBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// cpuForms is what a CPU error says is accepted.
const cpuForms = `want thousandths of a CPU like "250m", or CPUs like "0.5" or "2"`

func cpuError(s, why string) error {
	if why != "" {
		why += "; "
	}
	return fmt.Errorf("cpu %q: %s%s: %w", s, why, cpuForms, errdefs.ErrInvalidArgument)
}

// MaxMilliCPU bounds ParseMilliCPU: a million CPUs.
const MaxMilliCPU = 1e9

// ParseMilliCPU reads a CPU amount in thousandths of a CPU: "250m" is 250,
// "0.5" is 500, "2" is 2000. Finer than a thousandth is refused.
func ParseMilliCPU(s string) (int64, error) {
	if s == "" {
		return 0, cpuError(s, "empty")
	}
	if strings.ContainsAny(s, " \t\r\n") {
		return 0, cpuError(s, "contains spaces")
	}
	if t, ok := strings.CutSuffix(s, "m"); ok {
		if t == "" || !digits(t) || len(t) > 12 {
			return 0, cpuError(s, "")
		}
		n, err := strconv.ParseInt(t, 10, 64)
		if err != nil || n > MaxMilliCPU {
			return 0, cpuError(s, "")
		}
		return n, nil
	}
	whole, frac, _ := strings.Cut(s, ".")
	if len(frac) > 3 {
		return 0, cpuError(s, "finer than a thousandth of a CPU")
	}
	v, ok := decimalTimes(s, 1000)
	if !ok || !v.IsInt64() || v.Int64() > MaxMilliCPU || len(whole) > 12 {
		return 0, cpuError(s, "")
	}
	return v.Int64(), nil
}

// FormatMilliCPU writes m in the grammar ParseMilliCPU reads: "2" for
// whole CPUs, "250m" otherwise.
func FormatMilliCPU(m int64) string {
	if m%1000 == 0 {
		return strconv.FormatInt(m/1000, 10)
	}
	return strconv.FormatInt(m, 10) + "m"
}
