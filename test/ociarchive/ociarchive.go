// Package ociarchive writes OCI image archives (a tar of an oci-layout
// directory: oci-layout, index.json, blobs/sha256/...) from files given as
// data. It builds the project's own test images, so no test needs a
// registry on the internet. Output is deterministic: same input, same
// digests.
package ociarchive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Epoch is the modification time of every entry: reproducible builds.
var Epoch = time.Unix(1700000000, 0).UTC()

// File is one entry of a layer.
type File struct {
	Path     string // relative, e.g. "etc/passwd"
	Mode     int64  // permission bits plus setuid/setgid/sticky
	Type     byte   // tar.TypeReg (default), TypeDir, TypeSymlink, TypeLink, TypeChar...
	Data     []byte
	Linkname string
	UID, GID int
	Major    int64
	Minor    int64
}

// Layer is a set of files, written in order.
type Layer []File

// Image describes one platform's image.
type Image struct {
	Arch, Variant string // "amd64", "arm64", "arm" + "v7"
	Config        ocispec.ImageConfig
	Layers        []Layer
}

// Archive is an OCI layout being assembled.
type Archive struct {
	blobs map[digest.Digest][]byte
}

// New returns an empty archive.
func New() *Archive { return &Archive{blobs: map[digest.Digest][]byte{}} }

func (a *Archive) add(mediaType string, data []byte) ocispec.Descriptor {
	sum := sha256.Sum256(data)
	d := digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(sum[:]))
	a.blobs[d] = data
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

// LayerTar returns the uncompressed tar stream of a layer.
func LayerTar(l Layer) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range l {
		typ := f.Type
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		}
		h := &tar.Header{
			Name: f.Path, Typeflag: typ, Mode: mode, Uid: f.UID, Gid: f.GID,
			Linkname: f.Linkname, ModTime: Epoch, Devmajor: f.Major, Devminor: f.Minor,
			Format: tar.FormatPAX,
		}
		if typ == tar.TypeReg {
			h.Size = int64(len(f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("layer entry %s: %w", f.Path, err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, fmt.Errorf("layer entry %s: %w", f.Path, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// AddImage adds one platform's config, layers and manifest and returns the
// manifest's descriptor (with its platform set).
func (a *Archive) AddImage(img Image) (ocispec.Descriptor, error) {
	cfg := ocispec.Image{
		Platform: ocispec.Platform{Architecture: img.Arch, OS: "linux", Variant: img.Variant},
		Config:   img.Config,
		RootFS:   ocispec.RootFS{Type: "layers"},
	}
	created := Epoch
	cfg.Created = &created
	var layers []ocispec.Descriptor
	for i, l := range img.Layers {
		raw, err := LayerTar(l)
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("layer %d: %w", i, err)
		}
		sum := sha256.Sum256(raw)
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(sum[:])))
		layers = append(layers, a.add(ocispec.MediaTypeImageLayerGzip, gz(raw)))
	}
	cj, err := json.Marshal(cfg)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    a.add(ocispec.MediaTypeImageConfig, cj),
		Layers:    layers,
	}
	m.SchemaVersion = 2
	mj, err := json.Marshal(m)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	d := a.add(ocispec.MediaTypeImageManifest, mj)
	d.Platform = &ocispec.Platform{Architecture: img.Arch, OS: "linux", Variant: img.Variant}
	return d, nil
}

// AddIndex adds a nested image index of the given manifests (multi-arch)
// and returns its descriptor.
func (a *Archive) AddIndex(manifests []ocispec.Descriptor) (ocispec.Descriptor, error) {
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: manifests}
	idx.SchemaVersion = 2
	b, err := json.Marshal(idx)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return a.add(ocispec.MediaTypeImageIndex, b), nil
}

// Named returns d annotated with an image name as containerd and podman
// write it: the full reference and the tag.
func Named(d ocispec.Descriptor, name string) ocispec.Descriptor {
	tag := "latest"
	if i := lastColon(name); i >= 0 {
		tag = name[i+1:]
	}
	d.Annotations = map[string]string{
		"io.containerd.image.name": name,
		ocispec.AnnotationRefName:  tag,
	}
	return d
}

func lastColon(s string) int {
	for i := len(s) - 1; i >= 0 && s[i] != '/'; i-- {
		if s[i] == ':' {
			return i
		}
	}
	return -1
}

// Write writes the archive with top as the entries of index.json.
func (a *Archive) Write(w io.Writer, top ...ocispec.Descriptor) error {
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: top}
	idx.SchemaVersion = 2
	ij, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	put := func(name string, data []byte, mode int64, typ byte) error {
		h := &tar.Header{Name: name, Mode: mode, Size: int64(len(data)), ModTime: Epoch, Typeflag: typ}
		if typ == tar.TypeDir {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644, tar.TypeReg); err != nil {
		return err
	}
	if err := put("index.json", ij, 0o644, tar.TypeReg); err != nil {
		return err
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := put(dir, nil, 0o755, tar.TypeDir); err != nil {
			return err
		}
	}
	ds := make([]string, 0, len(a.blobs))
	for d := range a.blobs {
		ds = append(ds, string(d))
	}
	sort.Strings(ds)
	for _, d := range ds {
		dg := digest.Digest(d)
		if err := put("blobs/sha256/"+dg.Encoded(), a.blobs[dg], 0o644, tar.TypeReg); err != nil {
			return err
		}
	}
	return tw.Close()
}

// Single builds a one-platform archive named name.
func Single(name string, img Image) ([]byte, error) {
	a := New()
	d, err := a.AddImage(img)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := a.Write(&buf, Named(d, name)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WorkloadName is the name of the project's test image.
const WorkloadName = "tender.test/workload:latest"

// Workload describes the test image for one platform: the static workload
// binary at /workload (its entrypoint), /etc/passwd and /etc/group with a
// user app (uid 1000), and the directories a program expects.
func Workload(bin []byte, arch, variant string) Image {
	base := Layer{
		{Path: "etc/", Type: tar.TypeDir},
		{Path: "etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")},
		{Path: "etc/group", Data: []byte("root:x:0:\napp:x:1000:\ntty:x:5:\nnogroup:x:65534:\n")},
		{Path: "home/", Type: tar.TypeDir},
		{Path: "home/app/", Type: tar.TypeDir, Mode: 0o755, UID: 1000, GID: 1000},
		{Path: "root/", Type: tar.TypeDir, Mode: 0o700},
		{Path: "tmp/", Type: tar.TypeDir, Mode: 0o1777},
		{Path: "proc/", Type: tar.TypeDir},
		{Path: "sys/", Type: tar.TypeDir},
		{Path: "dev/", Type: tar.TypeDir},
		{Path: "data/", Type: tar.TypeDir, Mode: 0o777},
	}
	app := Layer{{Path: "workload", Mode: 0o755, Data: bin}}
	return Image{
		Arch: arch, Variant: variant,
		Config: ocispec.ImageConfig{
			Entrypoint: []string{"/workload"},
			Cmd:        []string{"sleep", "3600"},
			Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "WORKLOAD=1"},
			WorkingDir: "/",
			Labels:     map[string]string{"org.opencontainers.image.title": "tender test workload"},
		},
		Layers: []Layer{base, app},
	}
}
