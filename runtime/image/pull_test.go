package image_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrreg "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/tender-edge/tender/runtime/image"
	"github.com/tender-edge/tender/test/ociarchive"
	treg "github.com/tender-edge/tender/test/registry"
)

const helperEnv = "TENDER_PULL_HELPER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(helperEnv); spec != "" {
		os.Exit(pullHelper(spec))
	}
	os.Exit(m.Run())
}

// pullHelper runs a Pull in a subprocess (spec "root|ref|host") and
// prints download progress, one "download N" line per event.
func pullHelper(spec string) int {
	parts := strings.Split(spec, "|")
	s, err := image.Open(parts[0], image.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	opts := pullOpts(parts[2])
	var mu sync.Mutex
	opts.Progress = func(ev image.ProgressEvent) {
		if ev.Kind == image.ProgressDownload {
			mu.Lock()
			fmt.Printf("download %d\n", ev.Current)
			mu.Unlock()
		}
	}
	if _, err := s.Pull(context.Background(), parts[1], opts); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// testRegistry is go-containerregistry's in-memory registry on loopback,
// behind a fault-injecting handler.
type testRegistry struct {
	srv  *httptest.Server
	f    *treg.Faulty
	host string
}

func startRegistry(t *testing.T, f *treg.Faulty) *testRegistry {
	t.Helper()
	if f == nil {
		f = &treg.Faulty{}
	}
	f.Inner = ggcrreg.New(ggcrreg.Logger(log.New(io.Discard, "", 0)))
	if f.MinSize == 0 {
		f.MinSize = 64 << 10
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return &testRegistry{srv: srv, f: f, host: strings.TrimPrefix(srv.URL, "http://")}
}

func (r *testRegistry) push(t *testing.T, archive []byte, repoTag string) string {
	t.Helper()
	ref := r.host + "/" + repoTag
	if err := treg.Push(context.Background(), archive, ref, true); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

func pullOpts(host string) image.PullOptions {
	return image.PullOptions{
		Registries: image.RegistryConfig{Registries: map[string]image.Registry{host: {Insecure: true}}},
		RetryDelay: time.Millisecond,
	}
}

// layerBlobs returns the compressed layer digests and sizes of ref's
// manifest for arch.
func layerBlobs(t *testing.T, ref, arch string) ([]string, []int64) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: arch}))
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var ds []string
	var sizes []int64
	for _, l := range m.Layers {
		ds = append(ds, l.Digest.String())
		sizes = append(sizes, l.Size)
	}
	return ds, sizes
}

