package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// Media types accepted by Load.
const (
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerConfig   = "application/vnd.docker.container.image.v1+json"
	annotationContainerd    = "io.containerd.image.name"
	maxIndexDepth           = 8
	maxTrailing             = 1 << 20 // bytes allowed after the end of a layer tar
)

type compression int

const (
	compNone compression = iota
	compGzip
	compZstd
)

var layerMediaTypes = map[string]compression{
	ocispec.MediaTypeImageLayer:                                    compNone,
	ocispec.MediaTypeImageLayerGzip:                                compGzip,
	ocispec.MediaTypeImageLayerZstd:                                compZstd,
	"application/vnd.oci.image.layer.nondistributable.v1.tar":      compNone,
	"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": compGzip,
	"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": compZstd,
	"application/vnd.docker.image.rootfs.diff.tar.gzip":            compGzip,
	"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":    compGzip,
	"application/vnd.docker.image.rootfs.diff.tar.zstd":            compZstd,
	"application/vnd.docker.image.rootfs.foreign.diff.tar":         compNone,
	"application/vnd.docker.image.rootfs.diff.tar":                 compNone,
	"application/vnd.oci.image.layer.v1.tar+gzip+encrypted":        -1,
	"application/vnd.oci.image.layer.v1.tar+zstd+encrypted":        -1,
}

// staged is the blob source of one ingest: an archive read into a private
// staging directory, or a registry pull's downloads. Every blob it lists
// has been verified against its digest.
type staged struct {
	dir    string
	index  []byte
	layout bool
	blobs  map[digest.Digest]int64
	// paths holds blobs kept outside dir (a pull's downloads under
	// tmp/partial); the others are dir/<hex>.
	paths map[digest.Digest]string
	// fetch, when set, fetches a blob missing from blobs into dir,
	// verifies it and records it (a pull's manifests and configs).
	fetch func(desc ocispec.Descriptor) error
	// plat is the platform picked from an index.
	plat ocispec.Platform
	// keepLayers keeps the compressed layer blobs of this ingest.
	keepLayers bool
}

func newStaged(dir string) *staged {
	return &staged{dir: dir, blobs: map[digest.Digest]int64{}, paths: map[digest.Digest]string{}, plat: hostPlatform()}
}

func (a *staged) path(d digest.Digest) string {
	if p, ok := a.paths[d]; ok {
		return p
	}
	return filepath.Join(a.dir, d.Encoded())
}

// target is one image manifest selected from the archive.
type target struct {
	name     string
	desc     ocispec.Descriptor
	manifest ocispec.Manifest
	cfgDesc  ocispec.Descriptor
	config   ocispec.Image
}

// pendingLayer is a layer unpacked by this Load and not yet committed.
type pendingLayer struct {
	diffID    digest.Digest
	blob      digest.Digest
	mediaType string
	tmp       string // absolute temp dir under layers/
	size      int64
	dir       string // final name under layers/, chosen at commit
}

// Load reads an OCI image archive (a tar, optionally gzip-compressed, of an
// OCI image layout: oci-layout, index.json, blobs/sha256/…) or an archive
// of docker save's legacy layout (manifest.json), verifies every blob,
// unpacks new layers and records the images. On error the store is left as
// it was.
func (s *Store) Load(ctx context.Context, r io.Reader) ([]Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	stage, err := os.MkdirTemp(filepath.Join(s.root, dirTmp), "load-")
	if err != nil {
		return nil, fmt.Errorf("load image archive: %w", err)
	}
	defer os.RemoveAll(stage)
	imgs, err := s.loadLocked(ctx, r, stage)
	if err != nil {
		return nil, fmt.Errorf("load image archive: %w", err)
	}
	return imgs, nil
}

func (s *Store) loadLocked(ctx context.Context, r io.Reader, stage string) ([]Image, error) {
	a, err := s.readArchive(ctx, r, stage)
	if err != nil {
		return nil, err
	}
	targets, err := s.selectImages(a)
	if err != nil {
		return nil, err
	}
	return s.ingest(ctx, a, targets)
}

