package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tender-edge/tender/runtime/image"
	"github.com/tender-edge/tender/test/hostile"
)

// Archives written by other tools (issue 9, "Real OCI archives are
// refused"): umoci writes manifests without a mediaType field, which the
// image spec allows, and skopeo copies them as they are.

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (Debian package %s; make deps installs it)", tool, tool)
		}
	}
}

func command(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// deviceNodes is how many device nodes umociLayout puts in /dev, as a
// distribution base image has.
const deviceNodes = 9

// umociLayout builds an OCI image layout with umoci, tag "t": a root
// file system with a static-enough file, a motd and /dev holding device
// nodes (made with mknod, so the test runs as root).
func umociLayout(t *testing.T) string {
	t.Helper()
	needTools(t, "umoci")
	if os.Geteuid() != 0 {
		t.Skip("making device nodes for the image needs root")
	}
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"dev", "etc", "bin"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc/motd"), []byte("made by umoci\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin/hello"), []byte("#!/bin/sh\necho hello\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range deviceNodes - 1 {
		if err := unix.Mknod(filepath.Join(rootfs, "dev", "tty"+string(rune('1'+i))), unix.S_IFCHR|0o620, int(unix.Mkdev(4, uint32(i+1)))); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mknod(filepath.Join(rootfs, "dev/sda"), unix.S_IFBLK|0o660, int(unix.Mkdev(8, 0))); err != nil {
		t.Fatal(err)
	}
	layout := filepath.Join(dir, "oci")
	command(t, "umoci", "init", "--layout", layout)
	command(t, "umoci", "new", "--image", layout+":t")
	command(t, "umoci", "insert", "--image", layout+":t", rootfs, "/")
	command(t, "umoci", "config", "--image", layout+":t", "--config.entrypoint", "/bin/hello")
	return layout
}

// manifestOf returns the top manifest of an OCI layout directory.
func manifestOf(t *testing.T, layout string) map[string]any {
	t.Helper()
	var idx struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	readJSONFile(t, filepath.Join(layout, "index.json"), &idx)
	if len(idx.Manifests) != 1 {
		t.Fatalf("index.json has %d manifests", len(idx.Manifests))
	}
	var m map[string]any
	readJSONFile(t, filepath.Join(layout, "blobs/sha256", strings.TrimPrefix(idx.Manifests[0].Digest, "sha256:")), &m)
	return m
}

func readJSONFile(t *testing.T, p string, v any) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

// logStore opens a store whose log (debug level) is kept in the returned
// buffer as JSON lines.
func logStore(t *testing.T) (*image.Store, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	log := zerolog.New(io.MultiWriter(&buf, zerolog.NewTestWriter(t))).Level(zerolog.DebugLevel)
	s, err := image.Open(t.TempDir(), image.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, &buf
}

type logLine struct {
	Level       string `json:"level"`
	Message     string `json:"message"`
	DeviceNodes int    `json:"deviceNodes"`
}

func logLines(t *testing.T, buf *bytes.Buffer) []logLine {
	t.Helper()
	var out []logLine
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var ll logLine
		if err := json.Unmarshal([]byte(l), &ll); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, ll)
	}
	return out
}

// checkUmociImage checks that img is the image umociLayout made.
func checkUmociImage(t *testing.T, s *image.Store, img image.Image) {
	t.Helper()
	if got := img.Config.Config.Entrypoint; len(got) != 1 || got[0] != "/bin/hello" {
		t.Errorf("entrypoint %q, want /bin/hello", got)
	}
	dirs, err := s.LayerDirs(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join(d, "etc/motd")); err == nil {
			if string(b) != "made by umoci\n" {
				t.Errorf("etc/motd = %q", b)
			}
			if _, err := os.Lstat(filepath.Join(d, "dev/sda")); err == nil {
				t.Errorf("a device node was created in layer %s", d)
			}
			return
		}
	}
	t.Errorf("no layer of %s holds etc/motd", img.Digest)
}