func workloadArchive(t *testing.T, name string, archs []string, extra ...ociarchive.Layer) []byte {
	t.Helper()
	a, err := treg.WorkloadArchive(name, archs, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// otherArch is an architecture other than this machine's.
func otherArch() string {
	if goruntime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

func duBytes(t *testing.T, dirs ...string) int64 {
	t.Helper()
	var n int64
	for _, d := range dirs {
		err := filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
				n += fi.Size()
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func checkWorkload(t *testing.T, s *image.Store, img image.Image, want []byte) {
	t.Helper()
	dirs, err := s.LayerDirs(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join(d, "workload")); err == nil {
			if !bytes.Equal(b, want) {
				t.Fatalf("workload in %s differs from the pushed binary", d)
			}
			return
		}
	}
	t.Fatalf("no layer of %s holds /workload", img.Digest)
}

func TestPull_TagDigestPlatform(t *testing.T) {
	reg := startRegistry(t, nil)
	archs := []string{goruntime.GOARCH, otherArch()}
	ref := reg.push(t, workloadArchive(t, "tender.test/workload:multi", archs), "tender/workload:multi")
	s := openStore(t, t.TempDir(), image.Limits{})
	ctx := context.Background()

	var events []image.ProgressKind
	opts := pullOpts(reg.host)
	opts.Progress = func(ev image.ProgressEvent) {
		if len(events) == 0 || events[len(events)-1] != ev.Kind {
			events = append(events, ev.Kind)
		}
	}
	img, err := s.Pull(ctx, ref, opts)
	if err != nil {
		t.Fatal(err)
	}
	if img.Name != ref || img.Config.Architecture != goruntime.GOARCH {
		t.Fatalf("pulled %q arch %q", img.Name, img.Config.Architecture)
	}
	host, _ := treg.WorkloadBinary(goruntime.GOARCH)
	checkWorkload(t, s, img, host)
	if events[0] != image.ProgressResolved || events[len(events)-1] != image.ProgressDone {
		t.Errorf("progress kinds %v", events)
	}
	if got, err := s.Get(ref); err != nil || got.Digest != img.Digest {
		t.Fatalf("get %s: %v %v", ref, got.Digest, err)
	}

	// Another platform, chosen through the option.
	other := pullOpts(reg.host)
	other.Platform = &ocispec.Platform{OS: "linux", Architecture: otherArch()}
	img2, err := s.Pull(ctx, ref, other)
	if err != nil {
		t.Fatal(err)
	}
	if img2.Config.Architecture != otherArch() || img2.ID == img.ID {
		t.Fatalf("platform pull gave arch %q id %s", img2.Config.Architecture, img2.ID)
	}
	ob, _ := treg.WorkloadBinary(otherArch())
	checkWorkload(t, s, img2, ob)

	// By digest of the index, and of the platform manifest directly.
	r, _ := name.ParseReference(ref, name.Insecure)
	desc, err := remote.Head(r)
	if err != nil {
		t.Fatal(err)
	}
	byDigest, err := s.Pull(ctx, reg.host+"/tender/workload@"+desc.Digest.String(), pullOpts(reg.host))
	if err != nil {
		t.Fatal(err)
	}
	if byDigest.Digest != img.Digest {
		t.Fatalf("pull by index digest gave %s, want %s", byDigest.Digest, img.Digest)
	}
	byManifest, err := s.Pull(ctx, reg.host+"/tender/workload@"+string(img2.Digest), pullOpts(reg.host))
	if err != nil {
		t.Fatal(err)
	}
	if byManifest.Digest != img2.Digest {
		t.Fatalf("pull by manifest digest gave %s", byManifest.Digest)
	}

	// No such platform.
	none := pullOpts(reg.host)
	none.Platform = &ocispec.Platform{OS: "linux", Architecture: "s390x"}
	if _, err := s.Pull(ctx, ref, none); !errors.Is(err, image.ErrNoPlatform) {
		t.Fatalf("s390x pull: %v, want ErrNoPlatform", err)
	}
}

func TestPull_Errors(t *testing.T) {
	reg := startRegistry(t, nil)
	ref := reg.push(t, workloadArchive(t, "tender.test/workload:e", []string{goruntime.GOARCH}), "tender/workload:e")
	s := openStore(t, t.TempDir(), image.Limits{})
	ctx := context.Background()
	cases := []struct {
		name string
		ref  string
		opts image.PullOptions
		want error
	}{
		{"unknown tag", reg.host + "/tender/workload:nope", pullOpts(reg.host), errdefs.ErrNotFound},
		{"unknown repository", reg.host + "/tender/nothing:e", pullOpts(reg.host), errdefs.ErrNotFound},
		{"plain HTTP without insecure", ref, image.PullOptions{RetryDelay: time.Millisecond}, image.ErrUnreachable},
		{"unreachable", closedAddr(t) + "/tender/workload:e", pullOpts(closedAddr(t)), image.ErrUnreachable},
		{"layer over the size cap", ref, pullOpts(reg.host), errdefs.ErrResourceExhausted},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := s
			if c.want == errdefs.ErrResourceExhausted {
				st = openStore(t, t.TempDir(), image.Limits{MaxLayerBytes: 64 << 10})
			}
			_, err := st.Pull(ctx, c.ref, c.opts)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			t.Log(err)
		})
	}
	if imgs, _ := s.List(); len(imgs) != 0 {
		t.Fatalf("failed pulls stored %d images", len(imgs))
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	srv := httptest.NewServer(nil)
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	return addr
}

func TestPull_DedupeSharedLayers(t *testing.T) {
	reg := startRegistry(t, nil)
	archs := []string{goruntime.GOARCH}
	refA := reg.push(t, workloadArchive(t, "tender.test/a:1", archs), "tender/a:1")
	extra := ociarchive.Layer{{Path: "extra.txt", Data: []byte("only in b\n")}}
	refB := reg.push(t, workloadArchive(t, "tender.test/b:1", archs, extra), "tender/b:1")
	blobs, sizes := layerBlobs(t, refA, goruntime.GOARCH)

	root := t.TempDir()
	s := openStore(t, root, image.Limits{})
	if _, err := s.Pull(context.Background(), refA, pullOpts(reg.host)); err != nil {
		t.Fatal(err)
	}
	before := duBytes(t, filepath.Join(root, "layers"), filepath.Join(root, "blobs"))
	var cached int
	opts := pullOpts(reg.host)
	opts.Progress = func(ev image.ProgressEvent) {
		if ev.Kind == image.ProgressCached {
			cached++
		}
	}
	if _, err := s.Pull(context.Background(), refB, opts); err != nil {
		t.Fatal(err)
	}
	grew := duBytes(t, filepath.Join(root, "layers"), filepath.Join(root, "blobs")) - before
	if grew > 16<<10 || grew <= 0 {
		t.Fatalf("second image sharing %d bytes of layers grew the store by %d bytes", sizes[0]+sizes[1], grew)
	}
	if cached != 2 {
		t.Errorf("%d layers reported cached, want 2", cached)
	}
	for _, d := range blobs {
		if n := reg.f.Gets(d); n != 1 {
			t.Errorf("shared layer %s fetched %d times", d, n)
		}
	}
}

func TestPull_ConcurrentShareDownload(t *testing.T) {
	f := &treg.Faulty{Gate: make(chan struct{}), Gated: make(chan struct{})}
	reg := startRegistry(t, f)
	gated := f.Gated
	ref := reg.push(t, workloadArchive(t, "tender.test/c:1", []string{goruntime.GOARCH}), "tender/c:1")
	blobs, _ := layerBlobs(t, ref, goruntime.GOARCH)
	s := openStore(t, t.TempDir(), image.Limits{})
	var wg sync.WaitGroup
	errs := make([]error, 4)
	imgs := make([]image.Image, 4)
	pull := func(i int, opts image.PullOptions) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			imgs[i], errs[i] = s.Pull(context.Background(), ref, opts)
		}()
	}
	// The first pull's layer download is held at the registry until the
	// others have resolved the manifest, so they join the download.
	pull(0, pullOpts(reg.host))
	<-gated
	var resolved sync.WaitGroup
	for i := 1; i < len(errs); i++ {
		resolved.Add(1)
		opts := pullOpts(reg.host)
		opts.Progress = func(ev image.ProgressEvent) {
			if ev.Kind == image.ProgressResolved {
				resolved.Done()
			}
		}
		pull(i, opts)
	}
	resolved.Wait()
	close(f.Gate)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("pull %d: %v", i, err)
		}
		if imgs[i].Digest != imgs[0].Digest {
			t.Fatalf("pull %d gave %s", i, imgs[i].Digest)
		}
	}
	for _, d := range blobs {
		if n := reg.f.Gets(d); n != 1 {
			t.Errorf("layer %s fetched %d times by 4 concurrent pulls", d, n)
		}
	}
}

