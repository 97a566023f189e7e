package hostile

import (
	"archive/tar"
	"bytes"
	"strings"
)

// Case is one hostile archive.
type Case struct {
	Name    string
	Archive []byte // a full OCI image archive
	// WantErr: the load must be refused. When false the load must succeed
	// and every effect must stay inside the store.
	WantErr bool
	// MaxLayerBytes, when non-zero, is the Limits.MaxLayerBytes to load with.
	MaxLayerBytes int64
	// Absent lists paths, relative to a layer directory, that must exist in
	// no layer of the store after the load.
	Absent []string
}

// Cases returns the hostile archives. canary is an absolute directory
// outside the store holding a file "unbroken"; the cases aim at
// canary/pwned, canary/unbroken and canary itself, so a test asserts that
// canary is unchanged afterwards.
func Cases(canary string) []Case {
	up := strings.Repeat("../", 24) + strings.TrimPrefix(canary, "/")
	file := func(name string) Entry { return Entry{Name: name, Body: "pwned\n"} }
	dir := func(name string) Entry { return Entry{Name: name, Type: tar.TypeDir} }
	sym := func(name, target string) Entry { return Entry{Name: name, Type: tar.TypeSymlink, Linkname: target} }
	link := func(name, target string) Entry { return Entry{Name: name, Type: tar.TypeLink, Linkname: target} }
	one := func(es ...Entry) []byte {
		return Archive(Image{Name: "hostile.test/case:latest", Layers: []Layer{{Entries: es, Gzip: true}}})
	}
	two := func(l1, l2 []Entry) []byte {
		return Archive(Image{Name: "hostile.test/case:latest", Layers: []Layer{{Entries: l1}, {Entries: l2, Gzip: true}}})
	}
	okLayer := []Layer{{Entries: []Entry{file("ok")}, Gzip: true}}
	withManifest := func(edit func(m map[string]any)) []byte {
		return Archive(Image{Name: "hostile.test/case:latest", Layers: okLayer, EditManifest: edit})
	}
	setLayerDigest := func(d string) func(map[string]any) {
		return func(m map[string]any) { m["layers"].([]any)[0].(map[string]any)["digest"] = d }
	}
	good := Archive(Image{Name: "hostile.test/case:latest", Layers: okLayer})

	cases := []Case{
		// Traversal and absolute names (U-01..U-04).
		{Name: "dotdot traversal", WantErr: true, Archive: one(file(up + "/pwned"))},
		{Name: "dotdot in the middle", WantErr: true, Archive: one(dir("a"), file("a/../../b"))},
		{Name: "dotdot directory entry", WantErr: true, Archive: one(dir(".."))},
		{Name: "absolute name", WantErr: true, Archive: one(file(canary + "/pwned"))},
		{Name: "layer root written as /", WantErr: false, Archive: one(Entry{Name: "/", Type: tar.TypeDir}, file("ok"))},
		{Name: "path too deep", WantErr: true, Archive: one(file(strings.Repeat("d/", 300) + "f"))},
		{Name: "path too long", WantErr: true, Archive: one(file(strings.Repeat(strings.Repeat("y", 99)+"/", 45) + "f"))},
		{Name: "owner out of range", WantErr: true, Archive: one(Entry{Name: "f", Body: "x", Uid: uid2to32()})},

		// Symlinks (U-05..U-11).
		{Name: "symlink escape absolute", WantErr: true, Archive: one(sym("localetc", canary), file("localetc/pwned"))},
		{Name: "symlink escape relative", WantErr: true, Archive: one(sym("localetc", up), file("localetc/pwned"))},
		{Name: "symlink escape dummy dotdot", WantErr: true, Archive: one(sym("localetc", "/dummy/../"+up), file("localetc/pwned"))},
		{Name: "symlink escape upandout", WantErr: true, Archive: one(dir("upandout"), sym("localetc", "upandout/"+up), file("localetc/pwned"))},
		{Name: "chained symlinks absolute", WantErr: true, Archive: one(dir("dummy"), sym("dummy/etc", canary), sym("localetc", "dummy/etc"), file("localetc/pwned"))},
		{Name: "chained symlinks relative", WantErr: true, Archive: one(dir("dummy"), sym("dummy/etc", "../"+up), sym("localetc", "dummy/etc"), file("localetc/pwned"))},
		{Name: "symlink then empty file", WantErr: true, Archive: one(sym("localetc", canary), Entry{Name: "localetc/unbroken"})},
		{Name: "directory replaced by symlink then write", WantErr: true, Archive: one(dir("localetc"), sym("localetc", canary), file("localetc/pwned"))},
		{Name: "symlink in layer 1 written through in layer 2", Archive: two([]Entry{sym("localetc", canary)}, []Entry{file("localetc/pwned")})},
		{Name: "relative symlink in layer 1 written through in layer 2", Archive: two([]Entry{sym("localetc", up)}, []Entry{dir("localetc"), file("localetc/pwned")})},
		{Name: "symlink named dot", WantErr: true, Archive: one(sym(".", canary), file("pwned"))},
		{Name: "root dot-slash as symlink", WantErr: true, Archive: one(sym("./", canary), file("pwned"))},

		// Hardlinks (U-12..U-16).
		{Name: "hardlink absolute", WantErr: true, Archive: one(link("mypasswd", canary+"/unbroken"))},
		{Name: "hardlink dotdot", WantErr: true, Archive: one(link("mypasswd", up+"/unbroken"))},
		{Name: "hardlink through symlinked dir", WantErr: true, Archive: one(dir("breakouts"), sym("breakouts/d1", "../"+up), link("breakouts/mypasswd", "breakouts/d1/unbroken"))},
		{Name: "hardlink to symlink then chmod", WantErr: true, Archive: one(sym("sl", canary+"/unbroken"), link("hl", "sl"), Entry{Name: "hl", Type: tar.TypeReg, Mode: 0o777, Body: "pwned"})},
		{Name: "hardlink to later file", WantErr: true, Archive: one(link("early", "late"), file("late"))},
		{Name: "hardlink to directory", WantErr: true, Archive: one(dir("d"), link("x", "d"))},

		// Whiteouts (U-17..U-23).
		{Name: "whiteout dot", WantErr: true, Archive: one(file(".wh.."))},
		{Name: "whiteout dotdot", WantErr: true, Archive: one(dir("etc"), file("etc/.wh..."))},
		{Name: "whiteout empty name", WantErr: true, Archive: one(file(".wh."))},
		{Name: "whiteout under symlink to outside", WantErr: true, Archive: one(sym("localetc", canary), file("localetc/.wh.unbroken"))},
		{Name: "whiteout under dangling symlink", WantErr: true, Archive: one(sym("localetc", "/dne"), file("localetc/.wh.etc"))},
		{Name: "opaque whiteout under symlink", WantErr: true, Archive: one(sym("localetc", canary), file("localetc/.wh..wh..opq"))},
		{Name: "whiteout of a symlink to outside", Archive: two([]Entry{sym("localetc", canary)}, []Entry{file(".wh.localetc")})},
		{Name: "overlay native whiteout in tar", Absent: []string{"fakewh"},
			Archive: one(Entry{Name: "fakewh", Type: tar.TypeChar}, Entry{Name: "opq", Type: tar.TypeDir, Xattrs: map[string]string{"trusted.overlay.opaque": "y"}})},

		// Devices (U-25).
		{Name: "device nodes", Absent: []string{"dev/mem", "dev/sda"},
			Archive: one(dir("dev"), Entry{Name: "dev/mem", Type: tar.TypeChar, Devmajor: 1, Devminor: 1}, Entry{Name: "dev/sda", Type: tar.TypeBlock, Devmajor: 8})},

		// Size limits (U-28, U-30).
		{Name: "gzip bomb", WantErr: true, MaxLayerBytes: 1 << 20, Archive: one(Entry{Name: "zeros", Size: 8 << 20})},
		{Name: "many files over the byte limit", WantErr: true, MaxLayerBytes: 64 << 10, Archive: one(manyFiles(100, 1024)...)},

		// Blobs, digests and manifests (U-33..U-36, U-40).
		{Name: "bad blob digest", WantErr: true, Archive: Archive(Image{Layers: []Layer{{Entries: []Entry{file("ok")}, Tamper: true}}})},
		{Name: "blob size mismatch", WantErr: true, Archive: withManifest(func(m map[string]any) {
			l := m["layers"].([]any)[0].(map[string]any)
			l["size"] = l["size"].(int) - 1
		})},
		{Name: "truncated archive", WantErr: true, Archive: good[:len(good)/2]},
		{Name: "truncated inside index.json", WantErr: true, Archive: truncateInside(good, "index.json")},
		{Name: "truncated inside a layer blob", WantErr: true, Archive: truncateInside(good, "blobs/sha256/")},
		{Name: "unknown layer media type", WantErr: true, Archive: Archive(Image{Layers: []Layer{{Entries: []Entry{file("ok")}, MediaType: "application/x-evil"}}})},
		{Name: "zstd layer", WantErr: true, Archive: Archive(Image{Layers: []Layer{{Entries: []Entry{file("ok")}, MediaType: "application/vnd.oci.image.layer.v1.tar+zstd"}}})},
		// The image spec makes a manifest's own mediaType optional (umoci
		// writes none): absent is accepted; one that contradicts the
		// descriptor, or an index where a manifest is expected (and the
		// reverse), is refused.
		{Name: "manifest without media type", WantErr: false, Archive: withManifest(func(m map[string]any) { delete(m, "mediaType") })},
		{Name: "manifest media type contradicts descriptor", WantErr: true, Archive: withManifest(func(m map[string]any) {
			m["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json"
		})},
		{Name: "manifest served as index", WantErr: true, Archive: Archive(Image{Layers: okLayer, EditDesc: func(d map[string]any) { d["mediaType"] = MediaTypeIndex }})},
		{Name: "manifest without media type served as index", WantErr: true, Archive: Archive(Image{Layers: okLayer,
			EditManifest: func(m map[string]any) { delete(m, "mediaType") },
			EditDesc:     func(d map[string]any) { d["mediaType"] = MediaTypeIndex }})},
		{Name: "index without media type served as manifest", WantErr: true, Archive: Archive(Image{Layers: okLayer, MultiArch: true,
			EditIndex: func(idx map[string]any) { delete(idx, "mediaType") },
			EditDesc:  func(d map[string]any) { d["mediaType"] = MediaTypeManifest }})},
		{Name: "index without media type", WantErr: false, Archive: Archive(Image{Layers: okLayer, MultiArch: true,
			EditIndex: func(idx map[string]any) { delete(idx, "mediaType") }})},
		{Name: "diff_id mismatch", WantErr: true, Archive: Archive(Image{Layers: []Layer{{Entries: []Entry{file("ok")}, Gzip: true, DiffID: Digest([]byte("other"))}}})},
		{Name: "digest with traversal", WantErr: true, Archive: withManifest(setLayerDigest("sha256:../../../../../../" + strings.TrimPrefix(canary, "/") + "/pwned"))},
		{Name: "digest upper-case hex", WantErr: true, Archive: withManifest(setLayerDigest("sha256:" + strings.Repeat("AB", 32)))},
		{Name: "digest wrong length", WantErr: true, Archive: withManifest(setLayerDigest("sha256:abcd"))},
		{Name: "digest unknown algorithm", WantErr: true, Archive: withManifest(setLayerDigest("md5:d41d8cd98f00b204e9800998ecf8427e"))},
		{Name: "too many layers", WantErr: true, Archive: withManifest(func(m map[string]any) {
			l := m["layers"].([]any)[0]
			ls := make([]any, 1001)
			for i := range ls {
				ls[i] = l
			}
			m["layers"] = ls
		})},
		{Name: "blob name with traversal in archive", WantErr: true, Archive: Tar(append(Files(Image{Layers: okLayer}),
			File{Name: "blobs/sha256/../../../../../../../../" + strings.TrimPrefix(canary, "/") + "/pwned", Data: []byte("pwned")}))},
		{Name: "index nested too deep", WantErr: true, Archive: nestedIndex(10)},
	}
	return cases
}

func manyFiles(n, size int) []Entry {
	es := make([]Entry, n)
	for i := range es {
		es[i] = Entry{Name: "f" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26)), Size: int64(size)}
	}
	return es
}

