package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
)

// Fence is a leader's claim on its term (SECURITY.md F-13): the key its
// election holds in the store's cluster and that key's create revision.
// The key is deleted when the leader's lease ends, and a new leader's key
// has another revision, so a write that carries a fence is refused once
// its writer no longer leads. The zero Fence fences nothing.
type Fence struct {
	Key string `json:"key"`
	Rev int64  `json:"rev"`
}

// IsZero says whether f fences nothing.
func (f Fence) IsZero() bool { return f.Key == "" }

func (f Fence) String() string {
	if f.IsZero() {
		return "no fence"
	}
	return fmt.Sprintf("leader key %s at revision %d", f.Key, f.Rev)
}

// ErrDeposed: a write carried a fence whose term is over (another
// controller leads, or the lease ended). Nothing was written.
var ErrDeposed = fmt.Errorf("not the leader any more: %w", errdefs.ErrFailedPrecondition)

type fenceKey struct{}

// WithFence returns ctx carrying f: every write made with it (generations,
// the documents and rollouts the loop keeps, app records) is committed
// only while f still holds, and refused with ErrDeposed otherwise. The
// leader's loop makes its writes with it; the API's writes (apply, labels,
// tokens) carry none, as every controller may make them. A store whose
// writers cannot race (bbolt: one process holds the file) ignores it.
func WithFence(ctx context.Context, f Fence) context.Context {
	if f.IsZero() {
		return ctx
	}
	return context.WithValue(ctx, fenceKey{}, f)
}

// FenceOf is the fence ctx carries (the zero Fence if none).
func FenceOf(ctx context.Context) Fence {
	f, _ := ctx.Value(fenceKey{}).(Fence)
	return f
}

// IsDeposed says whether err is a write refused by its fence.
func IsDeposed(err error) bool { return errors.Is(err, ErrDeposed) }

// Member is a controller registered with the others (several controllers
// on one etcd store): it is listed while its lease lives.
type Member struct {
	ID string `json:"id"`
	// API is the address its API listens on.
	API     string    `json:"api"`
	Started time.Time `json:"started"`
	Leader  bool      `json:"leader"`
}
