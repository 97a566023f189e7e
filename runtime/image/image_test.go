package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/rs/zerolog"
	"github.com/tender-edge/tender/runtime/image"
	"github.com/tender-edge/tender/test/hostile"
	"golang.org/x/sys/unix"
)

func openStore(t *testing.T, root string, lim image.Limits) *image.Store {
	t.Helper()
	s, err := image.Open(root, image.Options{Limits: lim, Log: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func load(t *testing.T, s *image.Store, archive []byte) []image.Image {
	t.Helper()
	imgs, err := s.Load(context.Background(), bytes.NewReader(archive))
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return imgs
}

// snapshot records every path under dir except skip: type, mode, owner,
// size, content hash and link target.
func snapshot(t *testing.T, dir, skip string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == skip {
			return filepath.SkipDir
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		desc := fi.Mode().String() + " " + itoa(int(st.Uid)) + ":" + itoa(int(st.Gid)) + " " + itoa(int(fi.Size()))
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += " " + hex.EncodeToString(sum[:])
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		}
		out[p] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }

func layerDirs(t *testing.T, root string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, "layers"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// checkNoDevices fails if any layer holds a device other than the 0:0
// character devices that encode whiteouts.
func checkNoDevices(t *testing.T, root string) {
	t.Helper()
	err := filepath.WalkDir(filepath.Join(root, "layers"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFBLK:
			t.Errorf("block device in store: %s", p)
		case unix.S_IFCHR:
			if st.Rdev != 0 {
				t.Errorf("character device %d:%d in store: %s", unix.Major(st.Rdev), unix.Minor(st.Rdev), p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestLoad_Hostile(t *testing.T) {
	base := t.TempDir()
	canary := filepath.Join(base, "canary")
	if err := os.Mkdir(canary, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(canary, "unbroken"), []byte("canary\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	baseline := hostile.Archive(hostile.Image{Name: "tender.test/baseline:1",
		Layers: []hostile.Layer{{Entries: []hostile.Entry{{Name: "etc/", Type: tar.TypeDir}, {Name: "etc/hostname", Body: "edge\n"}}, Gzip: true}}})
	cases := hostile.Cases(canary)
	if len(cases) < 14 {
		t.Fatalf("only %d hostile cases", len(cases))
	}
	for i, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			root := filepath.Join(base, "store"+itoa(i))
			s := openStore(t, root, image.Limits{MaxLayerBytes: c.MaxLayerBytes})
			load(t, s, baseline)
			before, err := s.List()
			if err != nil {
				t.Fatal(err)
			}
			committed := layerDirs(t, root)
			outside := snapshot(t, base, root)

			imgs, err := s.Load(context.Background(), bytes.NewReader(c.Archive))
			if c.WantErr && err == nil {
				t.Fatalf("load accepted a hostile archive: %+v", imgs)
			}
			if !c.WantErr && err != nil {
				t.Fatalf("load: %v", err)
			}
			if err != nil {
				t.Logf("refused: %v", err)
			}

			if diff := diffMaps(outside, snapshot(t, base, root)); diff != "" {
				t.Fatalf("files outside the store changed:\n%s", diff)
			}
			b, err := os.ReadFile(filepath.Join(canary, "unbroken"))
			if err != nil || string(b) != "canary\n" {
				t.Fatalf("canary changed: %q, %v", b, err)
			}
			for _, p := range c.Absent {
				for _, d := range layerDirs(t, root) {
					if _, err := os.Lstat(filepath.Join(root, "layers", d, p)); err == nil {
						t.Errorf("%s exists in layer %s", p, d)
					}
				}
			}
			checkNoDevices(t, root)
			tmp, err := os.ReadDir(filepath.Join(root, "tmp"))
			if err != nil || len(tmp) != 0 {
				t.Errorf("tmp not empty after load: %v %v", tmp, err)
			}
			if c.WantErr {
				after, err := s.List()
				if err != nil {
					t.Fatal(err)
				}
				if len(after) != len(before) || after[0].Digest != before[0].Digest {
					t.Errorf("image list changed by a refused load: %+v", after)
				}
				if got := layerDirs(t, root); !slices.Equal(got, committed) {
					t.Errorf("layers dir changed by a refused load: %v, want %v", got, committed)
				}
			}
		})
	}
}

func diffMaps(a, b map[string]string) string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			out = append(out, "removed "+k)
		} else if w != v {
			out = append(out, "changed "+k+": "+v+" -> "+w)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, "added "+k)
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

func TestLoad_ErrorNamesEntry(t *testing.T) {
	s := openStore(t, t.TempDir(), image.Limits{})
	arch := hostile.Archive(hostile.Image{Layers: []hostile.Layer{{Entries: []hostile.Entry{{Name: "../../etc/x", Body: "x"}}, Gzip: true}}})
	_, err := s.Load(context.Background(), bytes.NewReader(arch))
	if err == nil {
		t.Fatal("load accepted ../../etc/x")
	}
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("error is not errdefs.ErrInvalidArgument: %v", err)
	}
	for _, want := range []string{"layer sha256:", `entry "../../etc/x": path escapes layer`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func goodImage(name string) hostile.Image {
	d := func(n string) hostile.Entry { return hostile.Entry{Name: n, Type: tar.TypeDir} }
	f := func(n, body string) hostile.Entry { return hostile.Entry{Name: n, Body: body} }
	base := []hostile.Entry{
		d("etc/"), d("usr/"), d("usr/bin/"), d("bin/"), d("data/"), d("old/"), d("run/"), d("dev/"), d("home/"),
		f("etc/passwd", "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1::/:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n"),
		f("etc/group", "root:x:0:\napp:x:1000:\n"),
		{Name: "usr/bin/tool", Body: "#!/bin/sh\necho tool\n", Mode: 0o755, Xattrs: map[string]string{"user.test": "v", "trusted.evil": "x"}},
		{Name: "usr/bin/su", Body: "su\n", Mode: 0o4755},
		{Name: "usr/bin/tool2", Type: tar.TypeLink, Linkname: "usr/bin/tool"},
		{Name: "bin/sh", Type: tar.TypeSymlink, Linkname: "/usr/bin/tool"},
		{Name: "dev/null", Type: tar.TypeChar, Devmajor: 1, Devminor: 3},
		{Name: "run/fifo", Type: tar.TypeFifo, Mode: 0o600},
		{Name: "home/app", Type: tar.TypeDir, Mode: 0o700, Uid: 1000, Gid: 1000},
		{Name: "home/app/.profile", Body: "x\n", Uid: 1000, Gid: 1000},
		f("data/a", "a"), f("data/b", "b"), f("data/c", "c1"), f("old/x", "x"),
	}
	top := []hostile.Entry{
		d("data/"), f("data/.wh.a", ""), f("data/c", "c2"), f("data/.wh.c", ""),
		d("old/"), f("old/keep", "keep"), f("old/.wh..wh..opq", ""),
		f("etc/motd", "hello\n"),
	}
	return hostile.Image{
		Name:      name,
		Layers:    []hostile.Layer{{Entries: base, Gzip: true}, {Entries: top}},
		Config:    map[string]any{"Entrypoint": []string{"/usr/bin/tool"}, "User": "app", "WorkingDir": "/home/app"},
		MultiArch: true,
	}
}

func TestLoad_GoodImage(t *testing.T) {
	root := t.TempDir()
	s := openStore(t, root, image.Limits{})
	imgs := load(t, s, hostile.Archive(goodImage("tender.test/workload:latest")))
	if len(imgs) != 1 {
		t.Fatalf("loaded %d images, want 1", len(imgs))
	}
	img := imgs[0]
	if img.Name != "tender.test/workload:latest" || len(img.Layers) != 2 || img.Size <= 0 {
		t.Fatalf("image = %+v", img)
	}
	if got := img.Config.Config.Entrypoint; !slices.Equal(got, []string{"/usr/bin/tool"}) || img.Config.Config.User != "app" {
		t.Errorf("config = %+v", img.Config.Config)
	}
	for _, ref := range []string{"tender.test/workload", "tender.test/workload:latest", string(img.Digest), string(img.ID), img.ID.Encoded()[:6]} {
		got, err := s.Get(ref)
		if err != nil {
			t.Errorf("get %q: %v", ref, err)
			continue
		}
		if got.Digest != img.Digest || got.Name != img.Name {
			t.Errorf("get %q = %s %q", ref, got.Digest, got.Name)
		}
	}
	if _, err := s.Get("workload"); !errdefs.IsNotFound(err) {
		t.Errorf("get workload (docker.io/library/workload:latest): %v, want ErrNotFound", err)
	}

	dirs, err := s.LayerDirs(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) != 2 {
		t.Fatalf("layer dirs = %v", dirs)
	}
	for _, d := range dirs {
		if len(filepath.Base(d)) != 12 || !strings.HasPrefix(d, root) {
			t.Errorf("layer dir %s: want <root>/layers/<12 hex>", d)
		}
	}
	top, bottom := dirs[0], dirs[1]

	// Bottom layer.
	lstat := func(p string) *unix.Stat_t {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatalf("lstat %s: %v", p, err)
		}
		return &st
	}
	if st := lstat(filepath.Join(bottom, "usr/bin/su")); st.Mode&07777 != 04755 {
		t.Errorf("su mode = %o, want 4755", st.Mode&07777)
	}
	if a, b := lstat(filepath.Join(bottom, "usr/bin/tool")), lstat(filepath.Join(bottom, "usr/bin/tool2")); a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("tool2 is not a hardlink of tool (ino %d/%d nlink %d)", a.Ino, b.Ino, a.Nlink)
	}
	if target, err := os.Readlink(filepath.Join(bottom, "bin/sh")); err != nil || target != "/usr/bin/tool" {
		t.Errorf("bin/sh -> %q, %v", target, err)
	}
	if _, err := os.Lstat(filepath.Join(bottom, "dev/null")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("device node dev/null was created: %v", err)
	}
	if st := lstat(filepath.Join(bottom, "run/fifo")); st.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("run/fifo mode %o, want a FIFO", st.Mode)
	}
	if st := lstat(filepath.Join(bottom, "home/app/.profile")); st.Uid != 1000 || st.Gid != 1000 {
		t.Errorf("home/app/.profile owner %d:%d", st.Uid, st.Gid)
	}
	if st := lstat(filepath.Join(bottom, "home/app")); st.Uid != 1000 || st.Mode&0o777 != 0o700 {
		t.Errorf("home/app owner %d mode %o", st.Uid, st.Mode&0o777)
	}
	buf := make([]byte, 16)
	if n, err := unix.Lgetxattr(filepath.Join(bottom, "usr/bin/tool"), "user.test", buf); err != nil || string(buf[:n]) != "v" {
		t.Errorf("user.test xattr = %q, %v", buf[:n], err)
	}
	if _, err := unix.Lgetxattr(filepath.Join(bottom, "usr/bin/tool"), "trusted.evil", buf); err == nil {
		t.Error("trusted.evil xattr was kept")
	}

	// Top layer: whiteouts in overlay form.
	if st := lstat(filepath.Join(top, "data/a")); st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("data/a is not a 0:0 whiteout (mode %o rdev %d)", st.Mode, st.Rdev)
	}
	if st := lstat(filepath.Join(top, "data/c")); st.Mode&unix.S_IFMT != unix.S_IFREG {
		t.Errorf("data/c mode %o: a whiteout hid a file of its own layer", st.Mode)
	}
	if n, err := unix.Lgetxattr(filepath.Join(top, "old"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("old opaque xattr = %q, %v", buf[:n], err)
	}

	// The merged view through a real overlay mount.
	merged := t.TempDir()
	if err := unix.Mount("overlay", merged, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(dirs, ":")); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	for p, want := range map[string]string{"data/b": "b", "data/c": "c2", "old/keep": "keep", "etc/motd": "hello\n", "usr/bin/tool2": "#!/bin/sh\necho tool\n"} {
		if b, err := os.ReadFile(filepath.Join(merged, p)); err != nil || string(b) != want {
			t.Errorf("merged %s = %q, %v; want %q", p, b, err, want)
		}
	}
	for _, p := range []string{"data/a", "old/x"} {
		if _, err := os.Lstat(filepath.Join(merged, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("merged %s: %v, want it whited out", p, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(merged, "etc/passwd")); err != nil || !strings.Contains(string(b), "app:x:1000:1000") {
		t.Errorf("merged etc/passwd = %q, %v", b, err)
	}
}

func TestLoad_DedupeAndRemove(t *testing.T) {
	root := t.TempDir()
	s := openStore(t, root, image.Limits{})
	baseLayer := hostile.Layer{Entries: []hostile.Entry{{Name: "etc/", Type: tar.TypeDir}, {Name: "etc/os-release", Body: "base\n"}}, Gzip: true}
	mk := func(name, body string) hostile.Image {
		return hostile.Image{Name: name, Layers: []hostile.Layer{baseLayer, {Entries: []hostile.Entry{{Name: "app", Body: body}}}}}
	}
	a := load(t, s, hostile.Archive(mk("tender.test/a:1", "a")))[0]
	b := load(t, s, hostile.Archive(mk("tender.test/b:1", "b")))[0]
	if got := layerDirs(t, root); len(got) != 3 {
		t.Fatalf("layers = %v, want 3 (base stored once)", got)
	}
	da, _ := s.LayerDirs(a)
	db, _ := s.LayerDirs(b)
	if da[1] != db[1] || da[0] == db[0] {
		t.Fatalf("layer dirs a=%v b=%v: want a shared base only", da, db)
	}
	// Loading the same image again changes nothing.
	load(t, s, hostile.Archive(mk("tender.test/a:1", "a")))
	if l, _ := s.List(); len(l) != 2 {
		t.Fatalf("list after reload = %+v", l)
	}

	if err := s.Remove("tender.test/a:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("tender.test/a:1"); !errdefs.IsNotFound(err) {
		t.Fatalf("get removed image: %v", err)
	}
	if got := layerDirs(t, root); len(got) != 2 {
		t.Fatalf("layers after removing a = %v, want base and b", got)
	}
	for _, d := range db {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("layer of b removed: %v", err)
		}
	}
	if err := s.Remove(string(b.Digest)); err != nil {
		t.Fatal(err)
	}
	if got := layerDirs(t, root); len(got) != 0 {
		t.Errorf("layers after removing all = %v", got)
	}
	if blobs, _ := os.ReadDir(filepath.Join(root, "blobs/sha256")); len(blobs) != 0 {
		t.Errorf("blobs after removing all = %v", blobs)
	}
	if err := s.Remove("tender.test/a:1"); !errdefs.IsNotFound(err) {
		t.Errorf("remove unknown: %v", err)
	}

	// Two images sharing a layer in one archive.
	imgs := load(t, s, hostile.Archive(mk("tender.test/a:2", "a2"), mk("tender.test/b:2", "b2")))
	if len(imgs) != 2 {
		t.Fatalf("loaded %d images", len(imgs))
	}
	if got := layerDirs(t, root); len(got) != 3 {
		t.Errorf("layers = %v, want 3", got)
	}
}

func TestLoad_NameMovesToNewImage(t *testing.T) {
	s := openStore(t, t.TempDir(), image.Limits{})
	mk := func(body string) []byte {
		return hostile.Archive(hostile.Image{Name: "tender.test/app:latest", Layers: []hostile.Layer{{Entries: []hostile.Entry{{Name: "v", Body: body}}}}})
	}
	old := load(t, s, mk("1"))[0]
	cur := load(t, s, mk("2"))[0]
	got, err := s.Get("tender.test/app")
	if err != nil || got.Digest != cur.Digest {
		t.Fatalf("get = %s, %v; want %s", got.Digest, err, cur.Digest)
	}
	list, _ := s.List()
	if len(list) != 2 || list[0].Name != "" || list[0].Digest != old.Digest {
		t.Fatalf("list = %+v, want the old image unnamed", list)
	}
}

func TestLoad_RefNameAndGzipArchive(t *testing.T) {
	s := openStore(t, t.TempDir(), image.Limits{})
	img := hostile.Image{RefName: "latest", Layers: []hostile.Layer{{Entries: []hostile.Entry{{Name: "f", Body: "x"}}}}}
	got := load(t, s, hostile.Gzip(hostile.Archive(img)))[0]
	if got.Name != "latest" {
		t.Errorf("name = %q, want the bare tag kept", got.Name)
	}
	img.RefName = "tender.test/x"
	img.Layers[0].Entries[0].Body = "y"
	if got := load(t, s, hostile.Archive(img))[0]; got.Name != "tender.test/x:latest" {
		t.Errorf("name = %q", got.Name)
	}
}

func TestOpen_RemovesUncommitted(t *testing.T) {
	root := t.TempDir()
	s := openStore(t, root, image.Limits{})
	img := load(t, s, hostile.Archive(goodImage("tender.test/workload:latest")))[0]
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	committed := layerDirs(t, root)
	junk := []string{"layers/tmp-123456", "layers/abcdefabcdef", "tmp/load-1"}
	for _, j := range junk {
		if err := os.MkdirAll(filepath.Join(root, j, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, j, "sub/file"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	strayBlob := filepath.Join(root, "blobs/sha256", strings.Repeat("ab", 32))
	if err := os.WriteFile(strayBlob, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, root, image.Limits{})
	for _, j := range append(junk, strayBlob) {
		p := j
		if !filepath.IsAbs(p) {
			p = filepath.Join(root, j)
		}
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s survived Open: %v", j, err)
		}
	}
	if got := layerDirs(t, root); !slices.Equal(got, committed) {
		t.Errorf("layers = %v, want %v", got, committed)
	}
	got, err := s.Get("tender.test/workload:latest")
	if err != nil || got.Digest != img.Digest {
		t.Fatalf("get after reopen: %v", err)
	}
	dirs, err := s.LayerDirs(got)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d)); err != nil {
			t.Error(err)
		}
	}
	fi, err := os.Stat(root)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("store root mode %v, %v", fi.Mode(), err)
	}
}

func TestNormalizeName(t *testing.T) {
	for in, want := range map[string]string{
		"workload":                        "docker.io/library/workload:latest",
		"workload:1.2":                    "docker.io/library/workload:1.2",
		"acme/thermo":                     "docker.io/acme/thermo:latest",
		"tender.test/workload":            "tender.test/workload:latest",
		"localhost:5000/x/y:v1":           "localhost:5000/x/y:v1",
		"index.docker.io/library/busybox": "docker.io/library/busybox:latest",
		"r.example/a@sha256:" + strings.Repeat("0", 64):   "r.example/a@sha256:" + strings.Repeat("0", 64),
		"r.example/a:1@sha256:" + strings.Repeat("0", 64): "r.example/a:1@sha256:" + strings.Repeat("0", 64),
		"docker.io/busybox":           "docker.io/library/busybox:latest", // as docker does
		"acme/x__y/z---w.v_2:TAG.1-a": "docker.io/acme/x__y/z---w.v_2:TAG.1-a",
		"1.2.3.4:80/x:1":              "1.2.3.4:80/x:1",
	} {
		got, err := image.NormalizeName(in)
		if err != nil || got != want {
			t.Errorf("NormalizeName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "UPPER/case", "a//b", "a:b:c", "../x", "x@sha256:../../etc",
		"a/b___c", "a..b", "_a", "x:.tag", "x:-tag", "a_b.com/x", "-a.com/x", "a.com:/x", "a.com:12x/x",
		"[::1]:5000/x", "http://a.com/x", "a/", "a:", "a@sha256:", "x/é", "a b", "x:" + strings.Repeat("a", 129)} {
		if got, err := image.NormalizeName(bad); err == nil {
			t.Errorf("NormalizeName(%q) = %q, want an error", bad, got)
		}
	}
}