// nestedIndex wraps one good manifest in depth image indexes.
func nestedIndex(depth int) []byte {
	b := &builder{seen: map[string]bool{}}
	b.add(File{Name: "oci-layout", Data: []byte(`{"imageLayoutVersion":"1.0.0"}`)})
	desc := b.image(Image{Layers: []Layer{{Entries: []Entry{{Name: "ok", Body: "ok"}}}}})
	for range depth {
		desc["platform"] = map[string]any{"os": "linux", "architecture": archOf()}
		idx := mustJSON(map[string]any{"schemaVersion": 2, "mediaType": MediaTypeIndex, "manifests": []any{desc}})
		desc = map[string]any{"mediaType": MediaTypeIndex, "digest": b.blob(idx, false), "size": len(idx)}
	}
	b.add(File{Name: "index.json", Data: mustJSON(map[string]any{"schemaVersion": 2, "mediaType": MediaTypeIndex, "manifests": []any{desc}})})
	return Tar(b.files)
}

// truncateInside cuts archive in the middle of the data of the first entry
// whose name starts with prefix.
func truncateInside(archive []byte, prefix string) []byte {
	r := bytes.NewReader(archive)
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err != nil {
			panic("hostile: no entry with prefix " + prefix)
		}
		if strings.HasPrefix(hdr.Name, prefix) && hdr.Size > 2 {
			// tar.Reader reads whole blocks without read-ahead, so the
			// reader sits at the start of the entry's data.
			off := r.Size() - int64(r.Len())
			return archive[:off+hdr.Size/2]
		}
	}
}

// uid2to32 is 2^32 on 64-bit platforms; computed at run time so that the
// package still builds (and vets) for 32-bit ones, where tar cannot carry it.
func uid2to32() int {
	v := int64(1) << 32
	return int(v)
}
