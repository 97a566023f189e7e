package image

import (
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	digest "github.com/opencontainers/go-digest"
)

// The checks below are plain functions, not regular expressions: every
// start of the agent binary (the CLI, each container's init) would pay for
// compiling those.

// isHex reports whether s has between min and max lower-case hex digits
// and nothing else.
func isHex(s string, min, max int) bool {
	if len(s) < min || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// isHex64 reports whether s is a sha256 digest's 64 lower-case hex digits.
func isHex64(s string) bool { return isHex(s, 64, 64) }

// parseDigest accepts only "sha256:" followed by 64 lower-case hex digits.
// It is the gate every digest passes before it is used in a path (U-34).
func parseDigest(s string) (digest.Digest, error) {
	hex, ok := strings.CutPrefix(s, "sha256:")
	if !ok || !isHex64(hex) {
		if len(s) > 80 {
			s = s[:80] + "…"
		}
		return "", invalidf("digest %q: not sha256 with 64 lower-case hex digits", s)
	}
	return digest.Digest(s), nil
}

// shortDigest abbreviates a digest for error messages.
func shortDigest(d digest.Digest) string {
	s := string(d)
	if len(s) > len("sha256:")+12 {
		return s[:len("sha256:")+12] + "…"
	}
	return s
}

// NormalizeName turns a familiar image name into its full form the way
// docker does: "workload" becomes "docker.io/library/workload:latest",
// "tender.test/workload" becomes "tender.test/workload:latest". A name
// with a digest ("name@sha256:…") keeps the digest, and its tag if it has
// one, and gets no default tag.
//
// go-containerregistry's name package splits the reference and applies
// Docker Hub's defaults; the distribution grammar it does not check (path
// components, the first character of a tag, registry host names) is
// checked here, and a digest must pass parseDigest.
func NormalizeName(s string) (string, error) {
	if s == "" || len(s) > 512 {
		return "", invalidf("image name %q: empty or too long", s)
	}
	base, dgst, hasDigest := strings.Cut(s, "@")
	if hasDigest {
		if _, err := parseDigest(dgst); err != nil {
			return "", invalidf("image name %q: %v", s, err)
		}
	}
	var opts []name.Option // Docker Hub by default, and tag "latest"
	if hasDigest {
		opts = append(opts, name.WithDefaultTag(""))
	}
	ref, err := name.NewTag(base, opts...)
	if err != nil {
		return "", invalidf("image name %q: %v", s, err)
	}
	tag := ref.TagStr()
	if tag != "" && (tag[0] == '.' || tag[0] == '-') {
		return "", invalidf("image name %q: invalid tag", s)
	}
	domain := ref.RegistryStr()
	if domain == name.DefaultRegistry {
		domain = dockerHub
	} else if !validRegistry(domain) {
		return "", invalidf("image name %q: invalid registry", s)
	}
	repo := ref.RepositoryStr()
	for _, c := range strings.Split(repo, "/") {
		if !validPathComponent(c) {
			return "", invalidf("image name %q: invalid path component %q", s, c)
		}
	}
	out := domain + "/" + repo
	if tag != "" {
		out += ":" + tag
	}
	if hasDigest {
		out += "@" + dgst
	}
	return out, nil
}

// dockerHub is Docker Hub's name in normalised references.
const dockerHub = "docker.io"

// validTag reports whether s is a tag: up to 128 letters, digits, '_', '.'
// and '-', not starting with '.' or '-'.
func validTag(s string) bool {
	if s == "" || len(s) > 128 || s[0] == '.' || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '_' && c != '.' && c != '-' && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}

// validPathComponent reports whether c is a repository path component:
// lower-case letters and digits, separated by one '.', one or two '_', or
// any number of '-'.
func validPathComponent(c string) bool {
	if c == "" || !isAlnum(c[0]) || !isAlnum(c[len(c)-1]) {
		return false
	}
	for i := 1; i < len(c); i++ {
		if isAlnum(c[i]) {
			continue
		}
		j := i
		for j < len(c) && !isAlnum(c[j]) {
			j++
		}
		switch sep := c[i:j]; {
		case sep == ".", sep == "_", sep == "__", strings.Trim(sep, "-") == "":
		default:
			return false
		}
		i = j
	}
	return true
}

// validRegistry reports whether s is host[:port], the host made of
// letters, digits and inner hyphens between dots, the port of digits.
func validRegistry(s string) bool {
	host, port, hasPort := strings.Cut(s, ":")
	if hasPort && (port == "" || strings.Trim(port, "0123456789") != "") {
		return false
	}
	for _, dc := range strings.Split(host, ".") {
		if dc == "" || dc[0] == '-' || dc[len(dc)-1] == '-' {
			return false
		}
		for i := 0; i < len(dc); i++ {
			if c := dc[i]; !isAlnum(c) && c != '-' && (c < 'A' || c > 'Z') {
				return false
			}
		}
	}
	return true
}

// isAlnum reports whether c is a lower-case letter or a digit.
func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
