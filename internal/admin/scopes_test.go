package admin_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/admin"
	"github.com/tollgate-dev/tollgate/internal/directory"
)

// adminServer runs the admin listener as internal/app wires it: probes,
// metrics and status, the accounts API, the usage API and the directory
// API (over dir; an empty memory store when nil), over a real loopback
// listener. It returns its base URL.
func adminServer(t *testing.T, tokens *admin.Tokens, lim admin.Limits, dir ...directory.Store) string {
	t.Helper()
	s := admin.New(admin.Options{
		Gatherer: prometheus.NewRegistry(),
		Ready:    func() bool { return true },
		Status:   func() any { return map[string]string{"status": "ok"} },
		Logger:   discard,
		Limits:   lim,
	})
	s.Handle("/v1/", admin.AccountsHandler(memoryEngine(t), tokens, discard, nil))
	s.Handle("/v1/usage", admin.UsageHandler(nil, tokens, discard))
	var store directory.Store = directory.NewMemory(directory.MemoryOptions{})
	if len(dir) > 0 {
		store = dir[0]
	}
	directoryAPI := admin.DirectoryHandler(store, tokens, discard)
	for _, p := range []string{"/v1/consumers", "/v1/consumers/", "/v1/keys/"} {
		s.Handle(p, directoryAPI)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// TestScopeMatrix: every admin API route against a token of each scope
// and the all-scopes admin.token: a token without the route's scope gets
// 403 insufficient_scope, with it the route's own answer; no token or an
// unknown one, 401, as before scopes.
func TestScopeMatrix(t *testing.T) {
	const (
		all     = "all-scopes-token"
		read    = "read-only-token"
		credits = "credits-only-token"
		keys    = "keys-only-token"
	)
	tokens, err := admin.NewTokens(admin.AllScopes(all),
		admin.Token{Secret: read, Scopes: []admin.Scope{admin.ScopeRead}},
		admin.Token{Secret: credits, Scopes: []admin.Scope{admin.ScopeCredits}},
		admin.Token{Secret: keys, Scopes: []admin.Scope{admin.ScopeKeys}})
	if err != nil {
		t.Fatal(err)
	}
	dir := directory.NewMemory(directory.MemoryOptions{})
	ctx := context.Background()
	if _, err := dir.CreateConsumer(ctx, directory.Meta{}, directory.Consumer{ID: "acme", Plan: "pro"}); err != nil {
		t.Fatal(err)
	}
	nk, err := dir.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	key := nk.Key.ID
	base := adminServer(t, tokens, admin.Limits{}, dir)
	// body: the request's body ("{tok}" is the token's name); POSTs,
	// PUTs and PATCHes send an Idempotency-Key. directory: the route
	// answers 2xx to a token allowed.
	routes := []struct {
		method, path string
		scope        admin.Scope
		body         string
		directory    bool
	}{
		{"GET", "/v1/accounts", admin.ScopeRead, "", false},
		{"GET", "/v1/accounts/acme", admin.ScopeRead, "", false},
		{"HEAD", "/v1/accounts/acme", admin.ScopeRead, "", false},
		{"POST", "/v1/accounts/acme/credits", admin.ScopeCredits, `{"amount": 5}`, false},
		{"GET", "/v1/accounts/acme/ledger", admin.ScopeRead, "", false},
		{"GET", "/v1/accounts/acme/ledger/verify", admin.ScopeRead, "", false},
		{"GET", "/v1/usage", admin.ScopeRead, "", false},
		{"POST", "/v1/consumers", admin.ScopeKeys, `{"id": "c-{tok}", "plan": "pro"}`, true},
		{"GET", "/v1/consumers/acme", admin.ScopeRead, "", true},
		{"HEAD", "/v1/consumers/acme", admin.ScopeRead, "", true},
		{"PATCH", "/v1/consumers/acme", admin.ScopeKeys, `{"plan": "{tok}"}`, true},
		{"POST", "/v1/consumers/acme/keys", admin.ScopeKeys, `{"name": "{tok}"}`, true},
		{"GET", "/v1/consumers/acme/keys", admin.ScopeRead, "", true},
		{"POST", "/v1/keys/" + key + "/rotate", admin.ScopeKeys, `{"grace": "1h"}`, true},
		{"PUT", "/v1/keys/" + key + "/expiry", admin.ScopeKeys, `{"expires_at": "2030-01-01T00:00:00Z"}`, true},
		{"POST", "/v1/keys/" + key + "/revoke", admin.ScopeKeys, "", true},
	}
	grants := map[string][]admin.Scope{all: admin.Scopes, read: {admin.ScopeRead}, credits: {admin.ScopeCredits}, keys: {admin.ScopeKeys}}
	topUps := 0
	for _, r := range routes {
		for _, tok := range []string{all, read, credits, keys} {
			allowed := false
			for _, s := range grants[tok] {
				allowed = allowed || s == r.scope
			}
			t.Run(r.method+" "+r.path+" "+tok, func(t *testing.T) {
				c := call{method: r.method, path: r.path, auth: "Bearer " + tok, body: strings.ReplaceAll(r.body, "{tok}", tok)}
				if r.method != "GET" && r.method != "HEAD" {
					c.key = r.method + r.path + tok
				}
				got := do(t, base, c)
				if !allowed {
					if r.method == "HEAD" {
						if got.status != http.StatusForbidden {
							t.Errorf("status %d, want 403", got.status)
						}
						return
					}
					p := wantProblem(t, got, http.StatusForbidden)
					if p.Reason != "insufficient_scope" || !strings.Contains(p.Detail, `scope "`+string(r.scope)+`"`) {
						t.Errorf("problem %+v, want insufficient_scope naming %q", p, r.scope)
					}
					return
				}
				if got.status == http.StatusUnauthorized || got.status == http.StatusForbidden {
					t.Errorf("status %d (%s), want the route's answer", got.status, got.body)
				}
				if r.directory && got.status/100 != 2 {
					t.Errorf("status %d (%s), want 2xx", got.status, got.body)
				}
				if r.scope == admin.ScopeCredits {
					topUps++
				}
			})
		}
	}
	// Only the credits-scoped tokens topped up: 2 × 5.
	got := do(t, base, call{method: "GET", path: "/v1/accounts/acme", auth: "Bearer " + read})
	if topUps != 2 || !strings.Contains(string(got.body), `"balance":10`) {
		t.Errorf("%d top-ups, account %s: want 2 applied, balance 10", topUps, got.body)
	}
	for _, r := range routes {
		for _, auth := range []string{"-", "Bearer nope", "Bearer " + read + "x"} {
			if got := do(t, base, call{method: r.method, path: r.path, auth: auth}); got.status != http.StatusUnauthorized {
				t.Errorf("%s %s with Authorization %q: status %d, want 401", r.method, r.path, auth, got.status)
			}
		}
	}
}

// TestNewTokensErrors: tokens are checked when built; messages never
// quote a token.
func TestNewTokensErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		ts   []admin.Token
		want string
	}{
		{"empty", []admin.Token{{Secret: "", Scopes: admin.Scopes}}, "token 0 is empty"},
		{"no scope", []admin.Token{{Secret: "s3cret"}}, "token 0 grants no scope"},
		{"unknown scope", []admin.Token{{Secret: "s3cret", Scopes: []admin.Scope{"write"}}}, `token 0: "write" is not a scope (allowed: read, credits, keys)`},
		{"twice", []admin.Token{admin.AllScopes("s3cret"), {Secret: "s3cret", Scopes: []admin.Scope{admin.ScopeRead}}}, "token 1 is token 0 again"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := admin.NewTokens(tt.ts...)
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("NewTokens = %v, want an error containing %q and no token", err, tt.want)
			}
		})
	}
	if k, err := admin.NewTokens(); err != nil || k.On() {
		t.Errorf("no tokens: %v, on %v; want no error, off", err, k.On())
	}
	var nilTokens *admin.Tokens
	if nilTokens.On() {
		t.Error("nil Tokens is on")
	}
}