func TestPull_ResumeAfterDroppedConnections(t *testing.T) {
	f := &treg.Faulty{CutAfter: []int{300 << 10, 200 << 10, 1, 100 << 10}}
	reg := startRegistry(t, f)
	ref := reg.push(t, workloadArchive(t, "tender.test/r:1", []string{goruntime.GOARCH}), "tender/r:1")
	_, sizes := layerBlobs(t, ref, goruntime.GOARCH)
	s := openStore(t, t.TempDir(), image.Limits{})
	var retries int
	opts := pullOpts(reg.host)
	opts.Progress = func(ev image.ProgressEvent) {
		if ev.Kind == image.ProgressRetry {
			retries++
		}
	}
	img, err := s.Pull(context.Background(), ref, opts)
	if err != nil {
		t.Fatal(err)
	}
	bin, _ := treg.WorkloadBinary(goruntime.GOARCH)
	checkWorkload(t, s, img, bin)
	big := sizes[len(sizes)-1]
	if served := f.Served(); float64(served) >= 1.1*float64(big) {
		t.Errorf("served %d bytes for a %d-byte layer: not resumed", served, big)
	}
	if retries != 4 || f.Ranges() != 4 {
		t.Errorf("%d retries, %d range requests; want 4 each", retries, f.Ranges())
	}
}

