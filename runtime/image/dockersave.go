package image

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker's legacy save layout (docker save before Docker 25, skopeo's
// docker-archive:): manifest.json lists, per image, its config file, its
// repository tags and its layer files (uncompressed tars), under any names,
// possibly symlinks to other entries. Load stages those files by digest and
// writes the index and manifests an OCI layout would have held, so the rest
// of the load is the same.
const mediaTypeDockerLayer = "application/vnd.docker.image.rootfs.diff.tar"

// maxLinkHops bounds symlink chains between archive entries.
const maxLinkHops = 8

// dockerSave is what a legacy docker save archive holds besides blobs/.
type dockerSave struct {
	manifest []byte                   // manifest.json, nil when absent
	files    map[string]digest.Digest // regular file -> staged blob
	links    map[string]string        // symlink or hardlink -> archive entry it names
}

// entry records an archive entry outside the OCI layout's names. Regular
// files are staged by digest; nothing is ever created under the entry's
// own name.
func (ds *dockerSave) entry(s *Store, a *staged, tr *tar.Reader, hdr *tar.Header, name string, total *int64) error {
	switch hdr.Typeflag {
	case tar.TypeReg:
		if name == "manifest.json" {
			raw, err := readCapped(tr, s.lim.MaxManifestBytes)
			if err != nil {
				return fmt.Errorf("read manifest.json: %w", err)
			}
			ds.manifest = raw
			return nil
		}
		if hdr.Size < 0 || hdr.Size > s.lim.MaxImageBytes-*total {
			return limitf("archive larger than %d bytes", s.lim.MaxImageBytes)
		}
		*total += hdr.Size
		d, err := stageFile(a.dir, tr, hdr.Size)
		if err != nil {
			return fmt.Errorf("archive entry %q: %w", quoteName(hdr.Name), err)
		}
		a.blobs[d] = hdr.Size
		ds.files[name] = d
	case tar.TypeSymlink:
		if !strings.HasPrefix(hdr.Linkname, "/") {
			ds.links[name] = path.Join(path.Dir(name), hdr.Linkname)
		}
	case tar.TypeLink:
		ds.links[name] = path.Clean(strings.TrimPrefix(hdr.Linkname, "./"))
	}
	return nil
}

// stageFile copies size bytes of r into dir under their digest.
func stageFile(dir string, r io.Reader, size int64) (digest.Digest, error) {
	f, err := os.CreateTemp(dir, "file-")
	if err != nil {
		return "", err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != size {
		err = invalidf("truncated: %d of %d bytes", n, size)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return "", err
	}
	d := digest.NewDigest(digest.SHA256, h)
	if err := os.Rename(f.Name(), filepath.Join(dir, d.Encoded())); err != nil {
		return "", err
	}
	return d, nil
}

// resolve returns the staged blob the archive entry name stands for,
// following links between entries.
func (ds *dockerSave) resolve(a *staged, name string) (ocispec.Descriptor, error) {
	name = path.Clean(strings.TrimPrefix(name, "./"))
	for range maxLinkHops {
		if d, ok := ds.files[name]; ok {
			return ocispec.Descriptor{Digest: d, Size: a.blobs[d]}, nil
		}
		target, ok := ds.links[name]
		if !ok {
			break
		}
		name = target
	}
	return ocispec.Descriptor{}, invalidf("manifest.json names %q, which is not a file of the archive", quoteName(name))
}

// index writes, for each image of manifest.json, a Docker schema 2
// manifest into the staging area and returns an index of them, named by
// each image's first repository tag.
func (ds *dockerSave) index(a *staged) ([]byte, error) {
	var images []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(ds.manifest, &images); err != nil {
		return nil, invalidf("manifest.json: %v", err)
	}
	if len(images) == 0 {
		return nil, invalidf("manifest.json lists no image")
	}
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	for _, img := range images {
		m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: mediaTypeDockerManifest, Layers: []ocispec.Descriptor{}}
		var err error
		if m.Config, err = ds.resolve(a, img.Config); err != nil {
			return nil, err
		}
		m.Config.MediaType = mediaTypeDockerConfig
		for _, l := range img.Layers {
			desc, err := ds.resolve(a, l)
			if err != nil {
				return nil, err
			}
			desc.MediaType = mediaTypeDockerLayer
			if gzipped(a.path(desc.Digest)) {
				desc.MediaType = "application/vnd.docker.image.rootfs.diff.tar.gzip"
			}
			m.Layers = append(m.Layers, desc)
		}
		raw, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		d := digest.FromBytes(raw)
		if err := os.WriteFile(a.path(d), raw, 0o600); err != nil {
			return nil, err
		}
		a.blobs[d] = int64(len(raw))
		desc := ocispec.Descriptor{MediaType: mediaTypeDockerManifest, Digest: d, Size: int64(len(raw))}
		if len(img.RepoTags) > 0 {
			desc.Annotations = map[string]string{annotationContainerd: img.RepoTags[0]}
		}
		idx.Manifests = append(idx.Manifests, desc)
	}
	return json.Marshal(idx)
}

// gzipped reports whether the file at p starts with gzip's magic number.
func gzipped(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	var magic [2]byte
	_, err = io.ReadFull(f, magic[:])
	return err == nil && magic[0] == 0x1f && magic[1] == 0x8b
}
