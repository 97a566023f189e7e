package hostile

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestCases_WellFormedTarsWithUniqueNames(t *testing.T) {
	cases := Cases("/canary")
	if len(cases) < 14 {
		t.Fatalf("%d cases, want at least 14", len(cases))
	}
	seen := map[string]bool{}
	for _, c := range cases {
		if seen[c.Name] {
			t.Errorf("duplicate case %q", c.Name)
		}
		seen[c.Name] = true
		if len(c.Archive) == 0 {
			t.Errorf("%s: empty archive", c.Name)
		}
	}
}

func TestArchive_HasLayoutIndexAndBlobs(t *testing.T) {
	arch := Archive(Image{Name: "tender.test/x:1", Layers: []Layer{{Entries: []Entry{{Name: "f", Body: "x"}}, Gzip: true}}})
	tr := tar.NewReader(bytes.NewReader(arch))
	names := map[string][]byte{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		names[hdr.Name] = b
	}
	if names["oci-layout"] == nil || names["index.json"] == nil {
		t.Fatalf("entries %v lack oci-layout or index.json", names)
	}
	blobs := 0
	for n, b := range names {
		if len(n) > len("blobs/sha256/") && n[:len("blobs/sha256/")] == "blobs/sha256/" {
			blobs++
			if Digest(b) != "sha256:"+n[len("blobs/sha256/"):] {
				t.Errorf("blob %s does not match its digest", n)
			}
		}
	}
	if blobs != 3 { // layer, config, manifest
		t.Errorf("%d blobs, want 3", blobs)
	}
}
