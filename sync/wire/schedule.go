package wire

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
)

// Window is a maintenance window of an app's rollout: devices whose labels include every pair
// of Selector are started only while Schedule is open in their own time
// zone. A device that matches no window may be started at any time; one
// that matches several may be started while any of them is open.
//
// Schedule is one or more ranges separated by ";", each "DAYS HH:MM-HH:MM":
//
//	DAYS   "*" or "daily" (every day), or a comma-separated list of days
//	       (mon tue wed thu fri sat sun) and day ranges ("mon-fri",
//	       "fri-mon" wraps over the week end)
//	HH:MM  00:00 to 24:00; the range includes its start and excludes its end
//
// A range whose end is not after its start crosses midnight and belongs to
// the day it starts on: "fri 22:00-02:00" is open from Friday 22:00 to
// Saturday 02:00. Examples: "mon-fri 01:00-05:00", "sat,sun 00:00-24:00",
// "daily 23:00-01:00; sun 10:00-12:00".
type Window struct {
	Selector map[string]string `json:"selector"`
	Schedule string            `json:"schedule"`
}

// span is one parsed range of a schedule: the days it starts on and its
// start and end in minutes after midnight (end <= start: crosses midnight).
type span struct {
	days       [7]bool // indexed by time.Weekday
	start, end int
}

// Schedule is a parsed Window.Schedule (see Window).
type Schedule []span

var dayNames = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// ParseSchedule parses a maintenance window schedule (see Window). Errors
// match errdefs.ErrInvalidArgument.
func ParseSchedule(s string) (Schedule, error) {
	var out Schedule
	for part := range strings.SplitSeq(s, ";") {
		part = strings.TrimSpace(part)
		days, hours, ok := strings.Cut(part, " ")
		if !ok {
			return nil, fmt.Errorf("schedule %q: range %q: want \"DAYS HH:MM-HH:MM\", e.g. \"mon-fri 01:00-05:00\": %w", s, part, errdefs.ErrInvalidArgument)
		}
		var sp span
		if err := parseDays(strings.TrimSpace(days), &sp.days); err != nil {
			return nil, fmt.Errorf("schedule %q: %v: %w", s, err, errdefs.ErrInvalidArgument)
		}
		from, to, ok := strings.Cut(strings.TrimSpace(hours), "-")
		var err1, err2 error
		sp.start, err1 = parseClock(from)
		sp.end, err2 = parseClock(to)
		if !ok || err1 != nil || err2 != nil || sp.start == 24*60 {
			return nil, fmt.Errorf("schedule %q: hours %q: want HH:MM-HH:MM between 00:00 and 24:00: %w", s, hours, errdefs.ErrInvalidArgument)
		}
		if sp.start == sp.end {
			return nil, fmt.Errorf("schedule %q: hours %q: empty range (for a whole day write 00:00-24:00): %w", s, hours, errdefs.ErrInvalidArgument)
		}
		out = append(out, sp)
	}
	return out, nil
}

func parseDays(s string, days *[7]bool) error {
	if s == "*" || s == "daily" {
		for i := range days {
			days[i] = true
		}
		return nil
	}
	for item := range strings.SplitSeq(s, ",") {
		a, b, isRange := strings.Cut(item, "-")
		from, ok1 := dayNames[a]
		to, ok2 := dayNames[b]
		if !isRange {
			to, ok2 = from, ok1
		}
		if !ok1 || !ok2 {
			return fmt.Errorf("days %q: want *, daily, or days (mon..sun) and ranges (mon-fri) separated by commas", s)
		}
		for d := from; ; d = (d + 1) % 7 {
			days[d] = true
			if d == to {
				break
			}
		}
	}
	return nil
}

// parseClock reads "HH:MM" as minutes after midnight, 00:00 to 24:00.
func parseClock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	if !ok || len(h) != 2 || len(m) != 2 {
		return 0, fmt.Errorf("%q: want HH:MM", s)
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hh < 0 || mm < 0 || mm > 59 || hh > 24 || hh == 24 && mm != 0 {
		return 0, fmt.Errorf("%q: want HH:MM", s)
	}
	return hh*60 + mm, nil
}

// Open reports whether the schedule is open at t (already in the device's
// time zone).
func (s Schedule) Open(t time.Time) bool {
	d := t.Weekday()
	prev := (d + 6) % 7
	m := t.Hour()*60 + t.Minute()
	for _, sp := range s {
		if sp.start < sp.end {
			if sp.days[d] && m >= sp.start && m < sp.end {
				return true
			}
			continue
		}
		if sp.days[d] && m >= sp.start || sp.days[prev] && m < sp.end {
			return true
		}
	}
	return false
}

// Matches reports whether labels hold every pair of the selector.
func Matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