// committedLayers returns the committed layers by diff_id and the layer
// directory names in use.
func (s *Store) committedLayers() (map[digest.Digest]layerRecord, map[string]bool, error) {
	committed := map[digest.Digest]layerRecord{}
	usedDirs := map[string]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bktV1).Bucket(bktLayers).ForEach(func(k, v []byte) error {
			var lr layerRecord
			if err := json.Unmarshal(v, &lr); err != nil {
				return fmt.Errorf("layer record %s: %w", k, err)
			}
			committed[lr.DiffID] = lr
			usedDirs[lr.Dir] = true
			return nil
		})
	})
	if err != nil {
		return nil, nil, err
	}
	return committed, usedDirs, nil
}

// ingest is the path shared by Load and Pull: it unpacks the layers of the
// selected images that the store does not hold yet (verifying each against
// its diff_id) and commits images, layers and blobs. The caller holds s.mu.
func (s *Store) ingest(ctx context.Context, a *staged, targets []target) ([]Image, error) {
	committed, usedDirs, err := s.committedLayers()
	if err != nil {
		return nil, err
	}
	pending := map[digest.Digest]*pendingLayer{}
	var order []*pendingLayer
	defer func() {
		for _, p := range order {
			if p.tmp != "" {
				_ = os.RemoveAll(p.tmp)
			}
		}
	}()
	for _, t := range targets {
		if err := s.unpackImage(ctx, a, t, committed, pending, &order); err != nil {
			if t.name != "" {
				return nil, fmt.Errorf("image %s: %w", t.name, err)
			}
			return nil, fmt.Errorf("image %s: %w", t.desc.Digest, err)
		}
	}
	return s.commit(a, targets, order, usedDirs)
}

// readArchive streams the outer tar into the staging dir, verifying each
// blob against the digest in its name.
func (s *Store) readArchive(ctx context.Context, r io.Reader, stage string) (*staged, error) {
	a := newStaged(stage)
	br := bufio.NewReader(r)
	var in io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, invalidf("read archive: %v", err)
		}
		defer gz.Close()
		in = gz
	}
	tr := tar.NewReader(in)
	var total int64
	ds := &dockerSave{files: map[string]digest.Digest{}, links: map[string]string{}}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, invalidf("read archive: %v", err)
		}
		if strings.HasPrefix(hdr.Name, "/") || slices.Contains(strings.Split(hdr.Name, "/"), "..") {
			return nil, invalidf("archive entry %q: path escapes archive", quoteName(hdr.Name))
		}
		name := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		switch {
		case name == "oci-layout":
			raw, err := readCapped(tr, 4096)
			if err != nil {
				return nil, fmt.Errorf("read oci-layout: %w", err)
			}
			var l ocispec.ImageLayout
			if err := json.Unmarshal(raw, &l); err != nil || l.Version != ocispec.ImageLayoutVersion {
				return nil, invalidf("oci-layout: unsupported layout %q", raw)
			}
			a.layout = true
		case name == "index.json":
			raw, err := readCapped(tr, s.lim.MaxManifestBytes)
			if err != nil {
				return nil, fmt.Errorf("read index.json: %w", err)
			}
			a.index = raw
		case strings.HasPrefix(name, "blobs/"):
			if hdr.Typeflag == tar.TypeDir {
				continue
			}
			alg, hex, _ := strings.Cut(strings.TrimPrefix(name, "blobs/"), "/")
			if alg != "sha256" {
				s.log.Warn().Str("entry", quoteName(hdr.Name)).Msg("ignoring blob with unsupported digest algorithm")
				continue
			}
			if !isHex64(hex) {
				return nil, invalidf("archive entry %q: blob name is not a sha256 digest", quoteName(hdr.Name))
			}
			if hdr.Typeflag != tar.TypeReg {
				return nil, invalidf("archive entry %q: blob is not a regular file", quoteName(hdr.Name))
			}
			if hdr.Size < 0 || hdr.Size > s.lim.MaxImageBytes-total {
				return nil, limitf("archive larger than %d bytes", s.lim.MaxImageBytes)
			}
			total += hdr.Size
			d := digest.Digest("sha256:" + hex)
			if err := stageBlob(filepath.Join(stage, hex), tr, d, hdr.Size); err != nil {
				// A damaged archive is bad input.
				return nil, &wrapCategory{cat: errdefs.ErrInvalidArgument, err: fmt.Errorf("blob %s: %w", shortDigest(d), err)}
			}
			a.blobs[d] = hdr.Size
		default:
			if err := ds.entry(s, a, tr, hdr, name, &total); err != nil {
				return nil, err
			}
		}
	}
	if !a.layout && ds.manifest != nil {
		// docker save's legacy layout.
		idx, err := ds.index(a)
		if err != nil {
			return nil, fmt.Errorf("docker save archive: %w", err)
		}
		a.layout, a.index = true, idx
	}
	if !a.layout {
		return nil, invalidf("archive has neither oci-layout nor manifest.json: not an OCI or docker save image archive")
	}
	if a.index == nil {
		return nil, invalidf("archive has no index.json")
	}
	return a, nil
}

