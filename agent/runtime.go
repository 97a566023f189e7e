package agent

import (
	"context"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/tender-edge/tender/runtime/cgroups"
	"github.com/tender-edge/tender/runtime/container"
	"github.com/tender-edge/tender/runtime/image"
)

// Containers is what the shell needs of the container runtime
// (runtime/container.Runtime).
type Containers interface {
	// List is every container, newest first.
	List() ([]*container.Container, error)
	Get(ref string) (*container.Container, error)
	Create(ctx context.Context, o container.CreateOptions) (*container.Container, error)
	StartDetached(ref string) (*container.Container, error)
	Stop(ref string, grace time.Duration) error
	Delete(ref string, force bool) error
	Stats(c *container.Container) (cgroups.Stats, error)
	LogDir(c *container.Container) string
}

// Images is what the shell needs of the image store
// (runtime/image.Store).
type Images interface {
	Get(ref string) (image.Image, error)
	List() ([]image.Image, error)
	Pull(ctx context.Context, ref string, opts image.PullOptions) (image.Image, error)
	Remove(ref string) error
	Prune(keep map[digest.Digest]bool) ([]image.Image, int64, error)
	// Root is the store's directory, measured against the disk budget.
	Root() string
}
