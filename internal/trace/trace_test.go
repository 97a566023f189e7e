package trace

import (
	"bytes"
	"strings"
	"testing"
)

func TestTimeline_ClipsOverlapsAndNeverExceedsTheSpan(t *testing.T) {
	ps := []Phase{
		{"shim", "place", 10, 30},
		{"init", "start", 5, 20},   // began first: keeps 5..20
		{"init", "inside", 12, 18}, // wholly covered: 0
		{"shim", "later", 40, 50},
	}
	tl := Timeline(ps)
	got := ""
	var sum int64
	for _, p := range tl {
		got += p.Name + " "
		sum += p.End - p.Start
		if p.End < p.Start {
			t.Fatalf("negative phase %+v", p)
		}
	}
	if got != "start place inside later " {
		t.Errorf("order %q", got)
	}
	if sum != 15+10+0+10 {
		t.Errorf("sum %d, want 35 (span 45 with a 10 gap)", sum)
	}
}

func TestEncodeDecode_RoundTripsAndSkipsOtherLines(t *testing.T) {
	r := &Recorder{proc: "shim"}
	r.Add(Phase{"shim", "wait", 100, 250}, Phase{"init", "rootfs-mounts", 1, 2})
	var b bytes.Buffer
	if err := r.Encode(&b); err != nil {
		t.Fatal(err)
	}
	b.WriteString("ok\n{\"status\":\"exited\"}\ntrace x y 5 4\n")
	ps := DecodeAll(&b)
	if len(ps) != 2 || ps[0] != r.phases[0] || ps[1] != r.phases[1] {
		t.Errorf("decoded %+v", ps)
	}
}

func TestNilRecorderRecordsNothing(t *testing.T) {
	var r *Recorder
	r.Mark("x")
	r.Skip()
	r.Add(Phase{})
	if r.Phases() != nil || r.Encode(nil) != nil {
		t.Error("a nil recorder recorded")
	}
}

func TestNew_ProcessStartFromProc(t *testing.T) {
	t.Setenv(EnvT0, "")
	r := New("test")
	if len(r.phases) != 1 || r.phases[0].Name != "process-start" || r.phases[0].Duration() <= 0 {
		t.Fatalf("phases %+v", r.phases)
	}
	var b bytes.Buffer
	Print(&b, r.Phases())
	if !strings.Contains(b.String(), "trace: test  process-start") {
		t.Errorf("printed %q", b.String())
	}
}
