package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/tender-edge/tender/fleet/placement"
)

// Resolver turns an image reference into one by digest and checks that
// it has a platform for each arch.
type Resolver interface {
	// Resolve returns ref pinned to a digest (repo@sha256:...). arches
	// lists the architectures the app may be placed on (empty: any):
	// an image without a platform for one of them is refused with
	// errdefs.ErrInvalidArgument, naming the arch.
	Resolve(ctx context.Context, ref string, arches []string) (string, error)
}

// Registry is a registry's entry in the registries config.
type Registry struct {
	// Insecure speaks plain HTTP to it.
	Insecure bool   `json:"insecure,omitempty"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
}

// RegistryResolver resolves against the registries, with credentials
// and plain-HTTP registries by host.
type RegistryResolver struct {
	Registries map[string]Registry
	Transport  http.RoundTripper
}

// Resolve implements Resolver.
func (rr RegistryResolver) Resolve(ctx context.Context, ref string, arches []string) (string, error) {
	var opts []name.Option
	host := ref
	if i := strings.IndexByte(host, '/'); i >= 0 {
		host = host[:i]
	}
	reg, ok := rr.Registries[host]
	if ok && reg.Insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return "", fmt.Errorf("image %q: %v: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	ropts := []remote.Option{remote.WithContext(ctx)}
	if ok && reg.Username != "" {
		ropts = append(ropts, remote.WithAuth(&authn.Basic{Username: reg.Username, Password: reg.Password}))
	}
	if rr.Transport != nil {
		ropts = append(ropts, remote.WithTransport(rr.Transport))
	}
	desc, err := remote.Get(r, ropts...)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && (te.StatusCode == http.StatusNotFound || hasCode(te, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode)) {
			return "", fmt.Errorf("image %s does not exist in its registry (check the tag): %w", ref, errdefs.ErrInvalidArgument)
		}
		if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
			return "", fmt.Errorf("image %s: the registry refused the credentials (registries config): %w", ref, errdefs.ErrPermissionDenied)
		}
		return "", fmt.Errorf("image %s: registry %s unreachable: %v: %w", ref, r.Context().RegistryStr(), err, errdefs.ErrUnavailable)
	}
	if len(arches) > 0 {
		have, err := platforms(desc)
		if err != nil {
			return "", fmt.Errorf("image %s: %v: %w", ref, err, errdefs.ErrInvalidArgument)
		}
		for _, a := range arches {
			if !slices.Contains(have, placement.CanonicalArch(a)) {
				return "", fmt.Errorf("image %s has no platform for arch %s (it has %s): %w", ref, a, strings.Join(have, ", "), errdefs.ErrInvalidArgument)
			}
		}
	}
	return r.Context().Digest(desc.Digest.String()).String(), nil
}

func hasCode(te *transport.Error, codes ...transport.ErrorCode) bool {
	for _, d := range te.Errors {
		if slices.Contains(codes, d.Code) {
			return true
		}
	}
	return false
}

// platforms lists the architectures of an index, or of a single image's
// config.
func platforms(desc *remote.Descriptor) ([]string, error) {
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, err
		}
		m, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		var out []string
		for _, d := range m.Manifests {
			if d.Platform != nil && d.Platform.OS == "linux" {
				out = append(out, archOf(d.Platform))
			}
		}
		return out, nil
	}
	img, err := desc.Image()
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	return []string{archOf(&v1.Platform{Architecture: cf.Architecture, Variant: cf.Variant})}, nil
}

func archOf(p *v1.Platform) string {
	return placement.CanonicalArch(p.Architecture)
}
