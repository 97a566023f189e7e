package agent

import (
	"io/fs"
	"path/filepath"
	"sort"

	"github.com/tender-edge/tender/internal/quantity"
)

// enforceBudget keeps the image store under the configured disk budget
// (store.maxBytes): it removes images that no container uses and that the
// agent does not keep for a rollback or an update under way, oldest first,
// until the store fits. It never removes anything else, even if the budget
// stays exceeded (that is reported).
func (a *Agent) enforceBudget() {
	if a.cfg.Store.MaxBytes == "" {
		return
	}
	budget, err := quantity.ParseBytes(a.cfg.Store.MaxBytes)
	if err != nil {
		return
	}
	used := dirSize(a.images.Root())
	if used <= budget {
		return
	}
	keep, err := a.keptImages()
	if err != nil {
		a.log.Warn().Err(err).Msg("image budget: listing what to keep")
		return
	}
	imgs, err := a.images.List()
	if err != nil {
		a.log.Warn().Err(err).Msg("image budget: listing images")
		return
	}
	sort.Slice(imgs, func(i, j int) bool { return imgs[i].Created.Before(imgs[j].Created) })
	for _, img := range imgs {
		if used <= budget {
			break
		}
		if keep[img.ID] || keep[img.Digest] {
			continue
		}
		ref := img.Name
		if ref == "" {
			ref = img.Digest.String()
		}
		if err := a.images.Remove(ref); err != nil {
			a.log.Warn().Err(err).Str("image", ref).Msg("image budget: removing")
			continue
		}
		used = dirSize(a.images.Root())
		a.log.Info().Str("image", ref).Int64("store_bytes", used).Int64("budget", budget).Msg("image removed to fit the disk budget")
	}
	if used > budget {
		a.log.Warn().Int64("store_bytes", used).Int64("budget", budget).Msg("image store over its budget: everything left is in use or kept for rollback")
	}
}

// dirSize is the bytes of the regular files under dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}
