// Package hostile builds OCI image archives in memory, well-formed or
// hostile, for testing the image store's loader and layer unpacker. Cases
// returns the catalogue of hostile archives (SECURITY.md §2.3, U-01..U-41).
package hostile

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"runtime"
	"time"
)

// Media types used by the builder.
const (
	MediaTypeIndex     = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest  = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig    = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer     = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// Epoch is the mtime of every generated entry that sets none.
var Epoch = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// Entry is one tar entry of a layer.
type Entry struct {
	Name     string
	Type     byte // tar.TypeReg when 0
	Body     string
	Linkname string
	Mode     int64 // 0644 for files, 0755 for dirs when 0
	Uid, Gid int
	Devmajor int64
	Devminor int64
	Xattrs   map[string]string // written as SCHILY.xattr.* PAX records
	ModTime  time.Time         // Epoch when zero
	Size     int64             // header size when Body is empty and Size > 0 (zeros are written)
}

// Layer is one image layer.
type Layer struct {
	Entries   []Entry
	Gzip      bool
	Raw       []byte // uncompressed layer bytes; replaces Entries when set
	MediaType string // overrides the media type
	DiffID    string // overrides the diff_id written into the config
	Tamper    bool   // flip a byte of the stored blob after hashing
}

// Image is one image of an archive.
type Image struct {
	Name         string         // io.containerd.image.name annotation; "" for none
	RefName      string         // org.opencontainers.image.ref.name annotation
	Layers       []Layer        // bottom first
	Config       map[string]any // the config's "config" section (Entrypoint, Env, User, ...)
	MultiArch    bool           // wrap the manifest in an index next to a decoy platform
	EditConfig   func(map[string]any)
	EditManifest func(map[string]any)
	EditDesc     func(map[string]any) // the manifest's descriptor in index.json
	EditIndex    func(map[string]any) // the nested index of a MultiArch image
}

// File is one entry of the outer archive.
type File struct {
	Name string
	Data []byte
	Type byte // tar.TypeReg when 0
}

// Archive builds an OCI image archive holding imgs.
func Archive(imgs ...Image) []byte { return Tar(Files(imgs...)) }

// Files returns the outer archive's entries: oci-layout, blobs, index.json.
// Callers may alter them before calling Tar.
func Files(imgs ...Image) []File {
	b := &builder{seen: map[string]bool{}}
	b.add(File{Name: "oci-layout", Data: []byte(`{"imageLayoutVersion":"1.0.0"}`)})
	var descs []any
	for _, img := range imgs {
		descs = append(descs, b.image(img))
	}
	index := map[string]any{"schemaVersion": 2, "mediaType": MediaTypeIndex, "manifests": descs}
	b.add(File{Name: "index.json", Data: mustJSON(index)})
	return b.files
}

type builder struct {
	files []File
	seen  map[string]bool
}

func (b *builder) add(f File) { b.files = append(b.files, f) }

// blob stores data and returns its digest.
func (b *builder) blob(data []byte, tamper bool) string {
	d := Digest(data)
	if b.seen[d] {
		return d
	}
	b.seen[d] = true
	stored := bytes.Clone(data)
	if tamper && len(stored) > 0 {
		stored[len(stored)/2] ^= 0xff
	}
	b.add(File{Name: "blobs/sha256/" + d[len("sha256:"):], Data: stored})
	return d
}

func (b *builder) image(img Image) map[string]any {
	var layers []any
	var diffIDs []any
	for _, l := range img.Layers {
		raw := l.Raw
		if raw == nil {
			raw = LayerTar(l.Entries...)
		}
		diffID := Digest(raw)
		if l.DiffID != "" {
			diffID = l.DiffID
		}
		mt := MediaTypeLayer
		stored := raw
		if l.Gzip {
			mt, stored = MediaTypeLayerGzip, Gzip(raw)
		}
		if l.MediaType != "" {
			mt = l.MediaType
		}
		d := b.blob(stored, l.Tamper)
		layers = append(layers, map[string]any{"mediaType": mt, "digest": d, "size": len(stored)})
		diffIDs = append(diffIDs, diffID)
	}
	section := map[string]any{"Env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}
	for k, v := range img.Config {
		section[k] = v
	}
	cfg := map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       section,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
	}
	if img.EditConfig != nil {
		img.EditConfig(cfg)
	}
	cfgRaw := mustJSON(cfg)
	man := map[string]any{
		"schemaVersion": 2,
		"mediaType":     MediaTypeManifest,
		"config":        map[string]any{"mediaType": MediaTypeConfig, "digest": b.blob(cfgRaw, false), "size": len(cfgRaw)},
		"layers":        layers,
	}
	if img.EditManifest != nil {
		img.EditManifest(man)
	}
	manRaw := mustJSON(man)
	desc := map[string]any{"mediaType": MediaTypeManifest, "digest": b.blob(manRaw, false), "size": len(manRaw)}
	if img.MultiArch {
		desc["platform"] = map[string]any{"os": "linux", "architecture": runtime.GOARCH}
		decoyArch := "riscv64"
		if runtime.GOARCH == decoyArch {
			decoyArch = "s390x"
		}
		decoy := map[string]any{
			"mediaType": MediaTypeManifest,
			"digest":    "sha256:" + hex.EncodeToString(make([]byte, 32)), // not in the archive
			"size":      123,
			"platform":  map[string]any{"os": "linux", "architecture": decoyArch},
		}
		idx := map[string]any{"schemaVersion": 2, "mediaType": MediaTypeIndex, "manifests": []any{decoy, desc}}
		if img.EditIndex != nil {
			img.EditIndex(idx)
		}
		idxRaw := mustJSON(idx)
		desc = map[string]any{"mediaType": MediaTypeIndex, "digest": b.blob(idxRaw, false), "size": len(idxRaw)}
	}
	ann := map[string]any{}
	if img.Name != "" {
		ann["io.containerd.image.name"] = img.Name
	}
	if img.RefName != "" {
		ann["org.opencontainers.image.ref.name"] = img.RefName
	}
	if len(ann) > 0 {
		desc["annotations"] = ann
	}
	if img.EditDesc != nil {
		img.EditDesc(desc)
	}
	return desc
}

// LayerTar builds an uncompressed layer tar.
func LayerTar(entries ...Entry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{
			Name: e.Name, Typeflag: e.Type, Linkname: e.Linkname, Mode: e.Mode,
			Uid: e.Uid, Gid: e.Gid, Devmajor: e.Devmajor, Devminor: e.Devminor,
			ModTime: e.ModTime, Format: tar.FormatPAX,
		}
		if hdr.Typeflag == 0 {
			hdr.Typeflag = tar.TypeReg
		}
		if hdr.ModTime.IsZero() {
			hdr.ModTime = Epoch
		}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
			if hdr.Typeflag == tar.TypeDir {
				hdr.Mode = 0o755
			}
		}
		var body []byte
		if hdr.Typeflag == tar.TypeReg {
			body = []byte(e.Body)
			if len(body) == 0 && e.Size > 0 {
				body = make([]byte, e.Size)
			}
			hdr.Size = int64(len(body))
		}
		if len(e.Xattrs) > 0 {
			hdr.PAXRecords = map[string]string{}
			for k, v := range e.Xattrs {
				hdr.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			panic(fmt.Sprintf("hostile: tar header %q: %v", e.Name, err))
		}
		if _, err := tw.Write(body); err != nil {
			panic(fmt.Sprintf("hostile: tar body %q: %v", e.Name, err))
		}
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// Tar writes files as a tar archive.
func Tar(files []File) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{Name: f.Name, Typeflag: f.Type, Mode: 0o644, Size: int64(len(f.Data)), ModTime: Epoch, Format: tar.FormatPAX}
		if hdr.Typeflag == 0 {
			hdr.Typeflag = tar.TypeReg
		}
		if hdr.Typeflag != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			panic(fmt.Sprintf("hostile: archive header %q: %v", f.Name, err))
		}
		if hdr.Size > 0 {
			if _, err := tw.Write(f.Data); err != nil {
				panic(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// Gzip compresses b.
func Gzip(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := zw.Write(b); err != nil {
		panic(err)
	}
	if err := zw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// Digest returns the sha256 digest string of b.
func Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func archOf() string { return runtime.GOARCH }
