package wire_test

import (
	"errors"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/tender-edge/tender/sync/wire"
)

func TestParseSchedule_Open(t *testing.T) {
	// 2026-11-30 is a Monday.
	at := func(day int, hm string) time.Time {
		tm, err := time.Parse("15:04", hm)
		if err != nil {
			t.Fatal(err)
		}
		return time.Date(2026, 11, 30+day, tm.Hour(), tm.Minute(), 0, 0, time.UTC)
	}
	for _, tc := range []struct {
		sched string
		t     time.Time
		open  bool
	}{
		{"mon-fri 01:00-05:00", at(0, "01:00"), true},
		{"mon-fri 01:00-05:00", at(0, "04:59"), true},
		{"mon-fri 01:00-05:00", at(0, "05:00"), false},
		{"mon-fri 01:00-05:00", at(0, "00:59"), false},
		{"mon-fri 01:00-05:00", at(5, "02:00"), false}, // saturday
		{"fri-mon 01:00-05:00", at(5, "02:00"), true},  // wraps over the week end
		{"fri-mon 01:00-05:00", at(1, "02:00"), false}, // tuesday
		{"sat,sun 00:00-24:00", at(6, "23:59"), true},
		{"sat,sun 00:00-24:00", at(7, "00:00"), false}, // monday
		{"fri 22:00-02:00", at(4, "23:00"), true},      // friday night
		{"fri 22:00-02:00", at(5, "01:59"), true},      // belongs to friday
		{"fri 22:00-02:00", at(5, "22:30"), false},     // saturday night
		{"fri 22:00-02:00", at(4, "01:00"), false},     // thursday night is not friday's
		{"daily 23:00-01:00; sun 10:00-12:00", at(6, "11:00"), true},
		{"daily 23:00-01:00; sun 10:00-12:00", at(3, "00:30"), true},
		{"* 12:00-13:00", at(2, "12:30"), true},
	} {
		s, err := wire.ParseSchedule(tc.sched)
		if err != nil {
			t.Fatalf("%q: %v", tc.sched, err)
		}
		if got := s.Open(tc.t); got != tc.open {
			t.Errorf("%q at %s: open=%v, want %v", tc.sched, tc.t.Format("Mon 15:04"), got, tc.open)
		}
	}
}

func TestParseSchedule_Refuses(t *testing.T) {
	for _, s := range []string{"", "mon", "mon 01:00", "mon 1:00-5:00", "funday 01:00-02:00", "mon-fri 25:00-26:00",
		"mon 24:00-01:00", "mon 01:00-01:00", "mon 01:60-02:00", "mon 01:00-24:01", "mon,,tue 01:00-02:00"} {
		if _, err := wire.ParseSchedule(s); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%q: err = %v, want invalid argument", s, err)
		}
	}
}
