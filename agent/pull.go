package agent

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/runtime/image"
)

// puller runs image pulls in the background, one per image at a time,
// and backs off after a failure (capped, never giving up), waking the loop
// when a pull ends or a backoff expires.
type puller struct {
	images Images
	pulled func(ref string) // after each successful pull
	reg    image.RegistryConfig
	wake   func()
	now    func() time.Time
	log    zerolog.Logger

	mu       sync.Mutex
	inflight map[string]bool
	failures map[string]pullFailure
	wg       sync.WaitGroup
	ctx      context.Context
	cancel   context.CancelFunc
}

type pullFailure struct {
	count int
	until time.Time
}

const (
	pullBackoffMin = 2 * time.Second
	pullBackoffMax = 5 * time.Minute
)

func newPuller(images Images, reg image.RegistryConfig, wake func(), now func() time.Time, log zerolog.Logger) *puller {
	ctx, cancel := context.WithCancel(context.Background())
	return &puller{images: images, reg: reg, wake: wake, now: now, log: log,
		inflight: map[string]bool{}, failures: map[string]pullFailure{}, ctx: ctx, cancel: cancel}
}

// start makes ctx the parent of every pull.
func (p *puller) start(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cancel()
	p.ctx, p.cancel = context.WithCancel(ctx)
}

// request starts a pull of ref unless one runs or its backoff has not
// expired.
func (p *puller) request(ref string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inflight[ref] {
		return
	}
	if f, ok := p.failures[ref]; ok && p.now().Before(f.until) {
		return
	}
	p.inflight[ref] = true
	ctx := p.ctx
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		start := p.now()
		img, err := p.images.Pull(ctx, ref, image.PullOptions{Registries: p.reg})
		p.mu.Lock()
		delete(p.inflight, ref)
		var retryIn time.Duration
		if err != nil {
			f := p.failures[ref]
			f.count++
			retryIn = min(pullBackoffMin<<min(f.count-1, 10), pullBackoffMax)
			f.until = p.now().Add(retryIn)
			p.failures[ref] = f
		} else {
			delete(p.failures, ref)
		}
		p.mu.Unlock()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.log.Warn().Err(err).Str("image", ref).Dur("retry_in", retryIn).Msg("pull failed")
			time.AfterFunc(retryIn, p.wake)
			return
		}
		p.log.Info().Str("image", ref).Str("digest", img.Digest.String()).Dur("took", p.now().Sub(start)).Msg("image pulled")
		if p.pulled != nil {
			p.pulled(ref)
		}
		p.wake()
	}()
}

// wait cancels the pulls under way and waits for them; their partial
// downloads stay for the next start to resume.
func (p *puller) wait() {
	p.mu.Lock()
	p.cancel()
	p.mu.Unlock()
	p.wg.Wait()
}
