package quantity

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "4096": 4096, "1Ki": 1024, "32Mi": 32 << 20, "1Gi": 1 << 30, "2Ti": 2 << 40, "1Pi": 1 << 50, "7Ei": 7 << 60,
		"1k": 1000, "64M": 64e6, "1G": 1e9, "3T": 3e12, "1P": 1e15, "9E": 9e18,
		"1.5Ki": 1536, "1.5Gi": 3 << 29, "0.5Mi": 1 << 19, "300.5Mi": 315097088,
		"0.1Ki":               103, // rounded up, as Kubernetes does
		"9223372036854775807": math.MaxInt64,
	} {
		got, err := ParseBytes(in)
		if err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

func TestParseBytes_Refuses(t *testing.T) {
	for in, hint := range map[string]string{
		// The four forms issue 8 found accepted by one parser and refused by the other.
		"64MB":  "write 64Mi (powers of 1024) or 64M (powers of 1000)",
		"64mb":  "write 64Mi (powers of 1024) or 64M (powers of 1000)",
		"1e3":   "exponents are not accepted",
		" 64Mi": "contains spaces",
		// Lower-case m is milli in Kubernetes.
		"64m":                 "for mebibytes write 64Mi",
		"64K":                 "write 64Ki (1024) or 64k (1000)",
		"1KB":                 "write 1Ki (1024) or 1k (1000)",
		"1MiB":                "write 1Mi, without the B",
		"10b":                 "write 10, without the B",
		"-1Mi":                "negative",
		"":                    "empty",
		"64Mi ":               "contains spaces",
		"1e30Gi":              "exponents",
		"8Ei":                 "too large",
		"9223372036854775808": "too large",
		"Mi":                  "", "12Qi": "", "NaN": "", "Inf": "", ".5Mi": "", "5.Mi": "", "1.2.3": "", "0x10": "", "1_000": "", "+1": "", "１": "",
		"64mi": "", "64gi": "", "1i": "",
	} {
		_, err := ParseBytes(in)
		if err == nil {
			t.Errorf("ParseBytes(%q) accepted", in)
			continue
		}
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseBytes(%q) = %v: not an invalid argument", in, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, hint) || !strings.Contains(msg, "like 64Mi or 1.5Gi") || !strings.Contains(msg, `"`+in+`"`) {
			t.Errorf("ParseBytes(%q) = %q: want the value, %q and the accepted forms", in, msg, hint)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0", 1: "1", 1000: "1000", 1023: "1023", 1024: "1Ki", 1025: "1025", 1536: "1.5Ki",
		512 << 20: "512Mi", 1 << 30: "1Gi", 3 << 29: "1.5Gi", 315097088: "300.5Mi", 33030144: "31.5Mi",
		1<<20 + 1<<10: "1025Ki", math.MaxInt64: "9223372036854775807", 7 << 60: "7Ei",
	} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestDisplayBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0B", 1023: "1023B", 1024: "1.0KiB", 33554432: "32.0MiB", 33030144: "31.5MiB", 3 << 29: "1.5GiB"} {
		if got := DisplayBytes(n); got != want {
			t.Errorf("DisplayBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func FuzzBytesRoundTrip(f *testing.F) {
	for _, n := range []int64{0, 1, 1023, 1024, 1536, 33030144, 1 << 62, math.MaxInt64} {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, n int64) {
		if n < 0 {
			n = -(n + 1)
		}
		s := FormatBytes(n)
		got, err := ParseBytes(s)
		if err != nil || got != n {
			t.Fatalf("ParseBytes(FormatBytes(%d) = %q) = %d, %v", n, s, got, err)
		}
	})
}

func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"64Mi", "1.5Gi", "64MB", "1e3", " 64Mi", "0.1Ki", "9E", "8Ei"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseBytes(s)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("ParseBytes(%q) = %v: not an invalid argument", s, err)
			}
			return
		}
		if n < 0 {
			t.Fatalf("ParseBytes(%q) = %d", s, n)
		}
		// What parses formats back to the same size.
		if back, err := ParseBytes(FormatBytes(n)); err != nil || back != n {
			t.Fatalf("round trip of %q (%d) = %d, %v", s, n, back, err)
		}
	})
}

func TestParseMilliCPU(t *testing.T) {
	for in, want := range map[string]int64{"250m": 250, "0.5": 500, "2": 2000, "1.25": 1250, "0.001": 1, "1000m": 1000, "0": 0} {
		got, err := ParseMilliCPU(in)
		if err != nil || got != want {
			t.Errorf("ParseMilliCPU(%q) = %d, %v; want %d", in, got, err, want)
		}
		if back, err := ParseMilliCPU(FormatMilliCPU(got)); err != nil || back != got {
			t.Errorf("ParseMilliCPU(FormatMilliCPU(%d)) = %d, %v", got, back, err)
		}
	}
	for _, in := range []string{"", "m", "-1", "-250m", "0.0001", "1e3", "0.5m", " 1", "1 ", "2cpu", "NaN", "Inf", "0x1", "1_0", ".5", "99999999999999999999"} {
		_, err := ParseMilliCPU(in)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), `like "250m"`) {
			t.Errorf("ParseMilliCPU(%q) = %v, want an invalid argument naming the forms", in, err)
		}
	}
}

func TestDuration(t *testing.T) {
	var v struct {
		A Duration `json:"a"`
		B Duration `json:"b"`
		C Duration `json:"c"`
		D Duration `json:"d,omitzero"`
	}
	if err := json.Unmarshal([]byte(`{"a":"1m30s","b":10,"c":"ten"}`), &v); err != nil {
		t.Fatalf("a bad duration failed the whole decode: %v", err)
	}
	if v.A.Duration != 90*time.Second || v.A.Err() != nil {
		t.Errorf("a = %v, %v", v.A.Duration, v.A.Err())
	}
	for _, d := range []Duration{v.B, v.C} {
		if err := d.Err(); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), `like "10s"`) {
			t.Errorf("Err() = %v, want an invalid argument naming the forms", err)
		}
	}
	if !strings.Contains(v.C.Err().Error(), `"ten"`) || !strings.Contains(v.B.Err().Error(), "10") {
		t.Errorf("errors do not name the values: %v; %v", v.B.Err(), v.C.Err())
	}
	v.D = D(0)
	b, err := json.Marshal(v)
	if err != nil || !strings.Contains(string(b), `"a":"1m30s"`) || strings.Contains(string(b), `"d"`) {
		t.Errorf("Marshal = %s, %v", b, err)
	}
}