func readCapped(r io.Reader, max int64) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(raw)) > max {
		return nil, limitf("larger than %d bytes", max)
	}
	return raw, nil
}

func stageBlob(p string, r io.Reader, want digest.Digest, size int64) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return invalidf("read: %v", err)
	}
	if n != size {
		return invalidf("truncated: %d of %d bytes", n, size)
	}
	if got := digest.NewDigest(digest.SHA256, h); got != want {
		return categoryf(ErrDigestMismatch, "content digest %s does not match", got)
	}
	return nil
}

// blob returns the staged path of a descriptor's blob after checking the
// digest syntax and that the blob's size equals the descriptor's.
func (a *staged) blob(desc ocispec.Descriptor) (string, error) {
	d, err := parseDigest(string(desc.Digest))
	if err != nil {
		return "", err
	}
	size, ok := a.blobs[d]
	if !ok && a.fetch != nil {
		if err := a.fetch(desc); err != nil {
			return "", err
		}
		size, ok = a.blobs[d]
	}
	if !ok {
		return "", invalidf("blob %s: not in archive", shortDigest(d))
	}
	if size != desc.Size {
		return "", invalidf("blob %s: size %d does not match descriptor size %d", shortDigest(d), size, desc.Size)
	}
	return a.path(d), nil
}

// readJSON reads a manifest, index or config blob. With checkMediaType it
// checks the blob against its descriptor's mediaType: the image spec makes
// a manifest's or index's own mediaType optional (SHOULD), so an absent one
// is accepted, while one that contradicts the descriptor is refused, and so
// is an index where a manifest is expected or the reverse (told apart by
// their fields when mediaType is absent).
func (s *Store) readJSON(a *staged, desc ocispec.Descriptor, checkMediaType bool) ([]byte, error) {
	if desc.Size > s.lim.MaxManifestBytes {
		return nil, limitf("blob %s: %d bytes, more than %d", shortDigest(desc.Digest), desc.Size, s.lim.MaxManifestBytes)
	}
	p, err := a.blob(desc)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var probe struct {
		MediaType string          `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
		Config    json.RawMessage `json:"config"`
		Layers    json.RawMessage `json:"layers"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, invalidf("blob %s: %v", shortDigest(desc.Digest), err)
	}
	if !checkMediaType {
		return raw, nil
	}
	if probe.MediaType != "" && probe.MediaType != desc.MediaType {
		return nil, invalidf("blob %s: mediaType %q does not match descriptor mediaType %q", shortDigest(desc.Digest), probe.MediaType, desc.MediaType)
	}
	isIndex := desc.MediaType == ocispec.MediaTypeImageIndex || desc.MediaType == mediaTypeDockerList
	switch {
	case isIndex && (probe.Config != nil || probe.Layers != nil):
		return nil, invalidf("blob %s: an image manifest where the descriptor says index (mediaType %q)", shortDigest(desc.Digest), desc.MediaType)
	case !isIndex && (probe.Manifests != nil || probe.Config == nil):
		return nil, invalidf("blob %s: not an image manifest, which the descriptor says it is (mediaType %q)", shortDigest(desc.Digest), desc.MediaType)
	}
	return raw, nil
}