func TestLoad_UmociSkopeoArchive(t *testing.T) {
	layout := umociLayout(t)
	needTools(t, "skopeo")
	if mt, ok := manifestOf(t, layout)["mediaType"]; ok {
		t.Fatalf("umoci wrote a manifest mediaType %q: this test no longer covers its absence", mt)
	}
	archive := filepath.Join(t.TempDir(), "umoci.tar")
	command(t, "skopeo", "copy", "oci:"+layout+":t", "oci-archive:"+archive+":tender.test/umoci:1")
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, logs := logStore(t)
	imgs, err := s.Load(context.Background(), f)
	if err != nil {
		t.Fatalf("load an archive made by umoci and skopeo: %v", err)
	}
	if len(imgs) != 1 || imgs[0].Name != "tender.test/umoci:1" {
		t.Fatalf("loaded %+v, want one image tender.test/umoci:1", imgs)
	}
	checkUmociImage(t, s, imgs[0])

	// Noise (issue 9): the skipped device nodes are said once, at debug
	// level, with their count; no warning per node.
	var said int
	for _, l := range logLines(t, logs) {
		if l.Level == "warn" || l.Level == "error" {
			t.Errorf("load logged at %s: %q", l.Level, l.Message)
		}
		if l.DeviceNodes > 0 {
			said++
			if l.Level != "debug" || l.DeviceNodes != deviceNodes {
				t.Errorf("device nodes reported at %s with count %d, want debug and %d", l.Level, l.DeviceNodes, deviceNodes)
			}
		}
	}
	if said != 1 {
		t.Errorf("skipped device nodes reported %d times, want once", said)
	}
}

// TestLoad_UmociLayoutTarred loads umoci's own layout directory, tarred as
// it is (no skopeo in between).
func TestLoad_UmociLayoutTarred(t *testing.T) {
	layout := umociLayout(t)
	s, _ := logStore(t)
	imgs, err := s.Load(context.Background(), bytes.NewReader(tarDir(t, layout)))
	if err != nil {
		t.Fatalf("load umoci's layout: %v", err)
	}
	if len(imgs) != 1 || imgs[0].Name != "t" {
		t.Fatalf("loaded %+v, want one image named by its ref.name t", imgs)
	}
	checkUmociImage(t, s, imgs[0])
}

