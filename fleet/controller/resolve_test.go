package controller_test

import (
	"context"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/tender-edge/tender/fleet/controller"
	"github.com/tender-edge/tender/test/ociarchive"
	"github.com/tender-edge/tender/test/registry"
)

func pushIndex(t *testing.T, ref string, arches ...string) {
	t.Helper()
	a := ociarchive.New()
	var ds []ocispec.Descriptor
	for _, ar := range arches {
		d, err := a.AddImage(ociarchive.Image{Arch: ar, Layers: []ociarchive.Layer{{{Path: "hello", Mode: 0o644, Data: []byte(ar)}}}})
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	top, err := a.AddIndex(ds)
	if err != nil {
		t.Fatal(err)
	}
	var buf strings.Builder
	if err := a.Write(&buf, ociarchive.Named(top, ref)); err != nil {
		t.Fatal(err)
	}
	if err := registry.Push(context.Background(), []byte(buf.String()), ref, true); err != nil {
		t.Fatal(err)
	}
}

// Tags resolve to digests against a real registry; a tag that does not
// exist, an arch the image lacks and an unreachable registry are refused
// with errors that say which.
func TestRegistryResolver(t *testing.T) {
	reg := registry.Start(t, registry.Options{})
	ref := reg.Addr + "/thermo:1.0"
	pushIndex(t, ref, "amd64", "arm64")
	res := controller.RegistryResolver{Registries: map[string]controller.Registry{reg.Addr: {Insecure: true}}}
	ctx := context.Background()

	got, err := res.Resolve(ctx, ref, []string{"amd64", "arm64"})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := name.ParseReference(ref, name.Insecure)
	desc, err := remote.Head(r)
	if err != nil {
		t.Fatal(err)
	}
	if want := reg.Addr + "/thermo@" + desc.Digest.String(); got != want {
		t.Fatalf("resolved %s, want %s", got, want)
	}
	if _, err := res.Resolve(ctx, got, nil); err != nil {
		t.Fatalf("a digest reference: %v", err)
	}

	_, err = res.Resolve(ctx, ref, []string{"amd64", "riscv64"})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "no platform for arch riscv64") {
		t.Fatalf("missing arch: %v", err)
	}
	_, err = res.Resolve(ctx, reg.Addr+"/thermo:9.9", nil)
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing tag: %v", err)
	}
	_, err = res.Resolve(ctx, "127.0.0.1:1/thermo:1.0", nil)
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("unreachable registry: %v", err)
	}
}

// Apply pins every image to its digest, and refuses a spec whose image
// lacks an allowed arch without storing anything.
func TestApply_ResolvesTagsAndChecksArches(t *testing.T) {
	reg := registry.Start(t, registry.Options{})
	pushIndex(t, reg.Addr+"/thermo:1.0", "amd64")
	h := &harness{t: t}
	h.resolver = controller.RegistryResolver{Registries: map[string]controller.Registry{reg.Addr: {Insecure: true}}}
	h.init()
	spec := "name: thermo\nversion: \"1\"\ncontainers:\n  - name: main\n    image: " + reg.Addr + "/thermo:1.0\n"
	v, err := h.c.Apply(context.Background(), admin, []byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	if img := v.Spec.Containers[0].Image; !strings.Contains(img, "@sha256:") {
		t.Fatalf("stored image %s: not pinned", img)
	}
	again, err := h.c.Apply(context.Background(), admin, []byte(spec))
	if err != nil || again.Revision != v.Revision {
		t.Fatalf("the same spec again made revision %d (was %d): %v", again.Revision, v.Revision, err)
	}
	_, err = h.c.Apply(context.Background(), admin, []byte(spec+"placement:\n  arch: [amd64, arm64]\n"))
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "arm64") {
		t.Fatalf("apply with an arch the image lacks: %v", err)
	}
	if a, _ := h.c.App(context.Background(), "thermo"); a.Latest != v.Revision {
		t.Fatalf("a refused apply stored revision %d", a.Latest)
	}
}
