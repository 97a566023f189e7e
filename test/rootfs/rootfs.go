// Package rootfs builds the minimal root filesystem that the runtime's
// package tests start containers from: the directories a container needs,
// /etc/passwd and /etc/group with a user app (uid 1000, also in group
// extra), and static binaries built from the project's own Go packages.
package rootfs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Build writes the root filesystem into dir. binaries maps a file name in
// dir to a Go package path (as go build takes it, from the caller's
// working directory), built with CGO_ENABLED=0.
func Build(dir string, binaries map[string]string) error {
	for _, d := range []string{"etc", "proc", "sys", "dev", "tmp", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
		"etc/group":  "root:x:0:\ntty:x:5:\napp:x:1000:\nextra:x:2000:app\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	for out, pkg := range binaries {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, out), pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", pkg, err, b)
		}
	}
	return nil
}
