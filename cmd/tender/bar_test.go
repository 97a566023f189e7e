package main

import (
	"testing"

	"github.com/tender-edge/tender/fleet/api"
)

func TestBar(t *testing.T) {
	for _, tc := range []struct {
		w    api.WaveCounts
		want string
	}{
		{api.WaveCounts{Devices: 0}, "[          ]"},
		{api.WaveCounts{Devices: 10}, "[..........]"},
		{api.WaveCounts{Devices: 10, Updated: 10, Healthy: 10}, "[##########]"},
		{api.WaveCounts{Devices: 10, Updated: 5, Healthy: 3, Failed: 2}, "[###==xx...]"},
		{api.WaveCounts{Devices: 1000, Updated: 1, Healthy: 0, Failed: 1}, "[=x........]"}, // tiny parts still show
		{api.WaveCounts{Devices: 4, Updated: 2, Healthy: 1, Failed: 1, RolledBack: 1}, "[##===xxxxx]"},
	} {
		if got := bar(tc.w, 10); got != tc.want {
			t.Errorf("bar(%+v) = %s, want %s", tc.w, got, tc.want)
		}
	}
}
