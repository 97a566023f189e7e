package mqttc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tender-edge/tender/sync/outbox"
	"github.com/tender-edge/tender/sync/topic"
)

// Drain sends the outbox's pending items for device deviceID, in order,
// while the session is up: the report to its retained reported topic,
// events to the events topic. Each item is acked in the outbox only after
// the broker's PUBACK. When the outbox is empty it waits for new items; when
// the session drops it waits for the next one and starts over from Pending,
// so an item whose PUBACK was lost is sent again (at least once; events
// carry a Seq for the receiver to drop duplicates). It returns when ctx
// ends, or on an outbox error.
func Drain(ctx context.Context, c *Client, ob *outbox.Outbox, deviceID string) error {
	reported, err := topic.Build(deviceID, topic.Reported)
	if err != nil {
		return fmt.Errorf("drain outbox: %w", err)
	}
	events := topic.MustBuild(deviceID, topic.Events)
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
		for _, it := range items {
			t, retained := events, false
			if it.Kind == outbox.Report {
				t, retained = reported, true
			}
			if err := c.Publish(ctx, t, it.Payload, retained); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if !errors.Is(err, ErrNotConnected) && !errors.Is(err, ErrConnectionLost) {
					// Neither ours nor the link's: do not spin on it.
					c.log.Warn().Err(err).Str("topic", t).Msg("outbox publish failed")
					if err := sleep(ctx, time.Second); err != nil {
						return err
					}
				}
				break
			}
			if err := ob.Ack(it); err != nil {
				return fmt.Errorf("drain outbox: %w", err)
			}
		}
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
