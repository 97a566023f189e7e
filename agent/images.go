package agent

import (
	"fmt"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"

	"github.com/tender-edge/tender/runtime/image"
)

// RemoveImage removes an image that no container uses.
func (a *Agent) RemoveImage(ref string) (image.Image, error) {
	img, err := a.images.Get(ref)
	if err != nil {
		return image.Image{}, err
	}
	ctrs, err := a.rt.List()
	if err != nil {
		return image.Image{}, err
	}
	for _, c := range ctrs {
		if c.ImageID == img.ID.String() {
			return image.Image{}, fmt.Errorf("image %s is in use by container %s: %w", ref, c.Name, errdefs.ErrConflict)
		}
	}
	if err := a.images.Remove(ref); err != nil {
		return image.Image{}, err
	}
	return img, nil
}

// PruneImages removes images that no container uses and that the agent
// does not keep for a rollback or an update under way.
func (a *Agent) PruneImages() ([]image.Image, int64, error) {
	keep, err := a.keptImages()
	if err != nil {
		return nil, 0, err
	}
	return a.images.Prune(keep)
}

// keptImages are the images that must stay: used by a container, or part
// of a desired, confirmed (rollback) or target version of an app.
func (a *Agent) keptImages() (map[digest.Digest]bool, error) {
	keep := map[digest.Digest]bool{}
	ctrs, err := a.rt.List()
	if err != nil {
		return nil, err
	}
	for _, c := range ctrs {
		keep[digest.Digest(c.ImageID)] = true
	}
	desired, err := a.db.Desired()
	if err != nil && !errdefs.IsNotFound(err) {
		return nil, err
	}
	progress, err := a.db.Progress()
	if err != nil {
		return nil, err
	}
	for _, app := range knownApps(desired.Apps, progress) {
		for _, c := range app.Containers {
			if img, err := a.images.Get(c.Image); err == nil {
				keep[img.ID] = true
			}
		}
	}
	return keep, nil
}
