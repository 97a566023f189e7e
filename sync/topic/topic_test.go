package topic

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestValidDeviceID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"a", true},
		{"gw-0001", true},
		{"berlin.gw_7", true},
		{"0abc", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"-gw", false},
		{".gw", false},
		{"_gw", false},
		{"GW", false},
		{"gw/1", false},
		{"gw+", false},
		{"gw#", false},
		{"+", false},
		{"#", false},
		{"%u", false},
		{"gw 1", false},
		{"gw\x00", false},
		{"gé", false},
	}
	for _, tt := range tests {
		err := ValidDeviceID(tt.id)
		if (err == nil) != tt.ok {
			t.Errorf("ValidDeviceID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
		if err != nil && !errdefs.IsInvalidArgument(err) {
			t.Errorf("ValidDeviceID(%q) = %v, not an invalid argument", tt.id, err)
		}
	}
}

func TestBuildParse(t *testing.T) {
	want := map[Kind]string{
		Desired:       "tender/v1/devices/gw-1/desired",
		Reported:      "tender/v1/devices/gw-1/reported",
		Events:        "tender/v1/devices/gw-1/events",
		Presence:      "tender/v1/devices/gw-1/presence",
		Command:       "tender/v1/devices/gw-1/cmd",
		CommandResult: "tender/v1/devices/gw-1/cmd/result",
	}
	if len(want) != len(Kinds) {
		t.Fatalf("test covers %d kinds, package has %d", len(want), len(Kinds))
	}
	for _, k := range Kinds {
		got, err := Build("gw-1", k)
		if err != nil {
			t.Fatalf("Build(%s): %v", k, err)
		}
		if got != want[k] {
			t.Errorf("Build(%s) = %q, want %q", k, got, want[k])
		}
		id, pk, err := Parse(got)
		if err != nil || id != "gw-1" || pk != k {
			t.Errorf("Parse(%q) = %q, %q, %v", got, id, pk, err)
		}
	}
}

func TestBuild_Rejects(t *testing.T) {
	if _, err := Build("gw/x", Reported); !errdefs.IsInvalidArgument(err) {
		t.Errorf("slash id: %v", err)
	}
	if _, err := Build("+", Reported); !errdefs.IsInvalidArgument(err) {
		t.Errorf("wildcard id: %v", err)
	}
	if _, err := Build("gw", Kind("errors")); !errdefs.IsInvalidArgument(err) {
		t.Errorf("unknown kind: %v", err)
	}
}

func TestParse_Rejects(t *testing.T) {
	tests := []struct {
		topic string
		want  string // in the message; every error is an invalid argument
	}{
		{"tender/v2/devices/gw/desired", "not a tender device topic"},
		{"tender/v1/devices/", "not a tender device topic"},
		{"tender/v1/devices/gw", "not a tender device topic"},
		{"tender/v1/nodes/gw/desired", "not a tender device topic"},
		{"$SYS/broker/uptime", "not a tender device topic"},
		{"tender/v1/devices/+/desired", "device id"},
		{"tender/v1/devices/#", "not a tender device topic"},
		{"tender/v1/devices/GW/desired", "device id"},
		{"tender/v1/devices/gw/desired/x", "unknown kind"},
		{"tender/v1/devices/gw/cmd/", "unknown kind"},
		{"tender/v1/devices/gw/", "unknown kind"},
		{"tender/v1/devices/gw/errors", "unknown kind"},
	}
	for _, tt := range tests {
		_, _, err := Parse(tt.topic)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, want an invalid argument saying %q", tt.topic, err, tt.want)
		}
	}
}

func TestAllDevices(t *testing.T) {
	got, err := AllDevices(Reported)
	if err != nil || got != "tender/v1/devices/+/reported" {
		t.Errorf("AllDevices(reported) = %q, %v", got, err)
	}
	if _, err := AllDevices("x"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("AllDevices(x) = %v", err)
	}
}
