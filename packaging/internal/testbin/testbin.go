// Package testbin gives packaging's tests what they package and run: the
// binaries and test image `make test` built (TENDER_AGENT, TENDER_BIN,
// TENDER_TESTIMAGE), or, outside it, builds them as `make release` does.
package testbin

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/tender-edge/tender/packaging"
)

// SrcDir is the source tree, from a test's working directory (a package
// directory under packaging/).
func SrcDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no go.mod above %s", dir)
}

// Release fills dir as `make release` fills build/release for this
// machine's architecture: PROG-linux-ARCH for both programs.
func Release(src, dir string) (packaging.Arch, error) {
	a, err := packaging.ArchNamed(runtime.GOARCH)
	if err != nil {
		return a, err
	}
	for prog, env := range map[string]string{"tender-agent": "TENDER_AGENT", "tender": "TENDER_BIN"} {
		dst := filepath.Join(dir, prog+"-linux-"+a.Name)
		if p := os.Getenv(env); p != "" {
			if err := copyFile(p, dst); err != nil {
				return a, err
			}
			continue
		}
		if err := goCmd(src, "build", "-trimpath", "-ldflags", "-s -w", "-o", dst, "./cmd/"+prog); err != nil {
			return a, err
		}
	}
	return a, nil
}

// Image returns the test image archive (build/testimage.tar), built under
// dir when `make test` did not say where it is.
func Image(src, dir string) (string, error) {
	if p := os.Getenv("TENDER_TESTIMAGE"); p != "" {
		return p, nil
	}
	wl, img := filepath.Join(dir, "workload"), filepath.Join(dir, "testimage.tar")
	if err := goCmd(src, "build", "-trimpath", "-ldflags", "-s -w", "-o", wl, "./test/workload"); err != nil {
		return "", err
	}
	return img, goCmd(src, "run", "./test/mkimage", "-bin", wl, "-o", img)
}

func goCmd(src string, args ...string) error {
	cmd := exec.Command("go", args...)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