// selectImages walks index.json and returns the manifests to load.
func (s *Store) selectImages(a *staged) ([]target, error) {
	var probe struct {
		Config json.RawMessage `json:"config"`
		Layers json.RawMessage `json:"layers"`
	}
	var idx ocispec.Index
	if err := json.Unmarshal(a.index, &idx); err != nil {
		return nil, invalidf("index.json: %v", err)
	}
	if err := json.Unmarshal(a.index, &probe); err != nil || probe.Config != nil || probe.Layers != nil {
		return nil, invalidf("index.json: not an image index")
	}
	if idx.SchemaVersion != 2 || (idx.MediaType != "" && idx.MediaType != ocispec.MediaTypeImageIndex) {
		return nil, invalidf("index.json: schemaVersion %d, mediaType %q", idx.SchemaVersion, idx.MediaType)
	}
	var out []target
	for _, d := range idx.Manifests {
		if d.Platform != nil && platformScore(*d.Platform, a.plat) == 0 {
			continue
		}
		name := s.nameFromAnnotations(d.Annotations)
		t, err := s.walk(a, d, name, 1)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, noPlatformf("archive has no image for %s", platformString(a.plat))
	}
	return out, nil
}

func (s *Store) nameFromAnnotations(ann map[string]string) string {
	if n := ann[annotationContainerd]; n != "" {
		if nn, err := NormalizeName(n); err == nil {
			return nn
		}
		s.log.Warn().Str("name", quoteName(n)).Msg("ignoring invalid image name annotation")
	}
	if n := ann[ocispec.AnnotationRefName]; n != "" {
		if strings.ContainsAny(n, "/:@") {
			if nn, err := NormalizeName(n); err == nil {
				return nn
			}
		} else if validTag(n) {
			return n // only a tag: the repository is unknown, keep it as is
		}
		s.log.Warn().Str("name", quoteName(n)).Msg("ignoring invalid image name annotation")
	}
	return ""
}

func (s *Store) walk(a *staged, desc ocispec.Descriptor, name string, depth int) (target, error) {
	if depth > maxIndexDepth {
		return target{}, limitf("image index nested deeper than %d", maxIndexDepth)
	}
	if _, err := parseDigest(string(desc.Digest)); err != nil {
		return target{}, err
	}
	switch desc.MediaType {
	case ocispec.MediaTypeImageIndex, mediaTypeDockerList:
		raw, err := s.readJSON(a, desc, true)
		if err != nil {
			return target{}, err
		}
		var idx ocispec.Index
		if err := json.Unmarshal(raw, &idx); err != nil || idx.SchemaVersion != 2 {
			return target{}, invalidf("index %s: not a schemaVersion 2 index", shortDigest(desc.Digest))
		}
		best, bestScore := -1, 0
		for i, m := range idx.Manifests {
			if m.Platform == nil {
				continue
			}
			if sc := platformScore(*m.Platform, a.plat); sc > bestScore {
				best, bestScore = i, sc
			}
		}
		if best < 0 {
			return target{}, noPlatformf("index %s: no manifest for %s", shortDigest(desc.Digest), platformString(a.plat))
		}
		return s.walk(a, idx.Manifests[best], name, depth+1)
	case ocispec.MediaTypeImageManifest, mediaTypeDockerManifest:
		return s.readManifest(a, desc, name)
	case "":
		return target{}, invalidf("descriptor %s has no mediaType", shortDigest(desc.Digest))
	default:
		return target{}, unsupportedf("descriptor %s: unsupported mediaType %q", shortDigest(desc.Digest), quoteName(desc.MediaType))
	}
}

