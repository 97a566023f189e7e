package controller

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/containerd/errdefs"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/store"
)

// apiTokensMu makes the checks of CreateAPIToken and RevokeAPIToken (a
// name unique among the unrevoked tokens, an admin token left) and their
// writes one step. The store has no transaction across tokens, so two
// controllers on one etcd could still race: a duplicate name, or the last
// two admin tokens revoked at once by two requests.
var apiTokensMu sync.Mutex

func apiTokenView(t store.APIToken) api.APITokenView {
	return api.APITokenView{Name: t.Name, Role: t.Role, Created: t.Created, Revoked: t.Revoked, RevokedAt: t.RevokedAt}
}

// CreateAPIToken implements api.Controller. The value is drawn as the
// admin token's at first start (NewAPIToken), stored only as its hash and
// returned once; neither goes to the log nor to the audit.
func (c *Controller) CreateAPIToken(ctx context.Context, who api.Caller, req api.APITokenRequest) (api.APITokenCreated, error) {
	if err := api.ValidAPITokenName(req.Name); err != nil {
		return api.APITokenCreated{}, err
	}
	if req.Role != store.RoleAdmin && req.Role != store.RoleReadOnly {
		return api.APITokenCreated{}, fmt.Errorf("api token %s: role %q: want %s or %s: %w",
			req.Name, req.Role, store.RoleAdmin, store.RoleReadOnly, errdefs.ErrInvalidArgument)
	}
	apiTokensMu.Lock()
	defer apiTokensMu.Unlock()
	all, err := c.st.APITokens.List(ctx)
	if err != nil {
		return api.APITokenCreated{}, fmt.Errorf("list api tokens: %w", err)
	}
	for _, t := range all {
		if t.Name == req.Name && !t.Revoked {
			return api.APITokenCreated{}, fmt.Errorf("api token %s exists (role %s); revoke it first or pick another name: %w",
				req.Name, t.Role, errdefs.ErrAlreadyExists)
		}
	}
	value, err := NewAPIToken()
	if err != nil {
		return api.APITokenCreated{}, err
	}
	t, err := c.st.APITokens.Create(ctx, store.APIToken{Hash: HashAPIToken(value), Name: req.Name, Role: req.Role, Created: c.cfg.Now().UTC()})
	if err != nil {
		return api.APITokenCreated{}, fmt.Errorf("store api token %s: %w", req.Name, err)
	}
	c.audit(ctx, who.Name, "api-token create", "api-token "+req.Name, who.From, "role "+string(req.Role))
	return api.APITokenCreated{Token: value, APITokenView: apiTokenView(t)}, nil
}

// APITokens implements api.Controller: by name, then oldest first.
func (c *Controller) APITokens(ctx context.Context) ([]api.APITokenView, error) {
	all, err := c.st.APITokens.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list api tokens: %w", err)
	}
	slices.SortFunc(all, func(a, b store.APIToken) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), a.Created.Compare(b.Created), cmp.Compare(a.Rev, b.Rev))
	})
	out := make([]api.APITokenView, len(all))
	for i, t := range all {
		out[i] = apiTokenView(t)
	}
	return out, nil
}

// RevokeAPIToken implements api.Controller. The API and the console look
// the token up at every request (api.LookupToken), so it is refused from
// the next one on.
func (c *Controller) RevokeAPIToken(ctx context.Context, who api.Caller, name string) (api.APITokenRevoked, error) {
	if err := api.ValidAPITokenName(name); err != nil {
		return api.APITokenRevoked{}, err
	}
	apiTokensMu.Lock()
	defer apiTokensMu.Unlock()
	all, err := c.st.APITokens.List(ctx)
	if err != nil {
		return api.APITokenRevoked{}, fmt.Errorf("list api tokens: %w", err)
	}
	var target *store.APIToken
	admins, revoked := 0, 0
	for i, t := range all {
		switch {
		case t.Revoked && t.Name == name:
			revoked++
		case t.Revoked:
		case t.Role == store.RoleAdmin:
			admins++
		}
		if !t.Revoked && t.Name == name {
			target = &all[i]
		}
	}
	switch {
	case target == nil && revoked > 0:
		return api.APITokenRevoked{}, fmt.Errorf("api token %s is revoked already: %w", name, errdefs.ErrNotFound)
	case target == nil:
		return api.APITokenRevoked{}, fmt.Errorf("no api token %s: %w", name, errdefs.ErrNotFound)
	case target.Role == store.RoleAdmin && admins <= 1:
		return api.APITokenRevoked{}, fmt.Errorf("api token %s is the last admin token: revoking it would leave no admin token; create another admin token first: %w",
			name, errdefs.ErrFailedPrecondition)
	}
	t, err := c.st.APITokens.Revoke(ctx, target.Hash, c.cfg.Now().UTC())
	if err != nil {
		return api.APITokenRevoked{}, fmt.Errorf("revoke api token %s: %w", name, err)
	}
	out := api.APITokenRevoked{APITokenView: apiTokenView(t), Self: who.Name == name}
	detail := "role " + string(t.Role)
	if out.Self {
		out.Note = "this was the token of this request: it is refused from the next request on"
		detail += ", the caller's own token"
	}
	c.audit(ctx, who.Name, "api-token rm", "api-token "+name, who.From, detail)
	return out, nil
}
