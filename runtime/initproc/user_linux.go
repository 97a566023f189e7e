package initproc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// maxID bounds user and group IDs: [0, 2^31).
const maxID = 1<<31 - 1

// execUser is who the workload runs as.
type execUser struct {
	uid, gid uint32
	groups   []uint32
	home     string
}

// resolveUser resolves spec ("name", "uid", "name:group", "uid:gid"; empty
// means def) in the container's /etc/passwd and /etc/group. It runs after
// pivot_root, so the files are the container's.
func resolveUser(spec string, def specs.User) (execUser, error) {
	var u execUser
	extra := def.AdditionalGids
	if spec == "" {
		if def.UID > maxID || def.GID > maxID {
			return u, fmt.Errorf("invalid user %d:%d: id out of range", def.UID, def.GID)
		}
		u.uid, u.gid = def.UID, def.GID
		if def.Username != "" {
			spec = def.Username
		} else {
			if pw, err := findPasswd(func(e passwdEntry) bool { return e.uid == u.uid }); err == nil && pw != nil {
				u.home = pw.home
			}
			return u, addGroups(&u, extra)
		}
	}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if userPart == "" || (hasGroup && groupPart == "") {
		return u, fmt.Errorf("invalid user %q", spec)
	}
	var pw *passwdEntry
	if id, numeric, err := parseID(userPart); err != nil {
		return u, fmt.Errorf("invalid user %q: %w", spec, err)
	} else if numeric {
		u.uid = id
		pw, err = findPasswd(func(e passwdEntry) bool { return e.uid == id })
		if err != nil {
			return u, fmt.Errorf("user %q: %w", spec, err)
		}
	} else {
		pw, err = findPasswd(func(e passwdEntry) bool { return e.name == userPart })
		if err != nil {
			return u, fmt.Errorf("user %q: %w", spec, err)
		}
		if pw == nil {
			return u, fmt.Errorf("user %q: no such user in /etc/passwd", spec)
		}
		u.uid = pw.uid
	}
	if pw != nil {
		u.gid, u.home = pw.gid, pw.home
	}
	if hasGroup {
		id, numeric, err := parseID(groupPart)
		if err != nil {
			return u, fmt.Errorf("invalid group %q: %w", spec, err)
		}
		if numeric {
			u.gid = id
		} else {
			g, err := findGroup(func(e groupEntry) bool { return e.name == groupPart })
			if err != nil {
				return u, fmt.Errorf("group %q: %w", groupPart, err)
			}
			if g == nil {
				return u, fmt.Errorf("group %q: no such group in /etc/group", groupPart)
			}
			u.gid = g.gid
		}
	}
	if pw != nil {
		// Supplementary groups: those listing the user as a member.
		_, err := findGroup(func(e groupEntry) bool {
			for _, m := range e.members {
				if m == pw.name && e.gid != u.gid {
					extra = append(extra, e.gid)
				}
			}
			return false
		})
		if err != nil {
			return u, fmt.Errorf("groups of %q: %w", spec, err)
		}
	}
	return u, addGroups(&u, extra)
}

func addGroups(u *execUser, gids []uint32) error {
	for _, g := range gids {
		if g > maxID {
			return fmt.Errorf("invalid additional group %d: id out of range", g)
		}
	}
	u.groups = gids
	return nil
}

// parseID reports whether s is numeric and its value; a numeric s out of
// [0, 2^31) (including a negative one) is an error.
func parseID(s string) (uint32, bool, error) {
	if s[0] != '-' && (s[0] < '0' || s[0] > '9') {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > maxID {
		return 0, true, fmt.Errorf("id %s out of range", s)
	}
	return uint32(n), true, nil
}

type passwdEntry struct {
	name     string
	uid, gid uint32
	home     string
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

// findPasswd returns the first /etc/passwd entry matching, nil if none (or
// if the file does not exist).
func findPasswd(match func(passwdEntry) bool) (*passwdEntry, error) {
	var found *passwdEntry
	err := scanDB("/etc/passwd", func(f []string) bool {
		if len(f) < 7 {
			return false
		}
		uid, ok1 := dbID(f[2])
		gid, ok2 := dbID(f[3])
		if !ok1 || !ok2 {
			return false
		}
		e := passwdEntry{name: f[0], uid: uid, gid: gid, home: f[5]}
		if match(e) {
			found = &e
			return true
		}
		return false
	})
	return found, err
}

func findGroup(match func(groupEntry) bool) (*groupEntry, error) {
	var found *groupEntry
	err := scanDB("/etc/group", func(f []string) bool {
		if len(f) < 4 {
			return false
		}
		gid, ok := dbID(f[2])
		if !ok {
			return false
		}
		e := groupEntry{name: f[0], gid: gid}
		if f[3] != "" {
			e.members = strings.Split(f[3], ",")
		}
		if match(e) {
			found = &e
			return true
		}
		return false
	})
	return found, err
}

func dbID(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n > maxID {
		return 0, false
	}
	return uint32(n), true
}

// scanDB calls fn with the colon-separated fields of each line of path
// until it returns true. The file must be a regular file (never a FIFO or a
// device that could block or feed endless data); a missing file is empty.
func scanDB(path string, fn func([]string) bool) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%s: not a regular file", path)
	}
	sc := bufio.NewScanner(io.LimitReader(f, 16<<20))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if fn(strings.Split(line, ":")) {
			return nil
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}