// tarDir tars the regular files and directories under dir.
func tarDir(t *testing.T, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestLoad_DockerSaveArchives: docker save's legacy layout (manifest.json,
// repositories, layer files under other names, symlinks between them, no
// oci-layout), as skopeo's docker-archive: writes it, loads; so does Docker
// 25's, an OCI layout with manifest.json next to it.
func TestLoad_DockerSaveArchives(t *testing.T) {
	layout := umociLayout(t)
	needTools(t, "skopeo")
	dir := t.TempDir()
	legacy := filepath.Join(dir, "docker.tar")
	command(t, "skopeo", "copy", "oci:"+layout+":t", "docker-archive:"+legacy+":tender.test/umoci:1")
	raw, err := os.ReadFile(legacy)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := logStore(t)
	imgs, err := s.Load(context.Background(), bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("load a docker save archive written by skopeo: %v", err)
	}
	if len(imgs) != 1 || imgs[0].Name != "tender.test/umoci:1" {
		t.Fatalf("loaded %+v, want one image tender.test/umoci:1", imgs)
	}
	checkUmociImage(t, s, imgs[0])

	// Docker 25's layout: the OCI archive plus manifest.json and
	// repositories.
	ociArchive := filepath.Join(dir, "oci.tar")
	command(t, "skopeo", "copy", "oci:"+layout+":t", "oci-archive:"+ociArchive+":tender.test/umoci:2")
	combined := appendEntries(t, ociArchive, raw, "manifest.json", "repositories")
	s2, _ := logStore(t)
	imgs, err = s2.Load(context.Background(), bytes.NewReader(combined))
	if err != nil {
		t.Fatalf("load a Docker 25 style archive: %v", err)
	}
	if len(imgs) != 1 || imgs[0].Name != "tender.test/umoci:2" {
		t.Fatalf("loaded %+v, want the image of the OCI layout, tender.test/umoci:2", imgs)
	}
	checkUmociImage(t, s2, imgs[0])
}

// TestLoad_DockerSaveLegacyBuilt: the legacy layout as docker save writes
// it (one directory per layer holding layer.tar), built here so it needs
// no tool; and what it must refuse.
func TestLoad_DockerSaveLegacyBuilt(t *testing.T) {
	layer := hostile.LayerTar(hostile.Entry{Name: "etc/", Type: tar.TypeDir}, hostile.Entry{Name: "etc/motd", Body: "saved by docker\n"})
	cfg, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/bin/sh"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{hostile.Digest(layer)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfgName := strings.TrimPrefix(hostile.Digest(cfg), "sha256:") + ".json"
	archive := func(manifest string) []byte {
		return hostile.Tar([]hostile.File{
			{Name: "0123abcd/", Type: tar.TypeDir},
			{Name: "0123abcd/VERSION", Data: []byte("1.0")},
			{Name: "0123abcd/layer.tar", Data: layer},
			{Name: cfgName, Data: cfg},
			{Name: "manifest.json", Data: []byte(manifest)},
			{Name: "repositories", Data: []byte(`{"tender.test/saved":{"1":"0123abcd"}}`)},
		})
	}
	s, _ := logStore(t)
	imgs, err := s.Load(context.Background(), bytes.NewReader(archive(
		`[{"Config":"`+cfgName+`","RepoTags":["tender.test/saved:1"],"Layers":["0123abcd/layer.tar"]}]`)))
	if err != nil {
		t.Fatalf("load a docker save archive: %v", err)
	}
	if len(imgs) != 1 || imgs[0].Name != "tender.test/saved:1" || len(imgs[0].Layers) != 1 {
		t.Fatalf("loaded %+v", imgs)
	}
	dirs, err := s.LayerDirs(imgs[0])
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dirs[0], "etc/motd")); err != nil || string(b) != "saved by docker\n" {
		t.Errorf("etc/motd = %q, %v", b, err)
	}
	for _, bad := range []struct{ name, manifest string }{
		{"missing layer", `[{"Config":"` + cfgName + `","Layers":["nothere/layer.tar"]}]`},
		{"layer outside the archive", `[{"Config":"` + cfgName + `","Layers":["../../etc/passwd"]}]`},
		{"no image", `[]`},
		{"not JSON", `{`},
		{"layer count differs from the config", `[{"Config":"` + cfgName + `","Layers":[]}]`},
	} {
		_, err := s.Load(context.Background(), bytes.NewReader(archive(bad.manifest)))
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: err = %v, want invalid argument", bad.name, err)
		}
	}
}

// appendEntries returns the tar at path with the named entries of the tar
// from appended.
func appendEntries(t *testing.T, path string, from []byte, names ...string) []byte {
	t.Helper()
	base, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i, src := range [][]byte{base, from} {
		tr := tar.NewReader(bytes.NewReader(src))
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if i == 1 && !slices.Contains(names, hdr.Name) {
				continue
			}
			if err := tw.WriteHeader(hdr); err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(tw, tr); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// httpServer serves h on loopback and returns its host:port.
func httpServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// TestLoad_ManifestShapeAgainstDescriptor: without a mediaType field, the
// blob's fields tell an index from a manifest, and one where the other is
// expected is refused as such (not later, by accident of parsing).
func TestLoad_ManifestShapeAgainstDescriptor(t *testing.T) {
	okLayer := []hostile.Layer{{Entries: []hostile.Entry{{Name: "ok", Body: "ok\n"}}, Gzip: true}}
	cases := []struct {
		name string
		img  hostile.Image
		want string
	}{
		{"manifest where an index is expected", hostile.Image{Layers: okLayer,
			EditManifest: func(m map[string]any) { delete(m, "mediaType") },
			EditDesc:     func(d map[string]any) { d["mediaType"] = hostile.MediaTypeIndex }}, "an image manifest where the descriptor says index"},
		{"index where a manifest is expected", hostile.Image{Layers: okLayer, MultiArch: true,
			EditIndex: func(idx map[string]any) { delete(idx, "mediaType") },
			EditDesc:  func(d map[string]any) { d["mediaType"] = hostile.MediaTypeManifest }}, "not an image manifest, which the descriptor says it is"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, _ := logStore(t)
			_, err := s.Load(context.Background(), bytes.NewReader(hostile.Archive(c.img)))
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want invalid argument %q", err, c.want)
			}
		})
	}
}

