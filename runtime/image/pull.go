package image

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// PullOptions configures one Pull.
type PullOptions struct {
	// Platform picks the manifest from an index; nil means this machine
	// (GOARCH, and the GOARM variant on arm).
	Platform *ocispec.Platform
	// Registries holds mirrors, credentials and TLS settings.
	Registries RegistryConfig
	// Progress, when set, is called from the pulling goroutines, one call
	// at a time; it should return quickly.
	Progress func(ProgressEvent)
	// Retries bounds the consecutive attempts without progress per blob
	// after a dropped connection or a server error (default 5; at most
	// ten times that in all).
	Retries int
	// RetryDelay is the first backoff, doubled per failure up to 10 s
	// (default 500 ms).
	RetryDelay time.Duration
	// Parallel is the number of layer downloads at once (default 3).
	Parallel int
	// StallTimeout gives up on a blob response that sends nothing for this
	// long (a registry that never ends its stream, U-39); the download then
	// resumes with a new request. Default 60s.
	StallTimeout time.Duration
	// Transport replaces the HTTP transport (tests); CAFile and Insecure
	// still decide which schemes are allowed.
	Transport http.RoundTripper
}

// ProgressKind says what a ProgressEvent reports.
type ProgressKind string

// Progress kinds, in the order a pull reports them.
const (
	ProgressResolved   ProgressKind = "resolved"   // manifest found: Digest, Total = layer bytes, Message = platform
	ProgressCached     ProgressKind = "cached"     // layer already in the store, not downloaded
	ProgressDownload   ProgressKind = "download"   // bytes of a blob: Current of Total
	ProgressRetry      ProgressKind = "retry"      // a dropped download is retried: Message says why
	ProgressDownloaded ProgressKind = "downloaded" // blob complete and verified
	ProgressUnpack     ProgressKind = "unpack"     // unpacking and committing the image
	ProgressDone       ProgressKind = "done"       // image stored: Digest is the manifest digest
)

// ProgressEvent reports a step of a Pull.
type ProgressEvent struct {
	Kind    ProgressKind
	Digest  digest.Digest
	Current int64 // bytes of the blob on disk (resumed bytes included)
	Total   int64 // blob size
	Resumed int64 // bytes taken from an earlier partial download
	Message string
}

var manifestAccept = strings.Join([]string{
	ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest,
	mediaTypeDockerList, mediaTypeDockerManifest,
}, ", ")

func isManifestType(mt string) bool {
	switch mt {
	case ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest, mediaTypeDockerList, mediaTypeDockerManifest:
		return true
	}
	return false
}

// parsedRef is a normalised image reference split into its parts.
type parsedRef struct {
	name   string // stored name, "host/repo:tag"; "" when pulled by digest only
	domain string
	repo   string
	ref    string // tag or digest, as used in the manifest URL
	digest digest.Digest
}

func parsePullRef(s string) (parsedRef, error) {
	n, err := NormalizeName(s)
	if err != nil {
		return parsedRef{}, err
	}
	var p parsedRef
	base, dg, hasDigest := strings.Cut(n, "@")
	if i := strings.LastIndexByte(base, ':'); i > strings.LastIndexByte(base, '/') {
		p.name = base
		p.ref = base[i+1:]
		base = base[:i]
	}
	if hasDigest {
		p.digest = digest.Digest(dg)
		p.ref = dg
	}
	p.domain, p.repo, _ = strings.Cut(base, "/")
	return p, nil
}

func (o *PullOptions) defaults() {
	if o.Retries <= 0 {
		o.Retries = 5
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = 500 * time.Millisecond
	}
	if o.Parallel <= 0 {
		o.Parallel = 3
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 60 * time.Second
	}
	if fn := o.Progress; fn != nil {
		var mu sync.Mutex
		o.Progress = func(ev ProgressEvent) {
			mu.Lock()
			defer mu.Unlock()
			fn(ev)
		}
	}
}

func (o *PullOptions) progress(ev ProgressEvent) {
	if o.Progress != nil {
		o.Progress(ev)
	}
}

