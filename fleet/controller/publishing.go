package controller

import (
	"context"
	"sync"

	"github.com/tender-edge/tender/sync/wire"
)

// publishers is how many devices a pass publishes to at once. Each
// publish writes the store twice (a generation, then what was published)
// and each write is an fsync: one at a time, the last wave of a rollout to
// 10,000 devices took tens of seconds; at once, the store shares each
// fsync among the writes waiting for it (bbolt's Batch).
const publishers = 32

// publishDirty publishes the desired document of every device whose apps
// changed, and returns the generation each got. The documents are made
// on the loop goroutine (they read its state); the publishes run on
// publishers goroutines.
func (c *Controller) publishDirty(ctx context.Context, lp *loop) map[string]uint64 {
	type job struct {
		dev  string
		apps []wire.App
		gen  uint64
		ok   bool
	}
	jobs := make([]job, 0, len(lp.dirty))
	for dev := range lp.dirty {
		if lp.byID[dev] == nil {
			delete(lp.dirty, dev)
			continue
		}
		jobs = append(jobs, job{dev: dev, apps: c.desiredApps(ctx, lp, dev)})
	}
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(publishers, len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				j := &jobs[i]
				res, err := c.pub.Publish(ctx, j.dev, j.apps)
				if err != nil {
					c.refusedByFence(err)
					c.log.Error().Err(err).Str("device", j.dev).Msg("publish desired state")
					continue
				}
				j.gen, j.ok = res.Generation, true
			}
		}()
	}
	for i := range jobs {
		next <- i
	}
	close(next)
	wg.Wait()
	gens := make(map[string]uint64, len(jobs))
	for _, j := range jobs {
		if j.ok {
			delete(lp.dirty, j.dev)
			gens[j.dev] = j.gen
		}
	}
	return gens
}