func (s *Store) readManifest(a *staged, desc ocispec.Descriptor, name string) (target, error) {
	raw, err := s.readJSON(a, desc, true)
	if err != nil {
		return target{}, err
	}
	t := target{name: name, desc: desc}
	if err := json.Unmarshal(raw, &t.manifest); err != nil || t.manifest.SchemaVersion != 2 {
		return target{}, invalidf("manifest %s: not a schemaVersion 2 manifest", shortDigest(desc.Digest))
	}
	m := &t.manifest
	if n := len(m.Layers); n > s.lim.MaxLayers {
		return target{}, limitf("manifest %s: %d layers, more than %d", shortDigest(desc.Digest), n, s.lim.MaxLayers)
	}
	switch m.Config.MediaType {
	case ocispec.MediaTypeImageConfig, mediaTypeDockerConfig:
	case "":
		return target{}, invalidf("manifest %s: config has no mediaType", shortDigest(desc.Digest))
	default:
		return target{}, unsupportedf("manifest %s: unsupported config mediaType %q", shortDigest(desc.Digest), quoteName(m.Config.MediaType))
	}
	for _, l := range m.Layers {
		if _, err := parseDigest(string(l.Digest)); err != nil {
			return target{}, fmt.Errorf("manifest %s: layer: %w", shortDigest(desc.Digest), err)
		}
		comp, ok := layerMediaTypes[l.MediaType]
		switch {
		case l.MediaType == "":
			return target{}, invalidf("layer %s: no mediaType", shortDigest(l.Digest))
		case !ok:
			return target{}, unsupportedf("layer %s: unsupported mediaType %q", shortDigest(l.Digest), quoteName(l.MediaType))
		case comp == compZstd:
			return target{}, unsupportedf("layer %s: zstd-compressed layers are not supported yet", shortDigest(l.Digest))
		case comp < 0:
			return target{}, unsupportedf("layer %s: mediaType %q is not supported", shortDigest(l.Digest), l.MediaType)
		}
		if l.Size < 0 || l.Size > s.lim.MaxImageBytes {
			return target{}, limitf("layer %s: %d bytes, more than %d", shortDigest(l.Digest), l.Size, s.lim.MaxImageBytes)
		}
		// The blob itself is checked when the layer is unpacked: a layer
		// the store holds already needs none.
	}
	cfgRaw, err := s.readJSON(a, m.Config, false)
	if err != nil {
		return target{}, fmt.Errorf("config: %w", err)
	}
	t.cfgDesc = m.Config
	if err := json.Unmarshal(cfgRaw, &t.config); err != nil {
		return target{}, invalidf("config %s: %v", shortDigest(m.Config.Digest), err)
	}
	rootfs := t.config.RootFS
	if rootfs.Type != "layers" || len(rootfs.DiffIDs) != len(m.Layers) {
		return target{}, invalidf("config %s: rootfs has %d diff_ids of type %q for %d layers",
			shortDigest(m.Config.Digest), len(rootfs.DiffIDs), rootfs.Type, len(m.Layers))
	}
	for _, d := range rootfs.DiffIDs {
		if _, err := parseDigest(string(d)); err != nil {
			return target{}, fmt.Errorf("config %s: diff_id: %w", shortDigest(m.Config.Digest), err)
		}
	}
	return t, nil
}

// platformScore rates how well p fits the wanted platform: 0 does not run
// there.
func platformScore(p, want ocispec.Platform) int {
	if p.OS != "linux" && p.OS != "" || p.Architecture != want.Architecture {
		return 0
	}
	switch {
	case p.Variant == want.Variant:
		return 3
	case p.Variant == "":
		return 2
	case want.Architecture == "arm64" && p.Variant == "v8" && want.Variant == "":
		return 3
	case want.Architecture == "arm" && len(p.Variant) == 2 && want.Variant != "" && p.Variant < want.Variant:
		return 1
	}
	return 0
}

// hostPlatform is the platform this binary runs on.
func hostPlatform() ocispec.Platform {
	return ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH, Variant: archVariant()}
}

func archVariant() string {
	if runtime.GOARCH != "arm" {
		return ""
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, st := range bi.Settings {
			if st.Key == "GOARM" && st.Value != "" {
				return "v" + st.Value[:1]
			}
		}
	}
	return "v7"
}

func platformString(p ocispec.Platform) string {
	if p.Variant != "" {
		return "linux/" + p.Architecture + "/" + p.Variant
	}
	return "linux/" + p.Architecture
}