// Pull fetches an image from its registry (mirrors first), by tag or
// digest, picks the platform's manifest from an index, downloads the
// layers the store does not hold (resuming partial downloads), verifies
// every blob, unpacks and records it under its name. Compressed layer
// blobs of pulled images are kept under blobs/ so Save can export them.
func (s *Store) Pull(ctx context.Context, ref string, opts PullOptions) (Image, error) {
	img, err := s.pull(ctx, ref, opts)
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", ref, classify(err))
	}
	return img, nil
}

func (s *Store) pull(ctx context.Context, ref string, opts PullOptions) (Image, error) {
	opts.defaults()
	pr, err := parsePullRef(ref)
	if err != nil {
		return Image{}, err
	}
	stage, err := os.MkdirTemp(filepath.Join(s.root, dirTmp), "pull-")
	if err != nil {
		return Image{}, err
	}
	defer os.RemoveAll(stage)

	ep, desc, err := s.resolve(ctx, pr, opts, stage)
	if err != nil {
		return Image{}, err
	}
	a := newStaged(stage)
	a.keepLayers = true
	if opts.Platform != nil {
		a.plat = *opts.Platform
	}
	a.blobs[desc.Digest] = desc.Size
	a.fetch = func(d ocispec.Descriptor) error { return s.fetchSmall(ctx, ep, a, d) }
	t, err := s.walk(a, desc, pr.name, 1)
	if err != nil {
		return Image{}, err
	}
	if got := t.config.Platform; got.Architecture != "" && platformScore(ocispec.Platform{OS: got.OS, Architecture: got.Architecture, Variant: got.Variant}, a.plat) == 0 {
		// A single-platform manifest (no index) for another platform.
		if opts.Platform != nil {
			return Image{}, noPlatformf("image is for %s, not %s", platformString(got), platformString(a.plat))
		}
		s.log.Warn().Str("image", platformString(got)).Str("host", platformString(a.plat)).Msg("image platform does not match this machine")
	}
	var total int64
	for _, l := range t.manifest.Layers {
		total += l.Size
	}
	opts.progress(ProgressEvent{Kind: ProgressResolved, Digest: t.desc.Digest, Total: total, Message: platformString(a.plat)})

	committed, _, err := s.committedLayers()
	if err != nil {
		return Image{}, err
	}
	var need []ocispec.Descriptor
	for i, l := range t.manifest.Layers {
		if _, ok := committed[t.config.RootFS.DiffIDs[i]]; ok {
			opts.progress(ProgressEvent{Kind: ProgressCached, Digest: l.Digest, Current: l.Size, Total: l.Size})
			continue
		}
		if l.Size > s.lim.MaxLayerBytes {
			return Image{}, limitf("layer %s: %d bytes compressed, over the size cap of %d", shortDigest(l.Digest), l.Size, s.lim.MaxLayerBytes)
		}
		need = append(need, l)
	}
	paths, err := s.downloadAll(ctx, ep, need, opts)
	if err != nil {
		return Image{}, err
	}
	for d, p := range paths {
		a.paths[d] = p
		a.blobs[d] = t.layerSize(d)
	}
	// A layer committed earlier but removed meanwhile is fetched inside
	// ingest through a.fetch.
	a.fetch = func(d ocispec.Descriptor) error {
		p, err := s.download(ctx, ep, d, opts)
		if err != nil {
			return err
		}
		a.paths[d.Digest], a.blobs[d.Digest] = p, d.Size
		return nil
	}

	opts.progress(ProgressEvent{Kind: ProgressUnpack, Digest: t.desc.Digest})
	s.mu.Lock()
	imgs, err := s.ingest(ctx, a, []target{t})
	s.mu.Unlock()
	if err != nil {
		if unusable(err) {
			// Verified but unusable content: resuming it is pointless.
			for _, p := range paths {
				if filepath.Dir(p) == filepath.Join(s.root, dirTmp, dirPartial) {
					_ = os.Remove(p)
				}
			}
		}
		return Image{}, err
	}
	opts.progress(ProgressEvent{Kind: ProgressDone, Digest: imgs[0].Digest})
	return imgs[0], nil
}

