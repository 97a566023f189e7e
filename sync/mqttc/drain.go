package mqttc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tender-edge/tender/sync/outbox"
	"github.com/tender-edge/tender/sync/topic"
)

// DrainWindow is how many publishes Drain keeps in flight: over a link
// with a long round trip, one at a time would send a handful a second.
const DrainWindow = 16

// Drain sends the outbox's pending items for device deviceID, in order,
// while the session is up: the report to its retained reported topic,
// events to the events topic. Up to DrainWindow publishes are in flight at
// once (MQTT keeps them in order on one connection); each item is acked in
// the outbox only after the broker's PUBACK, and only once every item
// before it was acked. When the outbox is empty it waits for new items;
// when the session drops it waits for the next one and starts over from
// Pending, so an item whose PUBACK was lost is sent again (at least once;
// events carry a Seq for the receiver to drop duplicates). It returns when
// ctx ends, or on an outbox error.
func Drain(ctx context.Context, c *Client, ob *outbox.Outbox, deviceID string) error {
	reported, err := topic.Build(deviceID, topic.Reported)
	if err != nil {
		return fmt.Errorf("drain outbox: %w", err)
	}
	events := topic.MustBuild(deviceID, topic.Events)
	type inflight struct {
		item  outbox.Item
		topic string
		wait  func(context.Context) error
	}
	for {
		if err := c.WaitConnected(ctx); err != nil {
			return err
		}
		items, err := ob.Pending()
		if err != nil {
			return fmt.Errorf("drain outbox: %w", err)
		}
		if len(items) == 0 {
			select {
			case <-ob.Notify():
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		var window []inflight
		failed := false
		// settle waits for the oldest publish in flight and acks it.
		settle := func() error {
			f := window[0]
			window = window[1:]
			if err := f.wait(ctx); err != nil {
				failed = true
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if !errors.Is(err, ErrNotConnected) && !errors.Is(err, ErrConnectionLost) {
					// Neither ours nor the link's: do not spin on it.
					c.log.Warn().Err(err).Str("topic", f.topic).Msg("outbox publish failed")
					return sleep(ctx, time.Second)
				}
				return nil
			}
			if err := ob.Ack(f.item); err != nil {
				return fmt.Errorf("drain outbox: %w", err)
			}
			return nil
		}
		for _, it := range items {
			if len(window) == DrainWindow {
				if err := settle(); err != nil {
					return err
				}
			}
			if failed {
				break
			}
			t, retained := events, false
			if it.Kind == outbox.Report {
				t, retained = reported, true
			}
			window = append(window, inflight{item: it, topic: t, wait: c.publishAsync(t, it.Payload, retained)})
		}
		for len(window) > 0 && !failed {
			if err := settle(); err != nil {
				return err
			}
		}
		// After a failure the rest of the window is left to finish on its
		// own; those items stay pending and go again on the next round.
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