// TestPull_UmociImagePushedBySkopeo pulls an image whose manifest has no
// mediaType, pushed by skopeo, from a registry that labels it correctly and
// from one that labels every manifest application/json.
func TestPull_UmociImagePushedBySkopeo(t *testing.T) {
	layout := umociLayout(t)
	needTools(t, "skopeo")
	reg := startRegistry(t, nil)
	ref := reg.host + "/tender/umoci:1"
	command(t, "skopeo", "copy", "--dest-tls-verify=false", "oci:"+layout+":t", "docker://"+ref)

	s, _ := logStore(t)
	img, err := s.Pull(context.Background(), ref, pullOpts(reg.host))
	if err != nil {
		t.Fatalf("pull an image made by umoci: %v", err)
	}
	checkUmociImage(t, s, img)

	generic := httpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/manifests/") {
			w = &contentTypeWriter{ResponseWriter: w, ct: "application/json"}
		}
		reg.srv.Config.Handler.ServeHTTP(w, r)
	}))
	s2, _ := logStore(t)
	img, err = s2.Pull(context.Background(), generic+"/tender/umoci:1", pullOpts(generic))
	if err != nil {
		t.Fatalf("pull with Content-Type application/json: %v", err)
	}
	checkUmociImage(t, s2, img)
}

// contentTypeWriter replaces the Content-Type of a response.
type contentTypeWriter struct {
	http.ResponseWriter
	ct string
}

func (w *contentTypeWriter) WriteHeader(code int) {
	w.Header().Set("Content-Type", w.ct)
	w.ResponseWriter.WriteHeader(code)
}

func (w *contentTypeWriter) Write(b []byte) (int, error) {
	w.Header().Set("Content-Type", w.ct)
	return w.ResponseWriter.Write(b)
}

// TestLoad_DeviceNodesSaidOnce: the same without umoci, two layers with
// device nodes: one debug line per layer with its count, no warning.
func TestLoad_DeviceNodesSaidOnce(t *testing.T) {
	dev := func(name string, major, minor int64) hostile.Entry {
		return hostile.Entry{Name: name, Type: tar.TypeChar, Devmajor: major, Devminor: minor, Mode: 0o666}
	}
	layer1 := []hostile.Entry{{Name: "dev/", Type: tar.TypeDir}, dev("dev/null", 1, 3), dev("dev/zero", 1, 5), dev("dev/random", 1, 8),
		dev("dev/urandom", 1, 9), dev("dev/tty", 5, 0), {Name: "dev/sda", Type: tar.TypeBlock, Devmajor: 8}}
	layer2 := []hostile.Entry{{Name: "dev/", Type: tar.TypeDir}, dev("dev/console", 5, 1), dev("dev/full", 1, 7)}
	s, logs := logStore(t)
	load(t, s, hostile.Archive(hostile.Image{Name: "tender.test/devs:1",
		Layers: []hostile.Layer{{Entries: layer1, Gzip: true}, {Entries: layer2}}}))
	var counts []int
	for _, l := range logLines(t, logs) {
		if l.Level == "warn" || l.Level == "error" {
			t.Errorf("load logged at %s: %q", l.Level, l.Message)
		}
		if l.DeviceNodes > 0 {
			if l.Level != "debug" {
				t.Errorf("device nodes reported at level %s", l.Level)
			}
			counts = append(counts, l.DeviceNodes)
		}
	}
	if !slices.Equal(counts, []int{6, 2}) {
		t.Errorf("device node counts reported %v, want [6 2] (once per layer)", counts)
	}
}