func (t *target) layerSize(d digest.Digest) int64 {
	for _, l := range t.manifest.Layers {
		if l.Digest == d {
			return l.Size
		}
	}
	return -1
}

// resolve finds the first endpoint (mirrors, then the registry) that
// serves the reference and stages the top manifest or index.
func (s *Store) resolve(ctx context.Context, pr parsedRef, opts PullOptions, stage string) (*endpoint, ocispec.Descriptor, error) {
	hosts := opts.Registries.endpoints(pr.domain)
	var errs []error
	for i, host := range hosts {
		mirror := i < len(hosts)-1
		ep, err := opts.Registries.connect(ctx, host, pr.repo, opts.Transport)
		if err == nil {
			var desc ocispec.Descriptor
			desc, err = s.fetchManifest(ctx, ep, pr, stage)
			if err == nil {
				return ep, desc, nil
			}
		}
		if ctx.Err() != nil {
			return nil, ocispec.Descriptor{}, ctx.Err()
		}
		err = classify(err)
		if !mirror {
			if len(errs) > 0 && errors.Is(err, ErrUnreachable) {
				return nil, ocispec.Descriptor{}, fmt.Errorf("%w (mirrors: %v)", err, errors.Join(errs...))
			}
			return nil, ocispec.Descriptor{}, err
		}
		s.log.Warn().Err(err).Str("mirror", host).Msg("mirror failed, trying the next")
		errs = append(errs, err)
	}
	return nil, ocispec.Descriptor{}, errors.New("no registry endpoint") // not reached
}

func (s *Store) fetchManifest(ctx context.Context, ep *endpoint, pr parsedRef, stage string) (ocispec.Descriptor, error) {
	what := "manifest " + ep.host + "/" + ep.repo + ":" + pr.ref
	if pr.digest != "" {
		what = "manifest " + ep.host + "/" + ep.repo + "@" + pr.ref
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.url("manifests", pr.ref), nil)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := ep.client.Do(req)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ocispec.Descriptor{}, statusError(what, resp)
	}
	raw, err := readCapped(resp.Body, s.lim.MaxManifestBytes)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%s: %w", what, err)
	}
	d := digest.FromBytes(raw)
	if pr.digest != "" && d != pr.digest {
		return ocispec.Descriptor{}, categoryf(ErrDigestMismatch, "%s: content digest %s does not match", what, d)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if !isManifestType(mt) {
		// A registry that does not say (or says application/json): the
		// manifest's own mediaType, or its shape when it has none (the
		// image spec makes the field optional). readJSON checks the rest
		// as for a Load.
		mt = sniffManifestType(raw)
		if mt == "" {
			return ocispec.Descriptor{}, unsupportedf("%s: unsupported media type %q", what, quoteName(resp.Header.Get("Content-Type")))
		}
	}
	if err := os.WriteFile(filepath.Join(stage, d.Encoded()), raw, 0o600); err != nil {
		return ocispec.Descriptor{}, err
	}
	return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(raw))}, nil
}

// sniffManifestType returns the media type of a manifest or index blob
// from its mediaType field, or from its fields when it has none: an OCI
// index has "manifests", an OCI manifest "config". It returns "" for
// anything else.
func sniffManifestType(raw []byte) string {
	var probe struct {
		MediaType string          `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
		Config    json.RawMessage `json:"config"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return ""
	}
	switch {
	case probe.MediaType != "":
		if isManifestType(probe.MediaType) {
			return probe.MediaType
		}
		return ""
	case probe.Manifests != nil && probe.Config == nil:
		return ocispec.MediaTypeImageIndex
	case probe.Config != nil && probe.Manifests == nil:
		return ocispec.MediaTypeImageManifest
	}
	return ""
}

