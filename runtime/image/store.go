package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
)

// Options configures a Store.
type Options struct {
	Limits Limits         // zero fields take the defaults
	Log    zerolog.Logger // warnings, e.g. skipped device nodes
	// KeepLayerBlobs keeps the compressed layer blobs under blobs/ after
	// unpacking (needed to re-export an image). Default false: only
	// manifests and configs are kept, the layers live unpacked.
	KeepLayerBlobs bool
}

// Limits bound what one Load may consume. Zero fields take the default
// given in parentheses.
type Limits struct {
	MaxLayerBytes    int64 // uncompressed bytes per layer (4 GiB)
	MaxImageBytes    int64 // uncompressed bytes per image, and archive bytes per Load (8 GiB)
	MaxEntries       int   // tar entries per layer (1,000,000)
	MaxPathLen       int   // bytes per entry name (4096)
	MaxDepth         int   // path components per entry name (256)
	MaxManifestBytes int64 // index, manifest or config (4 MiB)
	MaxLayers        int   // layers per manifest (1000)
}

func (l Limits) withDefaults() Limits {
	def := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	defi := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxLayerBytes, 4<<30)
	def(&l.MaxImageBytes, 8<<30)
	defi(&l.MaxEntries, 1_000_000)
	defi(&l.MaxPathLen, 4096)
	defi(&l.MaxDepth, 256)
	def(&l.MaxManifestBytes, 4<<20)
	defi(&l.MaxLayers, 1000)
	return l
}

// Image is one stored image as seen under one of its names.
type Image struct {
	Name    string          // full reference it was loaded as ("tender.test/workload:latest"), may be ""
	Digest  digest.Digest   // manifest digest
	ID      digest.Digest   // config digest
	Config  ocispec.Image   // parsed config
	Layers  []digest.Digest // diff_ids, bottom first
	Size    int64           // bytes of unpacked layers on disk
	Created time.Time       // when stored
}

// Store is a content-addressed image store rooted at one directory.
// It is safe for concurrent use; loads and removals are serialised.
type Store struct {
	root string
	opts Options
	lim  Limits
	log  zerolog.Logger
	db   *bolt.DB
	mu   sync.Mutex // serialises Load, Pull's ingest, Remove and Prune

	flightsMu sync.Mutex
	flights   map[digest.Digest]*flight // blob downloads under way, see Pull
}

const (
	dirBlobs   = "blobs/sha256"
	dirLayers  = "layers"
	dirTmp     = "tmp"
	dirPartial = "partial" // under tmp/: resumable downloads, kept by Open
	dbFile     = "meta.db"
	tmpPrefix  = "tmp-"
)

var (
	bktV1     = []byte("v1")
	bktImages = []byte("images")
	bktNames  = []byte("names")
	bktLayers = []byte("layers")
	bktBlobs  = []byte("blobs")
)

// imageRecord is the value in v1/images, keyed by manifest digest.
type imageRecord struct {
	Digest     digest.Digest   `json:"digest"`
	MediaType  string          `json:"mediaType"`
	ID         digest.Digest   `json:"id"`
	Config     ocispec.Image   `json:"config"`
	Layers     []digest.Digest `json:"layers"`     // diff_ids, bottom first
	LayerBlobs []digest.Digest `json:"layerBlobs"` // compressed blob digests, bottom first
	Names      []string        `json:"names,omitempty"`
	Created    time.Time       `json:"created"`
}

// layerRecord is the value in v1/layers, keyed by diff_id. A record exists
// only for committed layers.
type layerRecord struct {
	DiffID    digest.Digest `json:"diffID"`
	Dir       string        `json:"dir"` // name under layers/
	Size      int64         `json:"size"`
	Blob      digest.Digest `json:"blob,omitempty"`
	MediaType string        `json:"mediaType,omitempty"`
	Committed time.Time     `json:"committed"`
}

// blobRecord is the value in v1/blobs, keyed by digest; the file is
// blobs/sha256/<hex>.
type blobRecord struct {
	MediaType string `json:"mediaType"`
	Size      int64  `json:"size"`
}