// unpackImage unpacks the layers of t that the store does not hold yet.
func (s *Store) unpackImage(ctx context.Context, a *staged, t target, committed map[digest.Digest]layerRecord,
	pending map[digest.Digest]*pendingLayer, order *[]*pendingLayer) error {
	var lowers []*os.Root // topmost first
	defer func() {
		for _, r := range lowers {
			_ = r.Close()
		}
	}()
	var total int64
	for i, l := range t.manifest.Layers {
		diffID := t.config.RootFS.DiffIDs[i]
		var dir string
		var size int64
		if lr, ok := committed[diffID]; ok {
			dir, size = s.layerPath(lr.Dir), lr.Size
		} else if p, ok := pending[diffID]; ok {
			dir, size = p.tmp, p.size
		} else {
			tmp, err := os.MkdirTemp(filepath.Join(s.root, dirLayers), tmpPrefix)
			if err != nil {
				return err
			}
			p := &pendingLayer{diffID: diffID, blob: l.Digest, mediaType: l.MediaType, tmp: tmp}
			*order = append(*order, p)
			budget := min(s.lim.MaxLayerBytes, s.lim.MaxImageBytes-total)
			p.size, err = s.unpackBlob(ctx, a, l, diffID, tmp, lowers, budget)
			if err != nil {
				return fmt.Errorf("layer %s: %w", shortDigest(l.Digest), err)
			}
			pending[diffID] = p
			dir, size = tmp, p.size
		}
		total += size
		if total > s.lim.MaxImageBytes {
			return limitf("image larger than %d bytes", s.lim.MaxImageBytes)
		}
		root, err := os.OpenRoot(dir)
		if err != nil {
			return err
		}
		lowers = append([]*os.Root{root}, lowers...)
	}
	return nil
}

// countingReader fails once more than max bytes were read.
type countingReader struct {
	r   io.Reader
	n   int64
	max int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.max {
		return n, limitf("uncompressed layer stream larger than %d bytes", c.max)
	}
	return n, err
}

func (s *Store) unpackBlob(ctx context.Context, a *staged, desc ocispec.Descriptor, diffID digest.Digest,
	dir string, lowers []*os.Root, maxBytes int64) (int64, error) {
	p, err := a.blob(desc)
	if err != nil {
		return 0, err
	}
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var rd io.Reader = bufio.NewReaderSize(f, 64<<10)
	// klauspost's gzip, not the standard library's: the standard one
	// allocates Huffman link tables for every dynamic block (1 MB of
	// garbage for the 3 MB test image, 45 % of a pull's allocations),
	// klauspost's reuses them and inflates faster (issue 15).
	if layerMediaTypes[desc.MediaType] == compGzip {
		gz, err := gzip.NewReader(rd)
		if err != nil {
			return 0, invalidf("gzip: %v", err)
		}
		defer gz.Close()
		rd = gz
	}
	lim := s.lim
	lim.MaxLayerBytes = maxBytes
	// Content bytes are capped through the tar headers; this bounds tar
	// headers, padding and trailing data on top.
	h := sha256.New()
	cr := &countingReader{r: rd, max: maxBytes + int64(lim.MaxEntries)*2048 + maxTrailing}
	tee := io.TeeReader(cr, h)
	u, err := newUnpacker(dir, lowers, lim, s.log)
	if err != nil {
		return 0, err
	}
	defer u.Close()
	size, err := u.unpack(ctx, tee)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(io.Discard, io.LimitReader(tee, maxTrailing+1))
	if err != nil {
		return 0, invalidf("read after tar end: %v", err)
	}
	if n > maxTrailing {
		return 0, invalidf("more than %d bytes after the tar end", maxTrailing)
	}
	if got := digest.NewDigest(digest.SHA256, h); got != diffID {
		return 0, invalidf("uncompressed digest %s does not match diff_id %s", got, diffID)
	}
	if u.devices > 0 {
		s.log.Debug().Str("layer", string(desc.Digest)).Int("deviceNodes", u.devices).Msg("skipped device nodes in layer")
	}
	// A compression-ratio alarm (SECURITY.md §2.2): legitimate layers
	// rarely inflate more than 100:1; the size caps bound the damage, the
	// warning makes it visible.
	if desc.Size > 0 && cr.n > 1<<20 && cr.n/desc.Size > compressionAlarm {
		s.log.Warn().Str("layer", string(desc.Digest)).Int64("compressed", desc.Size).Int64("uncompressed", cr.n).
			Msg("layer expands more than 100:1: a possible decompression bomb")
	}
	return size, nil
}

// compressionAlarm is the uncompressed:compressed ratio above which a layer
// over 1 MiB is reported.
const compressionAlarm = 100

