package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// Scope is what an admin API token may do. Each admin route needs one.
type Scope string

// The scopes of the admin API.
const (
	// ScopeRead: every GET (and HEAD) of the admin API: accounts,
	// balances, ledgers, usage reports, consumers and their keys.
	ScopeRead Scope = "read"
	// ScopeCredits: the POSTs that change balances (top-ups).
	ScopeCredits Scope = "credits"
	// ScopeKeys: the writes of the key directory (consumers and API
	// keys: DirectoryHandler).
	ScopeKeys Scope = "keys"
)

// Scopes lists every scope: what admin.token (the all-scopes token) grants.
var Scopes = []Scope{ScopeRead, ScopeCredits, ScopeKeys}

// ParseScope checks a scope name.
func ParseScope(s string) (Scope, error) {
	for _, sc := range Scopes {
		if string(sc) == s {
			return sc, nil
		}
	}
	return "", fmt.Errorf("%q is not a scope (allowed: read, credits, keys)", s)
}

// Token is one admin API bearer token and the scopes it grants.
type Token struct {
	Secret string
	Scopes []Scope
	// Name, optional, says whose token it is: the key directory records
	// its changes by "admin:<name>" ("admin" without a name).
	Name string
}

// AllScopes is a token granting every scope (admin.token).
func AllScopes(secret string) Token { return Token{Secret: secret, Scopes: Scopes} }

// Tokens authenticates the admin API's bearer tokens. It keeps only their
// SHA-256 hashes; a presented token is compared with every one in
// constant time. The zero value (or nil) has no token: the API is off.
type Tokens struct {
	hashes [][sha256.Size]byte
	scopes [][]Scope
	names  []string
}

// NewTokens checks ts: each token is set, unique, and grants at least one
// known scope. Errors never quote a token.
func NewTokens(ts ...Token) (*Tokens, error) {
	k := &Tokens{}
	var errs []error
	for i, t := range ts {
		if t.Secret == "" {
			errs = append(errs, fmt.Errorf("token %d is empty", i))
			continue
		}
		if len(t.Scopes) == 0 {
			errs = append(errs, fmt.Errorf("token %d grants no scope (allowed: read, credits, keys)", i))
		}
		for _, s := range t.Scopes {
			if _, err := ParseScope(string(s)); err != nil {
				errs = append(errs, fmt.Errorf("token %d: %w", i, err))
			}
		}
		h := sha256.Sum256([]byte(t.Secret))
		if j := slices.Index(k.hashes, h); j >= 0 {
			errs = append(errs, fmt.Errorf("token %d is token %d again (each token must be distinct)", i, j))
		}
		k.hashes = append(k.hashes, h)
		k.scopes = append(k.scopes, slices.Clone(t.Scopes))
		k.names = append(k.names, t.Name)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return k, nil
}

// On reports whether any token is configured (the admin API is served).
func (k *Tokens) On() bool { return k != nil && len(k.hashes) > 0 }

// find returns the scopes and name of the token presented, comparing it
// with every token in constant time (no early return, no length leak:
// hashes).
func (k *Tokens) find(presented string) ([]Scope, string, bool) {
	sum := sha256.Sum256([]byte(presented))
	found := -1
	for i := range k.hashes {
		if subtle.ConstantTimeCompare(sum[:], k.hashes[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return nil, "", false
	}
	return k.scopes[found], k.names[found], true
}

type (
	scopesKey    struct{}
	tokenNameKey struct{}
)

// tokenName is the Name of the token of an authenticated request.
func tokenName(ctx context.Context) string {
	name, _ := ctx.Value(tokenNameKey{}).(string)
	return name
}

// authenticate serves h to the requests that carry "Authorization: Bearer
// <token>" of a known token, with its scopes (see need) and name in the
// context,
// and 401 to the others.
func (k *Tokens) authenticate(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := bearer(r.Header.Get("Authorization"))
		if !ok {
			unauthorized(w, "missing bearer token: send the header \"Authorization: Bearer <token>\" (admin.token or one of admin.tokens)")
			return
		}
		scopes, name, ok := k.find(got)
		if !ok {
			unauthorized(w, "the bearer token is not one of this server's admin tokens (admin.token, admin.tokens)")
			return
		}
		ctx := context.WithValue(r.Context(), scopesKey{}, scopes)
		h.ServeHTTP(w, r.WithContext(context.WithValue(ctx, tokenNameKey{}, name)))
	})
}

// need serves h to requests whose token grants scope, and 403 (problem
// insufficient_scope) to the others. It runs under authenticate.
func need(scope Scope, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		scopes, _ := r.Context().Value(scopesKey{}).([]Scope)
		if !slices.Contains(scopes, scope) {
			names := make([]string, len(scopes))
			for i, s := range scopes {
				names[i] = string(s)
			}
			writeProblem(w, http.StatusForbidden, "insufficient_scope", fmt.Sprintf(
				"%s %s needs a token with scope %q; this token has %s", r.Method, r.URL.EscapedPath(), scope, strings.Join(names, ", ")))
			return
		}
		h(w, r)
	}
}

// disabled answers every request 403: no token is configured.
func disabled() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeProblem(w, http.StatusForbidden, "", "admin API disabled: set admin.token or admin.tokens")
	})
}
