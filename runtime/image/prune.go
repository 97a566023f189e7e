package image

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
)

// Prune removes every image whose ID (config digest) or manifest digest is
// not in keep, then the layers and blobs no image references any more. It
// returns the removed images (one entry per image, Name its first name)
// and the bytes freed (unpacked layers plus blobs).
func (s *Store) Prune(keep map[digest.Digest]bool) ([]Image, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var removed []Image
	var freed int64
	var deadLayers []string
	var deadBlobs []digest.Digest
	err := s.db.Update(func(tx *bolt.Tx) error {
		v1 := tx.Bucket(bktV1)
		layerSize := map[string]int64{}
		if err := v1.Bucket(bktLayers).ForEach(func(k, v []byte) error {
			var lr layerRecord
			if err := json.Unmarshal(v, &lr); err != nil {
				return fmt.Errorf("layer record %s: %w", k, err)
			}
			layerSize[lr.Dir] = lr.Size
			return nil
		}); err != nil {
			return err
		}
		blobSize := map[digest.Digest]int64{}
		if err := v1.Bucket(bktBlobs).ForEach(func(k, v []byte) error {
			var br blobRecord
			if err := json.Unmarshal(v, &br); err != nil {
				return fmt.Errorf("blob record %s: %w", k, err)
			}
			blobSize[digest.Digest(k)] = br.Size
			return nil
		}); err != nil {
			return err
		}
		var dead []*imageRecord
		if err := v1.Bucket(bktImages).ForEach(func(_, v []byte) error {
			var rec imageRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			if !keep[rec.ID] && !keep[rec.Digest] {
				dead = append(dead, &rec)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, rec := range dead {
			name := ""
			if len(rec.Names) > 0 {
				name = rec.Names[0]
			}
			removed = append(removed, rec.image(name, imageSize(v1, rec)))
			for _, n := range rec.Names {
				if err := v1.Bucket(bktNames).Delete([]byte(n)); err != nil {
					return err
				}
			}
			if err := v1.Bucket(bktImages).Delete([]byte(rec.Digest)); err != nil {
				return err
			}
		}
		var err error
		deadLayers, deadBlobs, err = collectGarbage(v1)
		if err != nil {
			return err
		}
		for _, d := range deadLayers {
			freed += layerSize[d]
		}
		for _, b := range deadBlobs {
			freed += blobSize[b]
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("prune images: %w", err)
	}
	var errs []error
	for _, d := range deadLayers {
		if err := os.RemoveAll(s.layerPath(d)); err != nil {
			errs = append(errs, err)
		}
	}
	for _, b := range deadBlobs {
		if err := os.Remove(s.blobPath(b)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return removed, freed, fmt.Errorf("prune images: delete unreferenced content: %w", err)
	}
	return removed, freed, nil
}

// Save writes the image ref names as an OCI image archive (oci-layout,
// index.json, blobs/sha256/…) that Load reads back. It needs the image's
// compressed layer blobs: pulled images keep them, loaded images only
// with Options.KeepLayerBlobs (errdefs.ErrFailedPrecondition otherwise).
func (s *Store) Save(ctx context.Context, ref string, w io.Writer) error {
	var rec *imageRecord
	var name string
	var descs []ocispec.Descriptor
	err := s.db.View(func(tx *bolt.Tx) error {
		v1 := tx.Bucket(bktV1)
		var err error
		rec, name, err = resolve(v1, ref)
		if err != nil {
			return err
		}
		if rec == nil {
			return fmt.Errorf("no such image %q: %w", ref, errdefs.ErrNotFound)
		}
		bb := v1.Bucket(bktBlobs)
		for _, d := range append([]digest.Digest{rec.Digest, rec.ID}, rec.LayerBlobs...) {
			v := bb.Get([]byte(d))
			if v == nil {
				return categoryf(errdefs.ErrFailedPrecondition, "blob %s was not kept (image loaded without KeepLayerBlobs): pull or load it again with layer blobs kept", shortDigest(d))
			}
			var br blobRecord
			if err := json.Unmarshal(v, &br); err != nil {
				return fmt.Errorf("blob record %s: %w", d, err)
			}
			descs = append(descs, ocispec.Descriptor{MediaType: br.MediaType, Digest: d, Size: br.Size})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("save image: %w", err)
	}
	if err := s.writeArchive(ctx, w, rec, name, descs); err != nil {
		return fmt.Errorf("save image %s: %w", ref, err)
	}
	return nil
}

func (s *Store) writeArchive(ctx context.Context, w io.Writer, rec *imageRecord, name string, descs []ocispec.Descriptor) error {
	tw := tar.NewWriter(w)
	put := func(p string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: p, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	layout, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err := put("oci-layout", layout); err != nil {
		return err
	}
	top := descs[0]
	if name != "" {
		top.Annotations = map[string]string{annotationContainerd: name}
		if _, tag, ok := cutTag(name); ok {
			top.Annotations[ocispec.AnnotationRefName] = tag
		}
	}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{top}}
	idx.SchemaVersion = 2
	ij, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	if err := put("index.json", ij); err != nil {
		return err
	}
	seen := map[digest.Digest]bool{}
	for _, d := range descs {
		if seen[d.Digest] {
			continue
		}
		seen[d.Digest] = true
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := copyBlob(tw, s.blobPath(d.Digest), d); err != nil {
			return fmt.Errorf("blob %s: %w", shortDigest(d.Digest), err)
		}
	}
	return tw.Close()
}

func copyBlob(tw *tar.Writer, p string, d ocispec.Descriptor) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tw.WriteHeader(&tar.Header{Name: "blobs/sha256/" + d.Digest.Encoded(), Mode: 0o644, Size: d.Size, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return err
	}
	v := d.Digest.Verifier()
	n, err := io.Copy(io.MultiWriter(tw, v), io.LimitReader(f, d.Size))
	if err != nil {
		return err
	}
	if n != d.Size || !v.Verified() {
		return categoryf(errdefs.ErrDataLoss, "stored blob %s is damaged: remove the image and pull or load it again", shortDigest(d.Digest))
	}
	return nil
}

// cutTag splits "host/repo:tag" into "host/repo" and "tag".
func cutTag(n string) (string, string, bool) {
	for i := len(n) - 1; i >= 0 && n[i] != '/'; i-- {
		if n[i] == ':' {
			return n[:i], n[i+1:], true
		}
	}
	return n, "", false
}
