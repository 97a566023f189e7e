package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/api/apitest"
)

// tender api-token: a token made is printed once with how to use it and
// works with its role at once; ls draws the table (and json, yaml); rm
// (and its alias revoke) revokes, refuses the last admin token, says when
// the token revoked is the command's own; names complete.
func TestCLI_APITokens(t *testing.T) {
	c := startController(t)
	out, errOut, code := tender(t, c.env(), "api-token", "create", "ci", "--read-only")
	ci := apitest.FakeTokenValue("ci", 1)
	if code != 0 || !strings.HasPrefix(out, ci+"\n") || !strings.Contains(out, "export TENDER_TOKEN="+ci+"\n") ||
		!strings.Contains(out, "ci (read-only)") || !strings.Contains(out, "not shown again") {
		t.Fatalf("api-token create: %d\n%s%s", code, out, errOut)
	}
	asCI := c.env("TENDER_TOKEN", ci)
	if _, errOut, code := tender(t, asCI, "devices"); code != 0 {
		t.Errorf("the new read-only token cannot read: %d %s", code, errOut)
	}
	for _, args := range [][]string{{"api-token", "create", "x"}, {"api-token", "rm", "admin"}} {
		if _, errOut, code := tender(t, asCI, args...); code != 4 || !strings.Contains(errOut, "admin token is needed") {
			t.Errorf("tender %s as read-only: %d %q, want 4", strings.Join(args, " "), code, errOut)
		}
	}
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"api-token", "create", "ci"}, "exists"},
		{[]string{"api-token", "create", "Bad_Name"}, "api token name"},
		{[]string{"api-token", "create"}, "usage"},
		{[]string{"api-token", "rm", "nope"}, "no api token nope"},
		{[]string{"api-token", "revoke", "admin"}, "would leave no admin token"},
	} {
		if _, errOut, code := tender(t, c.env(), tc.args...); code != 1 || !strings.Contains(errOut, tc.msg) {
			t.Errorf("tender %s: %d %q, want 1 and %q", strings.Join(tc.args, " "), code, errOut, tc.msg)
		}
	}

	out, _, code = tender(t, asCI, "api-token", "ls")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[0], "NAME ") || !strings.HasPrefix(lines[2], "ci ") {
		t.Fatalf("api-token ls: %d\n%s", code, out)
	}
	col := strings.Index(lines[0], "REVOKED")
	for _, l := range lines[1:] {
		if len(l) <= col || l[col:] != "-" {
			t.Errorf("row without its REVOKED under the header at %d: %q", col, l)
		}
	}
	out, _, code = tender(t, c.env(), "api-token", "ls", "-o", "json")
	var ts []api.APITokenView
	if err := json.Unmarshal([]byte(out), &ts); code != 0 || err != nil || len(ts) != 3 || ts[1].Name != "ci" || strings.Contains(out, "hash") {
		t.Errorf("api-token ls -o json: %d %v\n%s", code, err, out)
	}
	if out, _, code := tender(t, c.env(), "api-token", "ls", "-o", "yaml"); code != 0 || !strings.Contains(out, "name: ci\n") {
		t.Errorf("api-token ls -o yaml: %d\n%s", code, out)
	}

	if out, errOut, code := tender(t, c.env(), "api-token", "rm", "ci"); code != 0 || out != "api token ci (read-only) revoked\n" {
		t.Errorf("api-token rm ci: %d %q %q", code, out, errOut)
	}
	if _, errOut, code := tender(t, asCI, "devices"); code != 4 || !strings.Contains(errOut, "bearer token") {
		t.Errorf("revoked token: %d %q, want 4", code, errOut)
	}
	if out, _, _ := tender(t, c.env(), "api-token", "ls"); !strings.Contains(out, "2026-11-30T12:00:00Z   2026-11-30T12:00:00Z") {
		t.Errorf("ls does not show ci revoked:\n%s", out)
	}
	if _, _, code := tender(t, c.env(), "api-token", "create", "ops"); code != 0 {
		t.Fatal("create ops")
	}
	// Names of the tokens not revoked complete.
	if out, _, _ := tender(t, c.env(), "__complete", "api-token", "rm", ""); !strings.HasPrefix(out, "admin\nops\nviewer\n:") {
		t.Errorf("api-token rm completion:\n%s", out)
	}
	out, _, code = tender(t, c.env(), "api-token", "rm", "admin")
	if code != 0 || !strings.Contains(out, "It was the token this command ran with") {
		t.Errorf("rm of one's own token: %d\n%s", code, out)
	}
	if _, _, code := tender(t, c.env(), "devices"); code != 4 {
		t.Errorf("self-revoked token: %d, want 4", code)
	}
}
