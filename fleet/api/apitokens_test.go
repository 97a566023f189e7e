package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/store"
)

func client(t *testing.T, f *fixture, token string) *api.Client {
	t.Helper()
	c, err := api.NewClient(api.ClientConfig{Server: f.url, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The API token routes through the typed client: a read-only token made
// over the API reads and is refused every change, the token routes
// included; a revoked one is refused at once; the last admin token stays;
// revoking one's own token is said in the answer; the list never carries
// values nor hashes.
func TestAPITokens_Routes(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	admin := client(t, f, adminToken)
	ci, err := admin.CreateAPIToken(ctx, api.APITokenRequest{Name: "ci", Role: store.RoleReadOnly})
	if err != nil || ci.Name != "ci" || ci.Role != store.RoleReadOnly || ci.Token == "" {
		t.Fatalf("create ci: %+v %v", ci, err)
	}
	ro := client(t, f, ci.Token)
	if _, err := ro.Devices(ctx, nil); err != nil {
		t.Fatalf("read-only token made over the API cannot read: %v", err)
	}
	if _, err := ro.CreateAPIToken(ctx, api.APITokenRequest{Name: "mine", Role: store.RoleAdmin}); !errdefs.IsPermissionDenied(err) {
		t.Errorf("read-only token made a token: %v", err)
	}
	if _, err := ro.RevokeAPIToken(ctx, "admin"); !errdefs.IsPermissionDenied(err) {
		t.Errorf("read-only token revoked a token: %v", err)
	}
	if _, err := admin.CreateAPIToken(ctx, api.APITokenRequest{Name: "ci", Role: store.RoleAdmin}); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second token named ci: %v, want 409", err)
	}
	for _, bad := range []string{"CI", "-ci", "c_i", strings.Repeat("a", 64), ""} {
		if _, err := admin.CreateAPIToken(ctx, api.APITokenRequest{Name: bad, Role: store.RoleAdmin}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("name %q: %v, want 400", bad, err)
		}
	}
	if code, body := f.call(t, "POST", "/v1/api-tokens", adminToken, []byte(`{"name":"x","role":"admin","hash":"00"}`)); code != http.StatusBadRequest {
		t.Errorf("unknown field hash: %d %s", code, body)
	}

	// The list: by a read-only token, without secrets.
	code, body := f.call(t, "GET", "/v1/api-tokens", ci.Token, nil)
	if code != 200 || !strings.Contains(body, `"name": "ci"`) || !strings.Contains(body, `"name": "grafana"`) {
		t.Fatalf("list: %d %s", code, body)
	}
	for _, secret := range []string{ci.Token, hash(ci.Token), hash(adminToken), `"hash"`} {
		if strings.Contains(body, secret) {
			t.Errorf("list shows %q:\n%s", secret, body)
		}
	}

	r, err := admin.RevokeAPIToken(ctx, "ci")
	if err != nil || !r.Revoked || r.Self {
		t.Fatalf("revoke ci: %+v %v", r, err)
	}
	if _, err := ro.Devices(ctx, nil); !errdefs.IsUnauthorized(err) {
		t.Errorf("revoked token still reads: %v", err)
	}
	if _, err := admin.RevokeAPIToken(ctx, "admin"); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "would leave no admin token") {
		t.Errorf("revoke the last admin token: %v", err)
	}
	if _, err := admin.CreateAPIToken(ctx, api.APITokenRequest{Name: "ops", Role: store.RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	if r, err := admin.RevokeAPIToken(ctx, "admin"); err != nil || !r.Self {
		t.Errorf("revoke one's own token: %+v %v, want self", r, err)
	}
	if _, err := admin.Devices(ctx, nil); !errdefs.IsUnauthorized(err) {
		t.Errorf("self-revoked token still reads: %v", err)
	}
}
