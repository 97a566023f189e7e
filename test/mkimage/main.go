// Command mkimage writes the project's test image as an OCI image archive:
//
//	mkimage -bin build/workload -o build/testimage.tar
//
// With several -bin ARCH=PATH flags it writes a multi-arch index instead.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	goruntime "runtime"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/tender-edge/tender/test/ociarchive"
)

type bins []string

func (b *bins) String() string     { return strings.Join(*b, ",") }
func (b *bins) Set(v string) error { *b = append(*b, v); return nil }

func main() {
	var (
		out  = flag.String("o", "build/testimage.tar", "output archive")
		name = flag.String("name", ociarchive.WorkloadName, "image name")
		bs   bins
	)
	flag.Var(&bs, "bin", "workload binary, PATH or ARCH[/VARIANT]=PATH (repeat for a multi-arch index)")
	flag.Parse()
	if err := run(*out, *name, bs); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(out, name string, bs bins) error {
	if len(bs) == 0 {
		return fmt.Errorf("need -bin")
	}
	a := ociarchive.New()
	var ms []ocispec.Descriptor
	for _, b := range bs {
		arch, path, ok := strings.Cut(b, "=")
		if !ok {
			arch, path = goruntime.GOARCH, b
		}
		arch, variant, _ := strings.Cut(arch, "/")
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		d, err := a.AddImage(ociarchive.Workload(data, arch, variant))
		if err != nil {
			return err
		}
		ms = append(ms, d)
	}
	top := ms[0]
	if len(ms) > 1 {
		var err error
		if top, err = a.AddIndex(ms); err != nil {
			return err
		}
	}
	var buf bytes.Buffer
	if err := a.Write(&buf, ociarchive.Named(top, name)); err != nil {
		return err
	}
	if err := os.WriteFile(out+".tmp", buf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(out+".tmp", out)
}