// U-39: a registry that stops sending in the middle of a blob and never
// ends the stream. The stalled response is given up and the download
// resumes with a Range request.
func TestPull_StalledStreamResumes(t *testing.T) {
	f := &treg.Faulty{HoldAfter: 200 << 10, Held: make(chan struct{})}
	reg := startRegistry(t, f)
	ref := reg.push(t, workloadArchive(t, "tender.test/st:1", []string{goruntime.GOARCH}), "tender/st:1")
	s := openStore(t, t.TempDir(), image.Limits{})
	opts := pullOpts(reg.host)
	opts.StallTimeout = 300 * time.Millisecond
	var msgs []string
	opts.Progress = func(ev image.ProgressEvent) {
		if ev.Kind == image.ProgressRetry {
			msgs = append(msgs, ev.Message)
		}
	}
	// Without the stall timeout this pull would wait forever.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	img, err := s.Pull(ctx, ref, opts)
	if err != nil {
		t.Fatal(err)
	}
	bin, _ := treg.WorkloadBinary(goruntime.GOARCH)
	checkWorkload(t, s, img, bin)
	if f.Ranges() != 1 || len(msgs) != 1 || !strings.Contains(msgs[0], "stalled") {
		t.Errorf("want one stalled retry resumed with a Range request; retries %q, %d ranges", msgs, f.Ranges())
	}
}

func TestPull_RangeIgnored(t *testing.T) {
	f := &treg.Faulty{CutAfter: []int{300 << 10}, IgnoreRange: true}
	reg := startRegistry(t, f)
	ref := reg.push(t, workloadArchive(t, "tender.test/i:1", []string{goruntime.GOARCH}), "tender/i:1")
	s := openStore(t, t.TempDir(), image.Limits{})
	img, err := s.Pull(context.Background(), ref, pullOpts(reg.host))
	if err != nil {
		t.Fatal(err)
	}
	bin, _ := treg.WorkloadBinary(goruntime.GOARCH)
	checkWorkload(t, s, img, bin)
}

func TestPull_DigestMismatch(t *testing.T) {
	f := &treg.Faulty{Flip: true}
	reg := startRegistry(t, f)
	ref := reg.push(t, workloadArchive(t, "tender.test/m:1", []string{goruntime.GOARCH}), "tender/m:1")
	root := t.TempDir()
	s := openStore(t, root, image.Limits{})
	_, err := s.Pull(context.Background(), ref, pullOpts(reg.host))
	if !errors.Is(err, image.ErrDigestMismatch) {
		t.Fatalf("err = %v, want ErrDigestMismatch", err)
	}
	t.Log(err)
	if imgs, _ := s.List(); len(imgs) != 0 {
		t.Fatalf("%d images stored", len(imgs))
	}
	if n := len(layerDirs(t, root)); n != 0 {
		t.Fatalf("%d layer dirs left", n)
	}
	// Only verified blobs may stay (as partial files, for the next pull).
	big, _ := layerBlobs(t, ref, goruntime.GOARCH)
	if _, err := os.Stat(filepath.Join(root, "tmp", "partial", strings.TrimPrefix(big[len(big)-1], "sha256:"))); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the corrupt blob is still kept: %v", err)
	}
	if blobs, _ := os.ReadDir(filepath.Join(root, "blobs", "sha256")); len(blobs) != 0 {
		t.Fatalf("left %d blobs", len(blobs))
	}
}

// TestPull_ResumeAfterKill kills a pulling subprocess mid-blob, then pulls
// again in-process: only the rest of the blob is fetched.
func TestPull_ResumeAfterKill(t *testing.T) {
	const hold = 700 << 10
	f := &treg.Faulty{HoldAfter: hold, Held: make(chan struct{})}
	reg := startRegistry(t, f)
	ref := reg.push(t, workloadArchive(t, "tender.test/k:1", []string{goruntime.GOARCH}), "tender/k:1")
	blobs, sizes := layerBlobs(t, ref, goruntime.GOARCH)
	big, bigSize := blobs[len(blobs)-1], sizes[len(sizes)-1]
	root := t.TempDir()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+root+"|"+ref+"|"+reg.host)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	reached := false
	for !reached && sc.Scan() {
		n, _ := strconv.ParseInt(strings.TrimPrefix(sc.Text(), "download "), 10, 64)
		reached = n == hold
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	if !reached {
		t.Fatalf("helper never wrote %d bytes: %s", hold, stderr.String())
	}
	partial := filepath.Join(root, "tmp", "partial", strings.TrimPrefix(big, "sha256:"))
	if fi, err := os.Stat(partial); err != nil || fi.Size() != hold {
		t.Fatalf("partial file after kill: %v %v", fi, err)
	}

	s := openStore(t, root, image.Limits{}) // Open's sweep keeps the partial file
	if fi, err := os.Stat(partial); err != nil || fi.Size() != hold {
		t.Fatalf("partial file after Open: %v %v", fi, err)
	}
	img, err := s.Pull(context.Background(), ref, pullOpts(reg.host))
	if err != nil {
		t.Fatal(err)
	}
	if reqs := f.PerRequest(big); len(reqs) != 2 || reqs[0] != hold || reqs[1] != bigSize-hold {
		t.Fatalf("layer GETs served %v bytes, want [%d %d]", reqs, hold, bigSize-hold)
	}
	bin, _ := treg.WorkloadBinary(goruntime.GOARCH)
	checkWorkload(t, s, img, bin)
	if _, err := os.Stat(partial); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("partial file still there after commit: %v", err)
	}
}

