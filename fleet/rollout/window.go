package rollout

import "github.com/tender-edge/tender/sync/wire"

// Window is a maintenance window; its grammar is the app spec's
// (rollout.windows), defined in sync/wire.
type Window = wire.Window

// Schedule is a parsed Window.Schedule.
type Schedule = wire.Schedule

// ParseSchedule parses a maintenance window schedule (see wire.Window).
func ParseSchedule(s string) (Schedule, error) { return wire.ParseSchedule(s) }

func matches(selector, labels map[string]string) bool { return wire.Matches(selector, labels) }