// fetchSmall fetches a manifest or config blob into the staging dir,
// capped at MaxManifestBytes and verified.
func (s *Store) fetchSmall(ctx context.Context, ep *endpoint, a *staged, desc ocispec.Descriptor) error {
	if desc.Size < 0 || desc.Size > s.lim.MaxManifestBytes {
		return limitf("blob %s: %d bytes, more than %d", shortDigest(desc.Digest), desc.Size, s.lim.MaxManifestBytes)
	}
	kind := "blobs"
	if isManifestType(desc.MediaType) {
		kind = "manifests"
	}
	what := "blob " + shortDigest(desc.Digest)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.url(kind, string(desc.Digest)), nil)
	if err != nil {
		return err
	}
	if kind == "manifests" {
		req.Header.Set("Accept", manifestAccept)
	}
	resp, err := ep.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError(what, resp)
	}
	err = stageBlob(a.path(desc.Digest), resp.Body, desc.Digest, desc.Size)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	a.blobs[desc.Digest] = desc.Size
	return nil
}

// downloadAll downloads blobs, Parallel at a time, and returns their
// partial-file paths.
func (s *Store) downloadAll(ctx context.Context, ep *endpoint, descs []ocispec.Descriptor, opts PullOptions) (map[digest.Digest]string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := map[digest.Digest]string{}
	var mu sync.Mutex
	var errs []error
	sem := make(chan struct{}, opts.Parallel)
	var wg sync.WaitGroup
	for _, d := range descs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			p, err := s.download(ctx, ep, d, opts)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if len(errs) == 0 {
					cancel()
				}
				errs = append(errs, err)
				return
			}
			out[d.Digest] = p
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, errs[0]
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// flight is one blob download shared by the Pulls that need the blob.
type flight struct {
	done chan struct{}
	path string
	err  error
}

// download fetches one blob to tmp/partial/<hex>, sharing a download
// already under way in this process for the same digest.
func (s *Store) download(ctx context.Context, ep *endpoint, desc ocispec.Descriptor, opts PullOptions) (string, error) {
	for {
		s.flightsMu.Lock()
		f, ok := s.flights[desc.Digest]
		if !ok {
			f = &flight{done: make(chan struct{})}
			s.flights[desc.Digest] = f
			s.flightsMu.Unlock()
			f.path, f.err = s.fetchBlob(ctx, ep, desc, opts)
			s.flightsMu.Lock()
			delete(s.flights, desc.Digest)
			s.flightsMu.Unlock()
			close(f.done)
			if f.err != nil {
				return "", fmt.Errorf("layer %s: %w", shortDigest(desc.Digest), f.err)
			}
			return f.path, nil
		}
		s.flightsMu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		if f.err == nil {
			return f.path, nil
		}
		if !errors.Is(f.err, context.Canceled) {
			return "", fmt.Errorf("layer %s: %w", shortDigest(desc.Digest), f.err)
		}
		// The leading Pull was cancelled, this one is not: take over.
	}
}

// partialFile is an open, flocked partial download.
type partialFile struct {
	f    *os.File
	path string
}

// openPartial opens and locks tmp/partial/<hex>, making sure the locked
// file is still the one at the path (another process may have finished
// and moved it).
func (s *Store) openPartial(d digest.Digest) (*partialFile, error) {
	dir := filepath.Join(s.root, dirTmp, dirPartial)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	p := filepath.Join(dir, d.Encoded())
	for {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return nil, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); errors.Is(err, unix.EWOULDBLOCK) {
			s.log.Info().Str("blob", string(d)).Msg("waiting for another process downloading the same blob")
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
		var a, b unix.Stat_t
		if unix.Fstat(int(f.Fd()), &a) == nil && unix.Stat(p, &b) == nil && a.Ino == b.Ino && a.Dev == b.Dev {
			return &partialFile{f: f, path: p}, nil
		}
		f.Close()
		if _, err := os.Lstat(s.blobPath(d)); err == nil {
			// Another process committed it meanwhile; the layer will be
			// found committed, but the caller wants a file: fetch again.
			s.log.Debug().Str("blob", string(d)).Msg("partial file moved by another process")
		}
	}
}

// countingWriter writes to f and hashes only what was written.
type countingWriter struct {
	f   *os.File
	h   hash.Hash
	off int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.off += int64(n)
	return n, err
}