// Open opens or creates the store at root (created 0700). It deletes
// uncommitted layer directories, unreferenced blob files and temporary
// files left by an interrupted load.
func Open(root string, opts Options) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open image store %s: %w", root, err)
	}
	for _, d := range []string{abs, filepath.Join(abs, "blobs"), filepath.Join(abs, dirBlobs), filepath.Join(abs, dirLayers), filepath.Join(abs, dirTmp)} {
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("open image store %s: %w", root, err)
		}
	}
	if err := os.Chmod(abs, 0o700); err != nil {
		return nil, fmt.Errorf("open image store %s: %w", root, err)
	}
	db, err := bolt.Open(filepath.Join(abs, dbFile), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open image store %s: %w", root, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		v1, err := tx.CreateBucketIfNotExists(bktV1)
		if err != nil {
			return err
		}
		for _, b := range [][]byte{bktImages, bktNames, bktLayers, bktBlobs} {
			if _, err := v1.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open image store %s: init schema: %w", root, err)
	}
	s := &Store{root: abs, opts: opts, lim: opts.Limits.withDefaults(), log: opts.Log, db: db, flights: map[digest.Digest]*flight{}}
	if err := s.sweep(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open image store %s: %w", root, err)
	}
	return s, nil
}

// Close closes the metadata database.
func (s *Store) Close() error {
	return s.db.Close()
}

// Root returns the absolute store directory.
func (s *Store) Root() string { return s.root }

