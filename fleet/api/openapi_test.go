package api

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// The OpenAPI document describes exactly the routes the mux serves (with
// the optional enroll route mounted), each write route says it needs an
// admin token, and every $ref resolves.
func TestOpenAPI_MatchesRoutes(t *testing.T) {
	s, err := NewServer(Config{Controller: nopController{}, Tokens: noTokens{}, Log: zerolog.Nop(),
		Enroll: http.NotFoundHandler()})
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi version %q", doc.OpenAPI)
	}
	var served, documented []string
	writes := map[string]bool{}
	for _, rt := range s.routes {
		k := rt.method + " " + rt.path
		served = append(served, k)
		writes[k] = rt.access == write
	}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			k := strings.ToUpper(method) + " " + path
			documented = append(documented, k)
			if says := strings.Contains(string(op), "Needs an admin token"); writes[k] != says {
				t.Errorf("%s: write route %v, but the document says admin-only %v", k, writes[k], says)
			}
		}
	}
	slices.Sort(served)
	slices.Sort(documented)
	for _, k := range served {
		if !slices.Contains(documented, k) {
			t.Errorf("served but not documented: %s", k)
		}
	}
	for _, k := range documented {
		if !slices.Contains(served, k) {
			t.Errorf("documented but not served: %s", k)
		}
	}

	var all any
	json.Unmarshal(openAPI, &all)
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				if !resolves(all, ref) {
					t.Errorf("$ref %s does not resolve", ref)
				}
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(all)
}

func resolves(doc any, ref string) bool {
	cur := doc
	for _, p := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[p]; !ok {
			return false
		}
	}
	return true
}