// commit makes the new layers and blobs durable, moves them into place and
// only then records them in bbolt (SECURITY.md §2.2 "Durability"). The
// order is what makes a crash safe: data is synced before any rename, the
// renames are synced before the bbolt update, so bbolt never names a layer
// or blob whose content may be missing. A crash before the update leaves
// uncommitted entries, which Open deletes; an error before it takes back
// what was moved.
func (s *Store) commit(a *staged, targets []target, order []*pendingLayer, usedDirs map[string]bool) ([]Image, error) {
	if err := syncFS(s.root); err != nil {
		return nil, err
	}
	var mv moved
	if err := s.placeLayers(order, usedDirs, &mv); err != nil {
		return nil, mv.rollback(err)
	}
	blobs := s.blobsToRecord(a, targets)
	if err := s.placeBlobs(a, blobs, &mv); err != nil {
		return nil, mv.rollback(err)
	}
	if err := s.syncStoreDirs(); err != nil {
		return nil, mv.rollback(err)
	}
	imgs, err := s.recordImages(targets, order, blobs)
	if err != nil {
		return nil, mv.rollback(fmt.Errorf("record images: %w", err))
	}
	return imgs, nil
}

// moved lists what commit renamed into layers/ and blobs/ so far, so that
// a failure before the bbolt update can take it out again.
type moved struct {
	layers, blobs []string
}

// rollback removes what was moved and returns err, with the errors of the
// removal if any.
func (m *moved) rollback(err error) error {
	var errs []error
	for _, p := range m.layers {
		errs = append(errs, os.RemoveAll(p))
	}
	for _, p := range m.blobs {
		errs = append(errs, os.Remove(p))
	}
	if rbErr := errors.Join(errs...); rbErr != nil {
		return fmt.Errorf("%w; rollback also failed: %v", err, rbErr)
	}
	return err
}

// placeLayers renames each unpacked layer from its temporary directory to
// its final name under layers/, chosen among the names not in usedDirs,
// and records the name in p.dir (p.tmp is cleared: the directory is no
// longer the ingest's to remove, but mv's). The caller has synced the
// layers' files; the renames themselves are synced by syncStoreDirs.
func (s *Store) placeLayers(order []*pendingLayer, usedDirs map[string]bool, mv *moved) error {
	for _, p := range order {
		name, err := pickDirName(p.diffID, usedDirs)
		if err != nil {
			return err
		}
		dst := s.layerPath(name)
		if err := os.RemoveAll(dst); err != nil { // an uncommitted leftover
			return err
		}
		if err := os.Rename(p.tmp, dst); err != nil {
			return fmt.Errorf("commit layer %s: %w", p.diffID, err)
		}
		usedDirs[name] = true
		p.dir, p.tmp = name, ""
		mv.layers = append(mv.layers, dst)
	}
	return nil
}

// blobsToRecord returns the blobs the images of targets keep: manifests
// and configs always, compressed layers when the store or this ingest
// keeps them and the blob is at hand (staged now, or already in blobs/).
func (s *Store) blobsToRecord(a *staged, targets []target) map[digest.Digest]blobRecord {
	blobs := map[digest.Digest]blobRecord{}
	for _, t := range targets {
		blobs[t.desc.Digest] = blobRecord{MediaType: t.desc.MediaType, Size: t.desc.Size}
		blobs[t.cfgDesc.Digest] = blobRecord{MediaType: t.cfgDesc.MediaType, Size: t.cfgDesc.Size}
		if s.opts.KeepLayerBlobs || a.keepLayers {
			for _, l := range t.manifest.Layers {
				_, staged := a.blobs[l.Digest]
				if _, err := os.Lstat(s.blobPath(l.Digest)); staged || err == nil {
					blobs[l.Digest] = blobRecord{MediaType: l.MediaType, Size: l.Size}
				}
			}
		}
	}
	return blobs
}

// placeBlobs renames the staged blobs of blobs into blobs/, in digest
// order, leaving alone those already there (content-addressed: the same
// bytes). The caller has synced their content; the renames are synced by
// syncStoreDirs.
func (s *Store) placeBlobs(a *staged, blobs map[digest.Digest]blobRecord, mv *moved) error {
	for _, d := range slices.Sorted(maps.Keys(blobs)) {
		dst := s.blobPath(d)
		if _, err := os.Lstat(dst); err == nil {
			continue // content-addressed: already there
		}
		if err := os.Rename(a.path(d), dst); err != nil {
			return fmt.Errorf("commit blob %s: %w", d, err)
		}
		mv.blobs = append(mv.blobs, dst)
	}
	return nil
}