// sweep removes everything on disk that bbolt does not record as committed.
func (s *Store) sweep() error {
	layers := map[string]bool{}
	blobs := map[string]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		v1 := tx.Bucket(bktV1)
		if err := v1.Bucket(bktLayers).ForEach(func(k, v []byte) error {
			var lr layerRecord
			if err := json.Unmarshal(v, &lr); err != nil {
				return fmt.Errorf("layer record %s: %w", k, err)
			}
			layers[lr.Dir] = true
			return nil
		}); err != nil {
			return err
		}
		return v1.Bucket(bktBlobs).ForEach(func(k, _ []byte) error {
			blobs[strings.TrimPrefix(string(k), "sha256:")] = true
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	var errs []error
	removeUnless := func(dir string, keep map[string]bool) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			errs = append(errs, err)
			return
		}
		for _, e := range ents {
			if keep[e.Name()] {
				continue
			}
			p := filepath.Join(dir, e.Name())
			s.log.Warn().Str("path", p).Msg("removing uncommitted image store entry")
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	removeUnless(filepath.Join(s.root, dirLayers), layers)
	removeUnless(filepath.Join(s.root, dirBlobs), blobs)
	removeUnless(filepath.Join(s.root, dirTmp), map[string]bool{dirPartial: true})
	if ents, err := os.ReadDir(filepath.Join(s.root, dirTmp, dirPartial)); err == nil {
		// Partial downloads are kept for resume; anything else there goes.
		for _, e := range ents {
			if !e.Type().IsRegular() || !isHex64(e.Name()) {
				errs = append(errs, os.RemoveAll(filepath.Join(s.root, dirTmp, dirPartial, e.Name())))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	return nil
}

func (s *Store) blobPath(d digest.Digest) string {
	return filepath.Join(s.root, dirBlobs, d.Encoded())
}

func (s *Store) layerPath(dir string) string {
	return filepath.Join(s.root, dirLayers, dir)
}

// imageSize sums the unpacked sizes of the record's layers.
func imageSize(v1 *bolt.Bucket, rec *imageRecord) int64 {
	var n int64
	lb := v1.Bucket(bktLayers)
	for _, l := range rec.Layers {
		var lr layerRecord
		if v := lb.Get([]byte(l)); v != nil && json.Unmarshal(v, &lr) == nil {
			n += lr.Size
		}
	}
	return n
}

func (rec *imageRecord) image(name string, size int64) Image {
	return Image{
		Name:    name,
		Digest:  rec.Digest,
		ID:      rec.ID,
		Config:  rec.Config,
		Layers:  slices.Clone(rec.Layers),
		Size:    size,
		Created: rec.Created,
	}
}

func getImage(v1 *bolt.Bucket, d digest.Digest) (*imageRecord, error) {
	v := v1.Bucket(bktImages).Get([]byte(d))
	if v == nil {
		return nil, nil
	}
	var rec imageRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, fmt.Errorf("image record %s: %w", d, err)
	}
	return &rec, nil
}

func putJSON(b *bolt.Bucket, key string, v any) error {
	buf, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), buf)
}

// resolve finds the image a reference names. The returned name is the
// name the image is seen under ("" when the reference was a digest or ID
// and the image has no name).
func resolve(v1 *bolt.Bucket, ref string) (*imageRecord, string, error) {
	rec, name, _, err := resolveRef(v1, ref)
	return rec, name, err
}

// resolveRef is resolve that also reports whether ref matched a name
// (as opposed to a digest or ID).
func resolveRef(v1 *bolt.Bucket, ref string) (*imageRecord, string, bool, error) {
	rec, name, byName, err := resolveRefInner(v1, ref)
	if rec == nil {
		byName = false
	}
	return rec, name, byName, err
}

func resolveRefInner(v1 *bolt.Bucket, ref string) (*imageRecord, string, bool, error) {
	names := v1.Bucket(bktNames)
	lookupName := func(n string) (*imageRecord, string, error) {
		v := names.Get([]byte(n))
		if v == nil {
			return nil, "", nil
		}
		rec, err := getImage(v1, digest.Digest(v))
		if err != nil || rec == nil {
			return nil, "", err
		}
		return rec, n, nil
	}
	firstName := func(rec *imageRecord) string {
		if len(rec.Names) > 0 {
			return rec.Names[0]
		}
		return ""
	}
	// An exact stored name first (covers names kept as-is, like "latest").
	if rec, n, err := lookupName(ref); rec != nil || err != nil {
		return rec, n, true, err
	}
	// Full digest: manifest digest or config digest (image ID).
	if strings.HasPrefix(ref, "sha256:") && len(ref) == len("sha256:")+64 {
		d, err := parseDigest(ref)
		if err != nil {
			return nil, "", false, err
		}
		rec, err := getImage(v1, d)
		if err != nil {
			return nil, "", false, err
		}
		if rec != nil {
			return rec, firstName(rec), false, nil
		}
	}
	// Unique ID prefix, at least 4 hex digits.
	if p := strings.TrimPrefix(ref, "sha256:"); isHex(p, 4, 64) {
		var found *imageRecord
		var ambiguous bool
		err := v1.Bucket(bktImages).ForEach(func(_, v []byte) error {
			var rec imageRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			if strings.HasPrefix(rec.ID.Encoded(), p) {
				if found != nil && found.Digest != rec.Digest {
					ambiguous = true
				}
				found = &rec
			}
			return nil
		})
		if err != nil {
			return nil, "", false, err
		}
		if ambiguous {
			return nil, "", false, invalidf("image id prefix %q is ambiguous", ref)
		}
		if found != nil {
			return found, firstName(found), false, nil
		}
	}
	// A docker-style name, normalised.
	if n, err := NormalizeName(ref); err == nil {
		if base, d, ok := strings.Cut(n, "@"); ok {
			rec, err := getImage(v1, digest.Digest(d))
			if err != nil || rec == nil {
				return nil, "", false, err
			}
			for _, rn := range rec.Names {
				if strings.HasPrefix(rn, base+":") {
					return rec, rn, false, nil
				}
			}
			return rec, firstName(rec), false, nil
		}
		rec, name, err := lookupName(n)
		return rec, name, true, err
	}
	return nil, "", false, nil
}

// Get finds an image by name ("tender.test/workload:latest", or
// "workload" normalised like docker), by manifest or config digest
// ("sha256:…"), or by a unique image ID prefix of at least 4 hex digits.
func (s *Store) Get(ref string) (Image, error) {
	var img Image
	err := s.db.View(func(tx *bolt.Tx) error {
		v1 := tx.Bucket(bktV1)
		rec, name, err := resolve(v1, ref)
		if err != nil {
			return err
		}
		if rec == nil {
			return fmt.Errorf("no such image %q: %w", ref, errdefs.ErrNotFound)
		}
		img = rec.image(name, imageSize(v1, rec))
		return nil
	})
	if err != nil {
		return Image{}, fmt.Errorf("get image: %w", err)
	}
	return img, nil
}

// List returns one entry per image name, plus one entry (Name "") for
// each image that has no name, sorted by name then digest.
func (s *Store) List() ([]Image, error) {
	var out []Image
	err := s.db.View(func(tx *bolt.Tx) error {
		v1 := tx.Bucket(bktV1)
		return v1.Bucket(bktImages).ForEach(func(_, v []byte) error {
			var rec imageRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			size := imageSize(v1, &rec)
			if len(rec.Names) == 0 {
				out = append(out, rec.image("", size))
			}
			for _, n := range rec.Names {
				out = append(out, rec.image(n, size))
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Digest < out[j].Digest
	})
	return out, nil
}

// LayerDirs returns the absolute directories of the image's unpacked
// layers, topmost first, ready to be used as overlayfs lowerdirs.
func (s *Store) LayerDirs(img Image) ([]string, error) {
	dirs := make([]string, 0, len(img.Layers))
	err := s.db.View(func(tx *bolt.Tx) error {
		lb := tx.Bucket(bktV1).Bucket(bktLayers)
		for i := len(img.Layers) - 1; i >= 0; i-- {
			v := lb.Get([]byte(img.Layers[i]))
			if v == nil {
				return fmt.Errorf("layer %s: %w", img.Layers[i], errdefs.ErrNotFound)
			}
			var lr layerRecord
			if err := json.Unmarshal(v, &lr); err != nil {
				return fmt.Errorf("layer record %s: %w", img.Layers[i], err)
			}
			dirs = append(dirs, s.layerPath(lr.Dir))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("layer dirs of %s: %w", img.Digest, err)
	}
	return dirs, nil
}

// Remove removes a name. When the reference is a digest or ID, or the
// name was the image's last one, the image itself is removed; layers and
// blobs no longer referenced by any image are then deleted.
func (s *Store) Remove(ref string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var deadLayers []string
	var deadBlobs []digest.Digest
	err := s.db.Update(func(tx *bolt.Tx) error {
		v1 := tx.Bucket(bktV1)
		rec, name, byName, err := resolveRef(v1, ref)
		if err != nil {
			return err
		}
		if rec == nil {
			return fmt.Errorf("no such image %q: %w", ref, errdefs.ErrNotFound)
		}
		if byName {
			if err := v1.Bucket(bktNames).Delete([]byte(name)); err != nil {
				return err
			}
			rec.Names = slices.DeleteFunc(rec.Names, func(n string) bool { return n == name })
			if len(rec.Names) > 0 {
				return putJSON(v1.Bucket(bktImages), string(rec.Digest), rec)
			}
		} else {
			for _, n := range rec.Names {
				if err := v1.Bucket(bktNames).Delete([]byte(n)); err != nil {
					return err
				}
			}
		}
		if err := v1.Bucket(bktImages).Delete([]byte(rec.Digest)); err != nil {
			return err
		}
		deadLayers, deadBlobs, err = collectGarbage(v1)
		return err
	})
	if err != nil {
		return fmt.Errorf("remove image: %w", err)
	}
	// bbolt no longer references these; a crash here leaves files that the
	// next Open sweeps.
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
		return fmt.Errorf("remove image: delete unreferenced content: %w", err)
	}
	return nil
}

// collectGarbage deletes the records of layers and blobs that no image
// references and returns the layer dir names and blob digests to delete.
func collectGarbage(v1 *bolt.Bucket) (layers []string, blobs []digest.Digest, err error) {
	usedLayers := map[string]bool{}
	usedBlobs := map[string]bool{}
	err = v1.Bucket(bktImages).ForEach(func(_, v []byte) error {
		var rec imageRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return err
		}
		usedBlobs[string(rec.Digest)] = true
		usedBlobs[string(rec.ID)] = true
		for _, l := range rec.Layers {
			usedLayers[string(l)] = true
		}
		for _, b := range rec.LayerBlobs {
			usedBlobs[string(b)] = true
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	var deadKeys [][]byte
	lb := v1.Bucket(bktLayers)
	err = lb.ForEach(func(k, v []byte) error {
		if usedLayers[string(k)] {
			return nil
		}
		var lr layerRecord
		if err := json.Unmarshal(v, &lr); err != nil {
			return err
		}
		layers = append(layers, lr.Dir)
		deadKeys = append(deadKeys, slices.Clone(k))
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for _, k := range deadKeys {
		if err := lb.Delete(k); err != nil {
			return nil, nil, err
		}
	}
	deadKeys = nil
	bb := v1.Bucket(bktBlobs)
	err = bb.ForEach(func(k, _ []byte) error {
		if !usedBlobs[string(k)] {
			blobs = append(blobs, digest.Digest(k))
			deadKeys = append(deadKeys, slices.Clone(k))
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for _, k := range deadKeys {
		if err := bb.Delete(k); err != nil {
			return nil, nil, err
		}
	}
	return layers, blobs, nil
}
