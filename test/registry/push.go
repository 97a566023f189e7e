// Package registry holds test helpers for image pulls from real registries
// on loopback: pushing OCI archives with go-containerregistry, an HTTP
// handler that injects faults in front of a registry, the project's
// workload image for several architectures, and a CNCF distribution
// (Debian's docker-registry) server with TLS and htpasswd auth.
package registry

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/tender-edge/tender/test/ociarchive"
)

// Push pushes the top entry of an OCI archive (as test/ociarchive writes
// it: an image or a multi-arch index) to ref. insecure allows plain HTTP.
func Push(ctx context.Context, archive []byte, ref string, insecure bool, opts ...remote.Option) error {
	dir, err := os.MkdirTemp("", "push-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := untar(archive, dir); err != nil {
		return fmt.Errorf("unpack archive: %w", err)
	}
	var nopts []name.Option
	if insecure {
		nopts = append(nopts, name.Insecure)
	}
	tag, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return err
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return err
	}
	ii, err := p.ImageIndex()
	if err != nil {
		return err
	}
	im, err := ii.IndexManifest()
	if err != nil {
		return err
	}
	if len(im.Manifests) == 0 {
		return errors.New("archive has no image")
	}
	opts = append(opts, remote.WithContext(ctx))
	top := im.Manifests[0]
	if top.MediaType.IsIndex() {
		idx, err := ii.ImageIndex(top.Digest)
		if err != nil {
			return err
		}
		return remote.WriteIndex(tag, idx, opts...)
	}
	img, err := ii.Image(top.Digest)
	if err != nil {
		return err
	}
	return remote.Write(tag, img, opts...)
}

func untar(archive []byte, dir string) error {
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				return err
			}
			if err := os.WriteFile(p, data, 0o644); err != nil {
				return err
			}
		}
	}
}

var (
	binMu    sync.Mutex
	binCache = map[string][]byte{}
)

// WorkloadBinary builds ./test/workload for GOARCH arch (and GOARM for
// "arm/v7") with the go tool, once per process.
func WorkloadBinary(arch string) ([]byte, error) {
	binMu.Lock()
	defer binMu.Unlock()
	if b, ok := binCache[arch]; ok {
		return b, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "workload-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "workload")
	goarch, variant, _ := strings.Cut(arch, "/")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "./test/workload")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if goarch == "arm" && variant != "" {
		cmd.Env = append(cmd.Env, "GOARM="+strings.TrimPrefix(variant, "v"))
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build workload for %s: %v: %s", arch, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	binCache[arch] = b
	return b, nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the module")
	}
	return filepath.Dir(mod), nil
}

// WorkloadArchive returns an OCI archive of the workload image: a
// multi-arch index when several archs ("amd64", "arm64", "arm/v7") are
// given. extra layers are added on top of each image.
func WorkloadArchive(name string, archs []string, extra ...ociarchive.Layer) ([]byte, error) {
	a := ociarchive.New()
	var ms []ocispec.Descriptor
	for _, arch := range archs {
		bin, err := WorkloadBinary(arch)
		if err != nil {
			return nil, err
		}
		goarch, variant, _ := strings.Cut(arch, "/")
		img := ociarchive.Workload(bin, goarch, variant)
		img.Layers = append(img.Layers, extra...)
		d, err := a.AddImage(img)
		if err != nil {
			return nil, err
		}
		ms = append(ms, d)
	}
	top := ms[0]
	if len(ms) > 1 {
		var err error
		if top, err = a.AddIndex(ms); err != nil {
			return nil, err
		}
	}
	var buf bytes.Buffer
	if err := a.Write(&buf, ociarchive.Named(top, name)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
