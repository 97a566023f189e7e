package controller

import (
	"context"
	"time"

	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/sync/mqttc"
	"github.com/tender-edge/tender/sync/topic"
	"github.com/tender-edge/tender/sync/wire"
)

// inMsg is one decoded message of a device, on its way to the store.
type inMsg struct {
	report   *store.Report
	event    *store.Event
	presence *store.Presence
}

// receive decodes a device's message (size and schema checked by
// sync/wire), drops one whose payload names another device than its topic
// (F-08: counted and logged), answers a waiting command, and hands the
// rest to the batcher. It runs on the transport's receive path.
func (c *Controller) receive(m mqttc.Message) {
	c.log.Debug().Str("topic", m.Topic).Bytes("payload", m.Payload[:min(len(m.Payload), 12)]).Msg("received")
	id, kind, err := topic.Parse(m.Topic)
	if err != nil {
		c.malformed.Add(1)
		return
	}
	now := c.cfg.Now()
	var msg inMsg
	var payloadID string
	switch kind {
	case topic.Reported:
		if len(m.Payload) == 0 {
			return // a cleared retained report
		}
		r, err := wire.DecodeReported(m.Payload)
		if err != nil {
			c.bad(id, kind, err)
			return
		}
		payloadID = r.DeviceID
		msg.report = &store.Report{Device: id, Received: now, Report: r}
	case topic.Events:
		e, err := wire.DecodeEvent(m.Payload)
		if err != nil {
			c.bad(id, kind, err)
			return
		}
		payloadID = e.DeviceID
		msg.event = &store.Event{Device: id, Received: now, Event: e}
	case topic.Presence:
		if len(m.Payload) == 0 {
			return
		}
		p, err := wire.ParsePresence(m.Payload)
		if err != nil {
			c.bad(id, kind, err)
			return
		}
		payloadID = id
		msg.presence = &store.Presence{Device: id, Received: now, Presence: p}
	case topic.CommandResult:
		r, err := wire.DecodeCommandResult(m.Payload)
		if err != nil {
			c.bad(id, kind, err)
			return
		}
		c.answer(id, r)
		return
	default:
		return
	}
	if payloadID != id {
		// Counted and logged here; the store drops it and flags the
		// sender's record (F-08).
		c.refused.Add(1)
		c.log.Warn().Str("device", id).Str("payload_device", payloadID).Str("kind", string(kind)).
			Msg("message names another device than its topic: dropped, device flagged")
	}
	select {
	case c.in <- msg:
	case <-c.stopped:
	}
}

func (c *Controller) bad(id string, kind topic.Kind, err error) {
	c.malformed.Add(1)
	c.log.Warn().Str("device", id).Str("kind", string(kind)).Err(err).Msg("malformed message from device: dropped")
}

// ingest gathers messages for up to IngestDelay (or IngestBatch of them)
// and stores them in one write, then kicks the loop.
func (c *Controller) ingest(ctx context.Context) {
	for {
		var b store.Batch
		n := 0
		add := func(m inMsg) {
			n++
			switch {
			case m.report != nil:
				b.Reports = append(b.Reports, *m.report)
			case m.event != nil:
				b.Events = append(b.Events, *m.event)
			case m.presence != nil:
				b.Presence = append(b.Presence, *m.presence)
			}
		}
		select {
		case <-ctx.Done():
			return
		case m := <-c.in:
			add(m)
		}
		timer := time.NewTimer(c.cfg.IngestDelay)
	gather:
		for n < c.cfg.IngestBatch {
			select {
			case m := <-c.in:
				add(m)
			case <-timer.C:
				break gather
			case <-ctx.Done():
				break gather
			}
		}
		timer.Stop()
		res, err := c.st.Ingest.Ingest(context.WithoutCancel(ctx), b)
		if err != nil {
			c.log.Error().Err(err).Int("messages", n).Msg("ingest batch lost")
			continue
		}
		c.ingested.Add(uint64(res.Reports + res.Events + res.Presence))
		if c.met.Ingested != nil {
			c.met.Ingested(res.Reports, res.Events)
		}
		if res.Refused > 0 {
			c.storeRefused.Add(uint64(res.Refused))
		}
		c.log.Debug().Int("reports", res.Reports).Int("presence", res.Presence).Int("stale", res.StaleReports).Msg("ingested")
		if len(res.Unknown) > 0 {
			c.log.Debug().Strs("devices", res.Unknown).Msg("messages of unknown or revoked devices skipped")
		}
		if res.Reports > 0 || res.Presence > 0 {
			c.Kick()
		}
	}
}