func TestPull_DiskFull(t *testing.T) {
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m,mode=0700"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	reg := startRegistry(t, nil)
	ref := reg.push(t, workloadArchive(t, "tender.test/d:1", []string{goruntime.GOARCH}), "tender/d:1")
	blobs, sizes := layerBlobs(t, ref, goruntime.GOARCH)
	root := filepath.Join(mnt, "images")
	s := openStore(t, root, image.Limits{})
	_, err := s.Pull(context.Background(), ref, pullOpts(reg.host))
	if !errors.Is(err, image.ErrNoSpace) {
		t.Fatalf("err = %v, want ErrNoSpace", err)
	}
	if !strings.Contains(err.Error(), "no space left on device") {
		t.Errorf("error does not say the disk is full: %v", err)
	}
	if imgs, _ := s.List(); len(imgs) != 0 {
		t.Fatalf("%d images stored", len(imgs))
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", unix.MS_REMOUNT, "size=64m,mode=0700"); err != nil {
		t.Fatal(err)
	}
	img, err := s.Pull(context.Background(), ref, pullOpts(reg.host))
	if err != nil {
		t.Fatal(err)
	}
	reqs := reg.f.PerRequest(blobs[len(blobs)-1])
	if len(reqs) != 2 || reqs[1] >= sizes[len(sizes)-1] {
		t.Errorf("layer GETs served %v bytes for a %d-byte layer: not resumed", reqs, sizes[len(sizes)-1])
	}
	bin, _ := treg.WorkloadBinary(goruntime.GOARCH)
	checkWorkload(t, s, img, bin)
}

func TestPull_MirrorFirst(t *testing.T) {
	mirror := startRegistry(t, nil)
	ref := mirror.push(t, workloadArchive(t, "tender.test/w:1", []string{goruntime.GOARCH}), "tender/w:1")
	dead := closedAddr(t)
	s := openStore(t, t.TempDir(), image.Limits{})
	opts := image.PullOptions{RetryDelay: time.Millisecond, Registries: image.RegistryConfig{Registries: map[string]image.Registry{
		"tender.test": {Mirrors: []string{dead, mirror.host}},
		dead:          {Insecure: true},
		mirror.host:   {Insecure: true},
	}}}
	img, err := s.Pull(context.Background(), "tender.test/tender/w:1", opts)
	if err != nil {
		t.Fatal(err)
	}
	if img.Name != "tender.test/tender/w:1" {
		t.Fatalf("name %q", img.Name)
	}
	_ = ref
}

func TestPull_SavePrune(t *testing.T) {
	reg := startRegistry(t, nil)
	ref := reg.push(t, workloadArchive(t, "tender.test/s:1", []string{goruntime.GOARCH}), "tender/s:1")
	root := t.TempDir()
	s := openStore(t, root, image.Limits{})
	img, err := s.Pull(context.Background(), ref, pullOpts(reg.host))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := s.Save(context.Background(), ref, &buf); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, t.TempDir(), image.Limits{})
	imgs := load(t, s2, buf.Bytes())
	if len(imgs) != 1 || imgs[0].Digest != img.Digest || imgs[0].Name != ref {
		t.Fatalf("reloaded %+v, want digest %s name %s", imgs, img.Digest, ref)
	}

	removed, freed, err := s.Prune(map[digest.Digest]bool{img.ID: true})
	if err != nil || len(removed) != 0 || freed != 0 {
		t.Fatalf("prune keeping the image: %v %d %v", removed, freed, err)
	}
	removed, freed, err = s.Prune(nil)
	if err != nil || len(removed) != 1 || removed[0].Digest != img.Digest {
		t.Fatalf("prune: %v %v", removed, err)
	}
	if freed < img.Size {
		t.Errorf("freed %d bytes, image has %d", freed, img.Size)
	}
	if n := len(layerDirs(t, root)); n != 0 {
		t.Fatalf("%d layer dirs left after prune", n)
	}
	if left, _ := os.ReadDir(filepath.Join(root, "blobs", "sha256")); len(left) != 0 {
		t.Fatalf("%d blobs left after prune", len(left))
	}
}

