package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestCLI_LogsFollowStatsAndImages(t *testing.T) {
	id := strings.TrimSpace(ok(t, "run", "-d", "--name", "talker", "--memory", "48Mi", "--cpus", "0.1", image, "spin", "2"))
	t.Cleanup(func() { agent(t, "rm", "-f", "talker") })

	// stats: the columns and the limit from the cgroup.
	st := ok(t, "stats", "talker")
	if !strings.HasPrefix(st, "CONTAINER ID") || !strings.Contains(st, "/ 48.0MiB") {
		t.Errorf("stats:\n%s", st)
	}
	var rows []struct {
		Name        string
		MemoryLimit uint64
		Pids        uint64
	}
	if err := json.Unmarshal([]byte(ok(t, "stats", "-o", "json", "talker")), &rows); err != nil || len(rows) != 1 ||
		rows[0].MemoryLimit != 48<<20 || rows[0].Pids < 1 {
		t.Errorf("stats -o json: %+v %v", rows, err)
	}

	// logs -f ends when the container does, with its last words (spin
	// prints its count when it is done).
	if out := ok(t, "logs", "-f", id); !strings.Contains(out, "iterations ") {
		t.Errorf("logs -f: %q", out)
	}
	var got []struct{ State struct{ Status string } }
	json.Unmarshal([]byte(ok(t, "inspect", "talker")), &got)
	if len(got) != 1 || got[0].State.Status != "exited" {
		t.Errorf("logs -f returned before the container exited: %+v", got)
	}

	// An image in use cannot be removed; its USED BY column says by whom.
	if r := agent(t, "rmi", image); r.code == 0 || !strings.Contains(r.stderr, "in use by container talker") {
		t.Errorf("rmi of an image in use: %s", r)
	}
	if imgs := ok(t, "images"); !strings.Contains(imgs, "talker") {
		t.Errorf("images does not say who uses the image:\n%s", imgs)
	}
	// prune keeps it (in use) and says what it freed.
	if out := ok(t, "images", "prune"); !strings.Contains(out, "Total reclaimed space") || strings.Contains(out, "tender.test/workload") {
		t.Errorf("images prune:\n%s", out)
	}
}

func TestRun_EnvWorkdirEntrypoint(t *testing.T) {
	env := ok(t, "run", "--rm", "-e", "FOO=bar", "-e", "WORKLOAD=overridden", image, "env")
	for _, want := range []string{"FOO=bar\n", "WORKLOAD=overridden\n", "PATH=/usr/local/sbin:"} {
		if !strings.Contains(env, want) {
			t.Errorf("env lacks %q:\n%s", want, env)
		}
	}
	if strings.Contains(env, "WORKLOAD=1") {
		t.Errorf("-e did not override the image's WORKLOAD=1:\n%s", env)
	}
	ok(t, "run", "--rm", "--workdir", "/tmp", image, "write", "here", "x") // relative to the workdir
	if r := agent(t, "run", "--rm", "--workdir", "/proc/self/fd/3", image, "id"); r.code == 0 {
		t.Errorf("a workdir under /proc/self/fd was accepted (R-02): %s", r)
	}
	if out := ok(t, "run", "--rm", "--entrypoint", "/workload", image, "echo", "hi"); out != "hi\n" {
		t.Errorf("--entrypoint: %q", out)
	}
}

func TestCLI_Exec(t *testing.T) {
	ok(t, "run", "-d", "--name", "exectarget", image, "sleep", "100")
	t.Cleanup(func() { agent(t, "rm", "-f", "exectarget") })
	if out := ok(t, "exec", "exectarget", "/workload", "id"); !strings.HasPrefix(out, "uid=0 gid=0 hostname=exectarget ") || strings.HasSuffix(strings.TrimSpace(out), "pid=1") {
		t.Errorf("exec id: %q", out)
	}
	if out := ok(t, "exec", "-u", "app", "exectarget", "/workload", "id"); !strings.HasPrefix(out, "uid=1000 gid=1000 ") {
		t.Errorf("exec -u app id: %q", out)
	}
	if out := strings.TrimSpace(ok(t, "exec", "exectarget", "/workload", "caps")); out != "00000000a80425fb" {
		t.Errorf("exec caps: %s", out)
	}
	if r := agent(t, "exec", "exectarget", "/workload", "exit", "4"); r.code != 4 {
		t.Errorf("exec exit 4: %s", r)
	}
	if r := agent(t, "exec", "exectarget", "no-such-command"); r.code == 0 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("exec of a missing command: %s", r)
	}
	agent(t, "stop", "-t", "1s", "exectarget")
	if r := agent(t, "exec", "exectarget", "/workload", "id"); r.code == 0 || !strings.Contains(r.stderr, "not running") {
		t.Errorf("exec into a stopped container: %s", r)
	}
}
