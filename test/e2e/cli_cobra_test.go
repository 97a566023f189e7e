package e2e

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// Every command answers --help with its usage on stdout and exit 0.
func TestCLI_HelpEveryCommand(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"-h"}, {"help"}, {"help", "run"},
		{"run", "--help"}, {"ps", "--help"}, {"exec", "--help"}, {"logs", "--help"}, {"stop", "--help"},
		{"rm", "--help"}, {"stats", "--help"}, {"inspect", "--help"}, {"pull", "--help"}, {"images", "--help"},
		{"images", "prune", "--help"}, {"rmi", "--help"}, {"load", "--help"}, {"save", "--help"},
		{"daemon", "--help"}, {"apply", "--help"}, {"apps", "--help"}, {"app", "--help"}, {"app", "rm", "--help"},
		{"version", "--help"}, {"completion", "--help"},
	} {
		r := agent(t, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage:") || r.stderr != "" {
			t.Errorf("%v: want usage on stdout and exit 0, got %s", args, r)
		}
	}
	// The root's usage lists the commands in groups; run's, its flags.
	root := agent(t, "--help").stdout
	for _, want := range []string{"Containers:", "Images:", "The daemon and its apps:", "  ps ", "  apply "} {
		if !strings.Contains(root, want) {
			t.Errorf("tender-agent --help lacks %q:\n%s", want, root)
		}
	}
	run := agent(t, "run", "--help").stdout
	for _, want := range []string{"Resources:", "-m, --memory", "--pids-limit", "Isolation:", "-v, --volume", "Global options:", "--root"} {
		if !strings.Contains(run, want) {
			t.Errorf("run --help lacks %q:\n%s", want, run)
		}
	}
	if v := agent(t, "--version"); v.code != 0 || !strings.HasPrefix(v.stdout, "tender-agent ") {
		t.Errorf("--version: %s", v)
	}
}

// A typo gets a suggestion and exit 1, for commands and subcommands.
func TestCLI_TypoSuggests(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"pss"}, "\tps"},
		{[]string{"imagse"}, "\timages"},
		{[]string{"app", "rmm", "web"}, "\trm"},
	} {
		r := agent(t, tc.args...)
		if r.code != 1 || !strings.Contains(r.stderr, "unknown command") || !strings.Contains(r.stderr, "Did you mean this?") ||
			!strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: want a suggestion of %q and exit 1, got %s", tc.args, tc.want, r)
		}
	}
	if r := agent(t, "ps", "--al"); r.code != 1 || !strings.Contains(r.stderr, "unknown flag: --al") {
		t.Errorf("ps --al: %s", r)
	}
}

// completion bash|zsh|fish print completion scripts; bash's parses.
func TestCLI_Completion(t *testing.T) {
	bash := agent(t, "completion", "bash")
	if bash.code != 0 || !strings.Contains(bash.stdout, "complete -o default -F __start_tender-agent tender-agent") {
		t.Fatalf("completion bash: %s", bash)
	}
	check := exec.Command("bash", "-n")
	check.Stdin = strings.NewReader(bash.stdout)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("bash -n on the completion script: %v\n%s", err, out)
	}
	for _, sh := range []string{"zsh", "fish"} {
		if r := agent(t, "completion", sh); r.code != 0 || !strings.Contains(r.stdout, "tender-agent") {
			t.Errorf("completion %s: %s", sh, r)
		}
	}
	// What the scripts call: commands and flags complete.
	if out := ok(t, "__complete", "p"); !strings.Contains(out, "ps\t") || !strings.Contains(out, "pull\t") {
		t.Errorf("__complete p:\n%s", out)
	}
	if out := ok(t, "__complete", "run", "--pids"); !strings.Contains(out, "--pids-limit") {
		t.Errorf("__complete run --pids:\n%s", out)
	}
}

// docker's short flags and names work as docker users type them.
func TestCLI_DockerFlags(t *testing.T) {
	id := strings.TrimSpace(ok(t, "run", "-d", "-e", "K=V", "-e", "L=a,b", "-m", "32Mi", "--name", "dockerish", image, "env"))
	t.Cleanup(func() { agent(t, "rm", "-f", "dockerish") })
	if out := ok(t, "logs", "-f", "dockerish"); !strings.Contains(out, "K=V\n") || !strings.Contains(out, "L=a,b\n") {
		t.Errorf("logs -f: -e K=V -e L=a,b not in the environment:\n%s", out)
	}
	var got []struct {
		Spec struct {
			Linux struct {
				Resources struct{ Memory struct{ Limit int64 } }
			}
		}
	}
	if err := json.Unmarshal([]byte(ok(t, "inspect", "dockerish")), &got); err != nil || len(got) != 1 ||
		got[0].Spec.Linux.Resources.Memory.Limit != 32<<20 {
		t.Errorf("-m 32Mi: inspect says %+v (%v)", got, err)
	}
	// ps -aq: the exited container's short ID; the global flag may
	// follow the command.
	if out := ok(t, "ps", "-aq", "--root", root); !strings.Contains(out, id[:12]+"\n") {
		t.Errorf("ps -aq lacks %s:\n%s", id[:12], out)
	}
	if out := ok(t, "logs", "-n", "1", "dockerish"); strings.Count(out, "\n") != 1 {
		t.Errorf("logs -n 1: %q", out)
	}

	// The long names docker has, with -u and -w; what follows the image
	// is the workload's, flags included.
	out := ok(t, "run", "--rm", "--pids-limit", "20", "--cpuset-cpus", "0", "--network", "none", "-u", "app", "-w", "/tmp",
		image, "echo", "--rm", "-d")
	if out != "--rm -d\n" {
		t.Errorf("flags after the image did not reach the workload: %q", out)
	}

	ok(t, "run", "-d", "--name", "dockerstop", image, "sleep", "100")
	t.Cleanup(func() { agent(t, "rm", "-f", "dockerstop") })
	if r := agent(t, "rm", "dockerstop"); r.code != 1 {
		t.Errorf("rm of a running container without -f: want exit 1, got %s", r)
	}
	if out := ok(t, "stop", "-t", "1", "dockerstop"); out != "dockerstop\n" {
		t.Errorf("stop -t 1: %q", out)
	}
	ok(t, "run", "-d", "--name", "dockerrm", image, "sleep", "100")
	if out := ok(t, "rm", "-f", "dockerrm"); out != "dockerrm\n" {
		t.Errorf("rm -f: %q", out)
	}
	if r := agent(t, "inspect", "dockerrm"); r.code != 1 {
		t.Errorf("rm -f left the container: %s", r)
	}
	if out := ok(t, "images", "-q"); len(strings.Fields(out)) < 1 || strings.Contains(out, "REPOSITORY") {
		t.Errorf("images -q: %q", out)
	}
}