func TestPull_DistributionTLSAuth(t *testing.T) {
	r := treg.Start(t, treg.Options{TLS: true, Htpasswd: true})
	arch := []string{goruntime.GOARCH}
	ref := r.Addr + "/tender/workload:tls"
	tr := r.Transport()
	err := treg.Push(context.Background(), workloadArchive(t, "tender.test/workload:tls", arch), ref, false,
		remote.WithAuth(&authn.Basic{Username: r.Username, Password: r.Password}), remote.WithTransport(tr))
	if err != nil {
		t.Fatal(err)
	}
	s := openStore(t, t.TempDir(), image.Limits{})
	ctx := context.Background()
	cfg := func(reg image.Registry) image.PullOptions {
		return image.PullOptions{RetryDelay: time.Millisecond, Registries: image.RegistryConfig{
			Registries:   map[string]image.Registry{r.Addr: reg},
			DockerConfig: filepath.Join(t.TempDir(), "none.json"),
		}}
	}
	if _, err := s.Pull(ctx, ref, cfg(image.Registry{CAFile: r.CAFile})); !errdefs.IsUnauthorized(err) {
		t.Fatalf("pull without credentials: %v, want ErrUnauthorized", err)
	}
	if _, err := s.Pull(ctx, ref, cfg(image.Registry{CAFile: r.CAFile, Username: r.Username, Password: "wrong"})); !errdefs.IsUnauthorized(err) {
		t.Fatalf("pull with a wrong password: %v, want ErrUnauthorized", err)
	}
	if _, err := s.Pull(ctx, ref, cfg(image.Registry{Username: r.Username, Password: r.Password})); !errors.Is(err, image.ErrUnreachable) {
		t.Fatalf("pull without the CA: %v, want ErrUnreachable", err)
	}
	img, err := s.Pull(ctx, ref, cfg(image.Registry{CAFile: r.CAFile, Username: r.Username, Password: r.Password}))
	if err != nil {
		t.Fatal(err)
	}
	bin, _ := treg.WorkloadBinary(goruntime.GOARCH)
	checkWorkload(t, s, img, bin)

	// Credentials from a docker config.json.
	dc := filepath.Join(t.TempDir(), "config.json")
	auth := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, r.Addr, b64(r.Username+":"+r.Password))
	if err := os.WriteFile(dc, []byte(auth), 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, t.TempDir(), image.Limits{})
	opts := cfg(image.Registry{CAFile: r.CAFile})
	opts.Registries.DockerConfig = dc
	if _, err := s2.Pull(ctx, ref, opts); err != nil {
		t.Fatalf("pull with docker config.json credentials: %v", err)
	}
}

func TestLoadRegistryConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.yaml")
	yml := `
log: {level: debug}
registries:
  docker.io:
    mirrors: ["mirror.local:5000"]
  mirror.local:5000:
    insecure: true
  registry.example.com:
    username: bob
    password: pw
    caFile: /etc/tender/ca.pem
`
	if err := os.WriteFile(p, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := image.LoadRegistryConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if m := cfg.Registries["docker.io"].Mirrors; len(m) != 1 || m[0] != "mirror.local:5000" {
		t.Errorf("mirrors %v", m)
	}
	if !cfg.Registries["mirror.local:5000"].Insecure || cfg.Registries["registry.example.com"].CAFile != "/etc/tender/ca.pem" ||
		cfg.Registries["registry.example.com"].Username != "bob" {
		t.Errorf("config %+v", cfg)
	}
	if cfg, err := image.LoadRegistryConfig(filepath.Join(t.TempDir(), "missing.yaml")); err != nil || len(cfg.Registries) != 0 {
		t.Errorf("missing file: %+v %v", cfg, err)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
