package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"sigs.k8s.io/yaml"
)

// MaxFileSize bounds the policy file.
const MaxFileSize = 64 << 10

// file is the policy file as written. A field left out keeps the default
// policy's value; a field given replaces it ("devices: []" allows none).
type file struct {
	Devices         *[]string `json:"devices"`
	HostNetwork     *bool     `json:"hostNetwork"`
	Capabilities    *[]string `json:"capabilities"`
	PrivilegedPorts *bool     `json:"privilegedPorts"`
	Registries      *[]string `json:"registries"`
}

// Load reads the policy file at path (DefaultPath on a device). A missing
// file gives the default policy. The file and its directory must be owned
// by root and writable by nobody else: a policy anyone can edit is no
// policy, and it is refused (errdefs.ErrPermissionDenied). Bad content is
// refused with errdefs.ErrInvalidArgument.
func Load(path string) (*Policy, error) {
	// O_NONBLOCK: a FIFO put in the file's place must not hang the agent
	// before it is refused as not a regular file.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		p := Default()
		p.Source = fmt.Sprintf("the default policy (no %s)", path)
		return p, nil
	}
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("policy %s: not a regular file (%s): %w", path, fi.Mode().Type(), errdefs.ErrInvalidArgument)
	}
	if err := checkOwner("policy", path, fi); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	di, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("policy %s: directory: %w", path, err)
	}
	if err := checkOwner("directory of policy", dir, di); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("policy %s: larger than %d KiB: %w", path, MaxFileSize>>10, errdefs.ErrInvalidArgument)
	}
	return Parse(data, path)
}

// checkOwner refuses a file or directory not owned by root, or writable by
// its group or others (a directory's sticky bit does not make that safe
// enough for a policy).
func checkOwner(what, name string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s %s: no owner information: %w", what, name, errdefs.ErrPermissionDenied)
	}
	perm := fi.Mode().Perm()
	switch {
	case st.Uid != 0:
		return fmt.Errorf("%s %s: owned by uid %d, not root: refused, since whoever owns it can change what apps may do; chown root %s: %w",
			what, name, st.Uid, name, errdefs.ErrPermissionDenied)
	case perm&0o022 != 0:
		return fmt.Errorf("%s %s: mode %04o is writable by group or others: refused, since a policy anyone can edit is no policy; chmod go-w %s: %w",
			what, name, perm, name, errdefs.ErrPermissionDenied)
	}
	return nil
}

// Parse reads a policy file's content; source names it in messages. It is
// strict: unknown fields, duplicate keys, malformed or out-of-/dev device
// patterns, devices that can never be allowed, unknown capabilities and
// malformed registry hosts are refused (errdefs.ErrInvalidArgument), each
// problem named.
func Parse(data []byte, source string) (*Policy, error) {
	f, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %v: %w", source, err, errdefs.ErrInvalidArgument)
	}
	p := Default()
	p.Source = source
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("policy %s: "+format+": %w", append(append([]any{source}, args...), errdefs.ErrInvalidArgument)...))
	}
	if f.Devices != nil {
		p.Devices = nil
		for i, pat := range *f.Devices {
			if _, err := path.Match(pat, ""); err != nil {
				bad("devices[%d]: %q: malformed pattern (path.Match syntax: *, ?, [a-z], \\)", i, pat)
				continue
			}
			if !strings.HasPrefix(pat, "/dev/") || path.Clean(pat) != pat {
				bad("devices[%d]: %q: want a clean absolute pattern under /dev/, such as /dev/ttyUSB*", i, pat)
				continue
			}
			if slices.Contains(NeverDevices, pat) {
				bad("devices[%d]: %s can never be allowed: it gives access to the host's memory or I/O ports", i, pat)
				continue
			}
			p.Devices = append(p.Devices, pat)
		}
	}
	if f.HostNetwork != nil {
		p.HostNetwork = *f.HostNetwork
	}
	if f.PrivilegedPorts != nil {
		p.PrivilegedPorts = *f.PrivilegedPorts
	}
	if f.Capabilities != nil {
		p.Capabilities = nil
		for i, c := range *f.Capabilities {
			name, ok := capName(c)
			if !ok {
				bad("capabilities[%d]: %q: not a Linux capability (want a name such as NET_ADMIN or CAP_NET_ADMIN)", i, c)
				continue
			}
			p.Capabilities = append(p.Capabilities, name)
		}
	}
	if f.Registries != nil {
		p.Registries = nil
		for i, r := range *f.Registries {
			host, err := registryHost(r)
			if err != nil {
				bad("registries[%d]: %q: %v", i, r, err)
				continue
			}
			p.Registries = append(p.Registries, host)
		}
		if len(p.Registries) == 0 && len(errs) == 0 {
			// "registries: []" reads as "none", but an empty list is
			// what "any" looks like in Policy: say so rather than guess.
			bad("registries: an empty list: leave the field out to allow any registry")
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// fields are the policy file's keys, spelt exactly.
var fields = []string{"devices", "hostNetwork", "capabilities", "privilegedPorts", "registries"}

// decode reads the file strictly. encoding/json matches keys without
// regard to case, so "hostnetwork" would count and, next to "hostNetwork",
// silently win; keys are compared exactly first.
func decode(data []byte) (file, error) {
	var f file
	js, err := yaml.YAMLToJSONStrict(data) // refuses duplicate keys
	if err != nil {
		return f, err
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return f, nil // empty, or comments only
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(js, &keys); err != nil {
		return f, fmt.Errorf("want a mapping of %s", strings.Join(fields, ", "))
	}
	var unknown []string
	for k := range keys {
		if !slices.Contains(fields, k) {
			unknown = append(unknown, strconv.Quote(k))
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		what := "field"
		if len(unknown) > 1 {
			what = "fields"
		}
		return f, fmt.Errorf("unknown %s %s (the fields are %s)", what, strings.Join(unknown, ", "), strings.Join(fields, ", "))
	}
	d := json.NewDecoder(bytes.NewReader(js))
	d.DisallowUnknownFields()
	if err := d.Decode(&f); err != nil {
		if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
			want := "a list of strings"
			if te.Type.Kind() == reflect.Bool {
				want = "true or false"
			}
			return f, fmt.Errorf("%s: got a %s, want %s", te.Field, te.Value, want)
		}
		return f, err
	}
	return f, nil
}

// registryHost checks a registries entry and returns it as image
// references resolve it ("index.docker.io" is "docker.io").
func registryHost(s string) (string, error) {
	if s == "" || strings.ContainsAny(s, "/@ ") {
		return "", errors.New("want a registry host[:port] such as registry.example.com:5000, without a scheme or path")
	}
	host, err := registryOf(s + "/x")
	if err != nil || !strings.EqualFold(host, s) && !strings.EqualFold(s, "index.docker.io") {
		return "", errors.New("not a registry host: want a name with a dot or a port (registry.example.com, host:5000), or localhost, as in image references")
	}
	return strings.ToLower(host), nil
}
