// Command mkpkg builds Tender's packages from the release binaries:
//
//	go run ./packaging/cmd/mkpkg -version "$(git describe --always --dirty)" \
//	    -time "$(git log -1 --format=%ct)" [-arch amd64,arm64] [-format deb,ipk] \
//	    [-bin build/release] [-out build/release]
//
// It prints the path of each package written. `make packages` runs it.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tender-edge/tender/packaging"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkpkg:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("mkpkg", flag.ContinueOnError)
	version := fs.String("version", "", "git describe --always --dirty output")
	stamp := fs.String("time", "", "the commit time, seconds since 1970 (git log -1 --format=%ct)")
	arches := fs.String("arch", "", "comma-separated architectures (default: amd64,arm64,armv7,riscv64)")
	formats := fs.String("format", "", "comma-separated formats (default: deb,rpm,apk,ipk)")
	bin := fs.String("bin", "build/release", "directory of PROG-linux-ARCH binaries")
	out := fs.String("out", "build/release", "output directory")
	src := fs.String("src", ".", "the source tree")
	if err := fs.Parse(args); err != nil {
		return err
	}
	secs, err := strconv.ParseInt(*stamp, 10, 64)
	if err != nil {
		return fmt.Errorf("-time %q: want seconds since 1970", *stamp)
	}
	t := time.Unix(secs, 0).UTC()
	v, err := packaging.ParseVersion(*version, t)
	if err != nil {
		return err
	}
	o := packaging.Options{SrcDir: *src, BinDir: *bin, OutDir: *out, Version: v, Time: t}
	if *arches != "" {
		for _, name := range strings.Split(*arches, ",") {
			a, err := packaging.ArchNamed(name)
			if err != nil {
				return err
			}
			o.Arches = append(o.Arches, a)
		}
	}
	if *formats != "" {
		o.Formats = strings.Split(*formats, ",")
	}
	paths, err := packaging.Build(o)
	for _, p := range paths {
		fmt.Println(p)
	}
	return err
}
