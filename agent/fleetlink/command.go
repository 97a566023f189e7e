package fleetlink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/sync/sign"
	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/sync/wire"
)

// maxCommands is how many commands run at once; beyond it a command is
// answered "busy". A command's output is bounded by the wire's result size.
const maxCommands = 4

// commands runs the fleet's requests (log tails, restarts) on a bounded
// set of goroutines that Run waits for.
type commands struct {
	l     *Link
	guard *sign.ReplayGuard // ids of commands accepted and not yet expired (loop only)
	sem   chan struct{}     // one slot per running command
	busy  chan struct{}     // one "busy" answer in flight at most; more are dropped
	wg    sync.WaitGroup
}

func newCommands(l *Link, saved []byte) (*commands, error) {
	g := sign.NewReplayGuard(0)
	if len(saved) > 0 {
		if err := g.UnmarshalBinary(saved); err != nil {
			// Without its guard the device could run a command twice:
			// refuse commands until the saved ones have expired.
			l.log.Warn().Err(err).Msg("command replay guard unreadable: starting empty")
			g = sign.NewReplayGuard(0)
		}
	}
	return &commands{l: l, guard: g, sem: make(chan struct{}, maxCommands), busy: make(chan struct{}, 1)}, nil
}

// handle takes one command message from the broker, on the link's loop:
// it verifies the signature, the device, the expiry and that the command
// was not seen before (recording it, durably, before it runs), then runs
// it on a goroutine of its own, or answers "busy". A refusal is reported
// (coalesced) and not answered: nobody the fleet trusts asked.
func (c *commands) handle(ctx context.Context, payload []byte) {
	l := c.l
	now := l.floor.Now()
	cmd, err := sign.VerifyCommandMessage(l.pub, payload, sign.CommandExpect{
		DeviceID: l.id, Now: now, Floor: now, ClockUntrusted: l.floor.Untrusted(),
	}, c.guard)
	if err != nil {
		l.reject(wire.EventRejectedCommand, err, "")
		return
	}
	b, err := c.guard.MarshalBinary()
	if err == nil {
		err = l.db.SetCommandGuard(b)
	}
	if err != nil {
		// Not recorded: running it could let a replay after a crash run
		// it again.
		l.log.Error().Err(err).Str("id", cmd.ID).Msg("command not run: its id could not be recorded")
		c.go_(func() {
			c.answer(ctx, wire.CommandResult{ID: cmd.ID, Error: "the device could not record the command; try again"})
		})
		return
	}
	select {
	case c.sem <- struct{}{}:
	default:
		select {
		case c.busy <- struct{}{}:
		default:
			return // a flood: answering each would only feed it
		}
		c.go_(func() {
			defer func() { <-c.busy }()
			c.answer(ctx, wire.CommandResult{ID: cmd.ID, Error: fmt.Sprintf("busy: %d commands are running, try again", maxCommands)})
		})
		return
	}
	c.go_(func() {
		defer func() { <-c.sem }()
		c.answer(ctx, c.run(cmd))
	})
}

func (c *commands) go_(f func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
}

// wait waits for every command goroutine.
func (c *commands) wait() { c.wg.Wait() }

// run carries out one command.
func (c *commands) run(cmd wire.Command) wire.CommandResult {
	res := wire.CommandResult{ID: cmd.ID, OK: true}
	var err error
	switch cmd.Kind {
	case wire.CommandLogs:
		res.Output, err = c.logs(cmd)
	case wire.CommandRestart:
		err = c.l.agent.Restart(cmd.App, cmd.Container)
		if err == nil {
			res.Output = "restarting app " + cmd.App
			if cmd.Container != "" {
				res.Output += ", container " + cmd.Container
			}
		}
	default:
		err = fmt.Errorf("unknown command %q: %w", cmd.Kind, errdefs.ErrInvalidArgument)
	}
	if err != nil {
		res.OK, res.Error = false, c.public(cmd, err)
	}
	return res
}

// logs collects the last lines of a container's output, keeping the end
// when it is larger than a result may carry.
func (c *commands) logs(cmd wire.Command) (string, error) {
	n := cmd.Lines
	if n <= 0 {
		n = 100
	}
	budget := wire.MaxCommandResultSize / 2
	var lines []string
	size := 0
	err := c.l.agent.Logs(cmd.App, cmd.Container, n, func(line string) bool {
		lines = append(lines, line)
		size += len(line) + 1
		for size > budget && len(lines) > 0 {
			size -= len(lines[0]) + 1
			lines = lines[1:]
		}
		return true
	})
	if err != nil {
		return "", err
	}
	var sb strings.Builder
	for _, s := range lines {
		sb.WriteString(s)
		sb.WriteByte('\n')
	}
	out := sb.String()
	if len(out) > budget {
		out = out[len(out)-budget:]
	}
	return out, nil
}

// public is what the operator is told of a failed command: the agent's
// own message for what they asked wrong, a pointer to the device's log
// for anything else (whose message may name host paths).
func (c *commands) public(cmd wire.Command, err error) string {
	switch {
	case errdefs.IsNotFound(err), errdefs.IsInvalidArgument(err), errdefs.IsFailedPrecondition(err):
		return err.Error()
	}
	c.l.log.Warn().Err(err).Str("command", string(cmd.Kind)).Str("id", cmd.ID).Str("app", cmd.App).Msg("command failed")
	return fmt.Sprintf("%s of app %s failed on the device; its log says why", cmd.Kind, cmd.App)
}

// answer publishes a command's result.
func (c *commands) answer(ctx context.Context, res wire.CommandResult) {
	b, err := wire.Encode(&res)
	if errors.Is(err, wire.ErrTooLarge) {
		res.Output = res.Output[max(0, len(res.Output)-wire.MaxCommandResultSize/2):]
		b, err = wire.Encode(&res)
	}
	if err != nil {
		c.l.log.Warn().Err(err).Str("id", res.ID).Msg("command result not encoded")
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.l.cl.Publish(pctx, topic.MustBuild(c.l.id, topic.CommandResult), b, false); err != nil {
		c.l.log.Warn().Err(err).Str("id", res.ID).Msg("command result not sent")
	}
}