// fetchBlob downloads one blob, resuming from its partial file, with
// bounded retries, and verifies it. The returned path holds the complete
// verified blob.
func (s *Store) fetchBlob(ctx context.Context, ep *endpoint, desc ocispec.Descriptor, opts PullOptions) (string, error) {
	if p, ok := s.keptBlob(desc); ok {
		return p, nil
	}
	pf, err := s.openPartial(desc.Digest)
	if err != nil {
		return "", err
	}
	defer pf.f.Close() // releases the flock
	f := pf.f
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if fi.Size() == 0 {
		// Another Pull may have committed it between the check above and
		// the creation of this (empty) partial file.
		if p, ok := s.keptBlob(desc); ok {
			_ = os.Remove(pf.path)
			return p, nil
		}
	}
	w := &countingWriter{f: f, h: sha256.New()}
	dl := &blobDownload{ep: ep, desc: desc, w: w, stallTimeout: opts.StallTimeout, progress: opts.progress}
	if fi.Size() > desc.Size {
		if err := dl.restart(); err != nil {
			return "", err
		}
	} else if fi.Size() > 0 {
		n, err := io.Copy(w.h, io.NewSectionReader(f, 0, fi.Size()))
		if err != nil {
			return "", err
		}
		w.off = n
		if _, err := f.Seek(n, io.SeekStart); err != nil {
			return "", err
		}
	}
	dl.resumed = w.off
	if dl.resumed > 0 && dl.resumed < desc.Size {
		s.log.Info().Str("blob", string(desc.Digest)).Int64("bytes", dl.resumed).Msg("resuming partial download")
	}
	failures, total := 0, 0
	for w.off < desc.Size {
		start := w.off
		err := s.fetchRange(ctx, dl)
		if err == nil {
			continue
		}
		if errors.Is(err, syscall.ENOSPC) {
			// Keep what was written whole: the file holds exactly w.off
			// good bytes (a short write is counted).
			_ = f.Truncate(w.off)
			return "", &wrapCategory{cat: ErrNoSpace, err: fmt.Errorf("download: %w", err)}
		}
		if !retryable(err) || ctx.Err() != nil {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			return "", err
		}
		total++
		if w.off > start {
			failures = 0
		}
		failures++
		if failures > opts.Retries || total > 10*opts.Retries {
			return "", categoryf(ErrUnreachable, "download: giving up after %d attempts: %v", total, err)
		}
		delay := min(opts.RetryDelay<<min(failures-1, 16), 10*time.Second)
		s.log.Warn().Err(err).Str("blob", string(desc.Digest)).Int64("offset", w.off).Dur("backoff", delay).Msg("download interrupted, retrying")
		dl.report(ProgressRetry, err.Error())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", ctx.Err()
		case <-t.C:
		}
	}
	if got := digest.NewDigest(digest.SHA256, w.h); got != desc.Digest {
		_ = os.Remove(pf.path)
		return "", categoryf(ErrDigestMismatch, "downloaded content has digest %s, not the manifest's", got)
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	dl.report(ProgressDownloaded, "")
	return pf.path, nil
}

// keptBlob returns the path of a committed blob under blobs/ of the
// descriptor's size.
func (s *Store) keptBlob(desc ocispec.Descriptor) (string, bool) {
	p := s.blobPath(desc.Digest)
	if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() && fi.Size() == desc.Size {
		return p, true
	}
	return "", false
}

// unusable reports whether err says that verified content cannot be
// stored (malformed, over a limit, not supported), so resuming its
// download later is pointless. A full disk is not such a case.
func unusable(err error) bool {
	if errors.Is(err, ErrNoSpace) {
		return false
	}
	return errdefs.IsInvalidArgument(err) || errdefs.IsResourceExhausted(err) || errdefs.IsNotImplemented(err)
}