// syncStoreDirs fsyncs layers/ and blobs/, making the renames into them
// durable before bbolt records their entries.
func (s *Store) syncStoreDirs() error {
	for _, d := range []string{filepath.Join(s.root, dirLayers), filepath.Join(s.root, dirBlobs)} {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	return nil
}

// recordImages records, in one bbolt transaction, the layers of order
// (moved into place, p.dir set), the blobs and the images of targets with
// their names, and returns the images. Either all of it is recorded or
// none.
func (s *Store) recordImages(targets []target, order []*pendingLayer, blobs map[digest.Digest]blobRecord) ([]Image, error) {
	now := time.Now().UTC()
	var imgs []Image
	err := s.db.Update(func(tx *bolt.Tx) error {
		v1 := tx.Bucket(bktV1)
		for _, p := range order {
			lr := layerRecord{DiffID: p.diffID, Dir: p.dir, Size: p.size, Blob: p.blob, MediaType: p.mediaType, Committed: now}
			if err := putJSON(v1.Bucket(bktLayers), string(p.diffID), lr); err != nil {
				return err
			}
		}
		for d, br := range blobs {
			if err := putJSON(v1.Bucket(bktBlobs), string(d), br); err != nil {
				return err
			}
		}
		imgs = imgs[:0]
		for _, t := range targets {
			img, err := s.putImage(v1, t, now)
			if err != nil {
				return err
			}
			imgs = append(imgs, img)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return imgs, nil
}

// putImage records the image of t, created now unless the store holds it
// already, and gives it t's name, taking the name from any other image.
func (s *Store) putImage(v1 *bolt.Bucket, t target, now time.Time) (Image, error) {
	rec, err := getImage(v1, t.desc.Digest)
	if err != nil {
		return Image{}, err
	}
	if rec == nil {
		rec = &imageRecord{
			Digest: t.desc.Digest, MediaType: t.desc.MediaType, ID: t.cfgDesc.Digest,
			Config: t.config, Layers: t.config.RootFS.DiffIDs, Created: now,
		}
		for _, l := range t.manifest.Layers {
			rec.LayerBlobs = append(rec.LayerBlobs, l.Digest)
		}
	}
	if t.name != "" && !slices.Contains(rec.Names, t.name) {
		if err := s.takeName(v1, t.name, t.desc.Digest); err != nil {
			return Image{}, err
		}
		rec.Names = append(rec.Names, t.name)
		slices.Sort(rec.Names)
	}
	if err := putJSON(v1.Bucket(bktImages), string(rec.Digest), rec); err != nil {
		return Image{}, err
	}
	return rec.image(t.name, imageSize(v1, rec)), nil
}

// takeName points name at the image d, removing it from the image that
// held it before (that image stays, possibly without a name).
func (s *Store) takeName(v1 *bolt.Bucket, name string, d digest.Digest) error {
	names := v1.Bucket(bktNames)
	if old := names.Get([]byte(name)); old != nil && !bytes.Equal(old, []byte(d)) {
		rec, err := getImage(v1, digest.Digest(old))
		if err != nil {
			return err
		}
		if rec != nil {
			rec.Names = slices.DeleteFunc(rec.Names, func(n string) bool { return n == name })
			if err := putJSON(v1.Bucket(bktImages), string(rec.Digest), rec); err != nil {
				return err
			}
		}
	}
	return names.Put([]byte(name), []byte(d))
}

// pickDirName returns a short directory name for a layer: the first 12
// hex digits of its diff_id, longer only if another layer has that prefix.
func pickDirName(diffID digest.Digest, used map[string]bool) (string, error) {
	hex := diffID.Encoded()
	for n := 12; n <= len(hex); n += 4 {
		if !used[hex[:n]] {
			return hex[:n], nil
		}
	}
	return "", fmt.Errorf("layer %s: no free directory name", diffID)
}

func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
