package api

import (
	"context"
	"time"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/store"
)

// noTokens knows no token (the OpenAPI test sends no request).
type noTokens struct{}

func (noTokens) Create(context.Context, store.APIToken) (store.APIToken, error) {
	return store.APIToken{}, errdefs.ErrNotImplemented
}
func (noTokens) Get(context.Context, string) (store.APIToken, error) {
	return store.APIToken{}, errdefs.ErrNotFound
}
func (noTokens) List(context.Context) ([]store.APIToken, error) { return nil, nil }
func (noTokens) Revoke(context.Context, string, time.Time) (store.APIToken, error) {
	return store.APIToken{}, errdefs.ErrNotFound
}

// nopController is a Controller for tests that send no request.
type nopController struct{ Controller }