// retryable reports whether a download error may go away on retry.
func retryable(err error) bool {
	switch {
	case errors.Is(err, ErrDigestMismatch), errdefs.IsUnauthorized(err), errdefs.IsNotFound(err),
		errdefs.IsInvalidArgument(err), errdefs.IsResourceExhausted(err):
		return false
	}
	return true
}

// blobDownload is one blob on its way into its partial file, across the
// requests fetchBlob makes for it.
type blobDownload struct {
	ep   *endpoint
	desc ocispec.Descriptor
	// w appends to the partial file and hashes what it appends: the file
	// holds w.off good bytes.
	w *countingWriter
	// stallTimeout: a response that sends nothing for this long is given
	// up, and the download resumed with a new request.
	stallTimeout time.Duration
	// resumed is how much of the blob the partial file held when the
	// download started.
	resumed  int64
	progress func(ProgressEvent)
}

// restart empties the partial file and the hash, for a download of the
// blob from its start.
func (dl *blobDownload) restart() error {
	dl.w.h.Reset()
	dl.w.off = 0
	if err := dl.w.f.Truncate(0); err != nil {
		return err
	}
	_, err := dl.w.f.Seek(0, io.SeekStart)
	return err
}

// report tells the pull's progress callback where the download stands.
func (dl *blobDownload) report(kind ProgressKind, msg string) {
	dl.progress(ProgressEvent{Kind: kind, Digest: dl.desc.Digest, Current: dl.w.off, Total: dl.desc.Size, Resumed: dl.resumed, Message: msg})
}

// fetchRange makes one GET for the rest of the blob and appends what it
// receives.
func (s *Store) fetchRange(ctx context.Context, dl *blobDownload) (err error) {
	ep, desc, w, stallTimeout := dl.ep, dl.desc, dl.w, dl.stallTimeout
	what := "blob " + shortDigest(desc.Digest)
	// A response that stops sending is given up after stallTimeout; the
	// caller then resumes with a new request.
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stall := time.AfterFunc(stallTimeout, cancel)
	defer stall.Stop()
	defer func() {
		if err != nil && rctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("%s: stalled: no data for %s", what, stallTimeout)
		}
	}()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, ep.url("blobs", string(desc.Digest)), nil)
	if err != nil {
		return err
	}
	if w.off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(w.off, 10)+"-")
	}
	resp, err := ep.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if w.off == 0 || !strings.HasPrefix(resp.Header.Get("Content-Range"), "bytes "+strconv.FormatInt(w.off, 10)+"-") {
			s.log.Warn().Str("blob", string(desc.Digest)).Str("contentRange", resp.Header.Get("Content-Range")).Msg("registry answered another range, downloading the blob from the start")
			if err := dl.restart(); err != nil {
				return err
			}
			return fmt.Errorf("%s: unexpected Content-Range %q", what, resp.Header.Get("Content-Range"))
		}
	case http.StatusOK:
		if w.off > 0 {
			s.log.Warn().Str("blob", string(desc.Digest)).Int64("had", w.off).Msg("registry ignored the Range request (200, not 206): downloading the blob from the start")
			if err := dl.restart(); err != nil {
				return err
			}
		}
	case http.StatusRequestedRangeNotSatisfiable:
		if err := dl.restart(); err != nil {
			return err
		}
		return fmt.Errorf("%s: range not satisfiable", what)
	default:
		return statusError(what, resp)
	}
	// 64 KiB: a read from a TLS connection returns at most a record
	// (16 KiB), from a plain one what the socket holds; a larger buffer
	// only raised the pull's peak memory (issue 15), one per download.
	buf := make([]byte, 64<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if w.off+int64(n) > desc.Size {
				_ = dl.restart()
				return categoryf(ErrDigestMismatch, "%s: registry sent more than the %d bytes the manifest gives", what, desc.Size)
			}
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			stall.Reset(stallTimeout)
			dl.report(ProgressDownload, "")
		}
		if rerr == io.EOF {
			if w.off < desc.Size {
				return fmt.Errorf("%s: %w after %d of %d bytes", what, io.ErrUnexpectedEOF, w.off, desc.Size)
			}
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("%s: %w", what, rerr)
		}
	}
}
