package image

import (
	"regexp"
	"strings"
	"sync"

	digest "github.com/opencontainers/go-digest"
)

// The patterns compile on first use: every start of the agent binary (the
// CLI, each container's init) would otherwise pay for them.
var (
	hex64        = lazyRegexp(`^[0-9a-f]{64}$`)
	pathCompRe   = lazyRegexp(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	tagRe        = lazyRegexp(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	domainCompRe = lazyRegexp(`^(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])$`)
	hexPrefixRe  = lazyRegexp(`^[0-9a-f]{4,64}$`)
)

func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

// parseDigest accepts only "sha256:" followed by 64 lower-case hex digits.
// It is the gate every digest passes before it is used in a path (U-34).
func parseDigest(s string) (digest.Digest, error) {
	hex, ok := strings.CutPrefix(s, "sha256:")
	if !ok || !hex64().MatchString(hex) {
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
// with a digest ("name@sha256:…") keeps the digest and gets no default tag.
func NormalizeName(s string) (string, error) {
	if s == "" || len(s) > 512 {
		return "", invalidf("image name %q: empty or too long", s)
	}
	name, dgst, hasDigest := strings.Cut(s, "@")
	if hasDigest {
		if _, err := parseDigest(dgst); err != nil {
			return "", invalidf("image name %q: %v", s, err)
		}
	}
	tag := ""
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		name, tag = name[:i], name[i+1:]
		if !tagRe().MatchString(tag) {
			return "", invalidf("image name %q: invalid tag", s)
		}
	}
	comps := strings.Split(name, "/")
	domain := ""
	if len(comps) > 1 && (strings.ContainsAny(comps[0], ".:") || comps[0] == "localhost") {
		domain, comps = comps[0], comps[1:]
		host, port, hasPort := strings.Cut(domain, ":")
		for _, dc := range strings.Split(host, ".") {
			if !domainCompRe().MatchString(dc) {
				return "", invalidf("image name %q: invalid registry", s)
			}
		}
		if hasPort && (port == "" || strings.Trim(port, "0123456789") != "") {
			return "", invalidf("image name %q: invalid registry port", s)
		}
	}
	for _, c := range comps {
		if !pathCompRe().MatchString(c) {
			return "", invalidf("image name %q: invalid path component %q", s, c)
		}
	}
	if domain == "" || domain == "index.docker.io" {
		domain = "docker.io"
		if len(comps) == 1 {
			comps = append([]string{"library"}, comps...)
		}
	}
	out := domain + "/" + strings.Join(comps, "/")
	if tag == "" && !hasDigest {
		tag = "latest"
	}
	if tag != "" {
		out += ":" + tag
	}
	if hasDigest {
		out += "@" + dgst
	}
	return out, nil
}
