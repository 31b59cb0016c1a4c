package admin_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/admin"
	"github.com/tollgate-dev/tollgate/internal/directory"
	"github.com/tollgate-dev/tollgate/internal/pg/pgtest"
)

// pgDirectory returns a PGStore on a new, migrated database.
func pgDirectory(t testing.TB) *directory.PGStore {
	t.Helper()
	pool := pgtest.New(t).Pool()
	if err := directory.Migrate(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	s, err := directory.NewPG(pool, directory.PGOptions{Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// directories runs f on the directory API over each store.
func directories(t *testing.T, f func(t *testing.T, s directory.Store, base string)) {
	for _, tt := range []struct {
		name string
		new  func(testing.TB) directory.Store
	}{
		{"memory", func(testing.TB) directory.Store { return directory.NewMemory(directory.MemoryOptions{}) }},
		{"postgres", func(t testing.TB) directory.Store { return pgDirectory(t) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.new(t)
			srv := httptest.NewServer(admin.DirectoryHandler(s, allScopes(t, token), discard))
			t.Cleanup(srv.Close)
			f(t, s, srv.URL)
		})
	}
}

// newKeyBody is the body of a created or rotated key.
type newKeyBody struct {
	directory.Key
	Secret   string `json:"secret"`
	Replayed bool   `json:"replayed"`
}

func decodeStrict(t testing.TB, r reply, status int, v any) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	reflect.ValueOf(v).Elem().SetZero() // a field absent from the body is zero
	dec := json.NewDecoder(strings.NewReader(string(r.body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("body: %v\n%s", err, r.body)
	}
}

func wantReason(t testing.TB, r reply, status int, reason, detail string) {
	t.Helper()
	p := wantProblem(t, r, status)
	if p.Reason != reason || !strings.Contains(p.Detail, detail) {
		t.Errorf("problem %+v, want reason %q and a detail containing %q", p, reason, detail)
	}
}

// TestDirectoryAPI walks the API through a consumer's life: each step
// sees the previous ones.
func TestDirectoryAPI(t *testing.T) {
	directories(t, func(t *testing.T, s directory.Store, base string) {
		ctx := context.Background()
		var secrets []string
		// Consumers.
		create := call{method: "POST", path: "/v1/consumers", key: "c1", body: `{"id": "acme", "plan": "pro", "metadata": {"tier": "gold"}}`}
		var c directory.Consumer
		r := do(t, base, create)
		decodeStrict(t, r, http.StatusCreated, &c)
		if c.ID != "acme" || c.Plan != "pro" || c.Status != "active" || c.Metadata["tier"] != "gold" || c.CreatedAt.IsZero() {
			t.Errorf("created %+v", c)
		}
		if loc := r.header.Get("Location"); loc != "/v1/consumers/acme" {
			t.Errorf("Location %q", loc)
		}
		var again directory.Consumer
		decodeStrict(t, do(t, base, create), http.StatusCreated, &again)
		if !again.CreatedAt.Equal(c.CreatedAt) {
			t.Errorf("replay created %+v, want %+v", again, c)
		}
		wantReason(t, do(t, base, call{method: "POST", path: "/v1/consumers", key: "c1", body: `{"id": "acme", "plan": "free"}`}),
			http.StatusConflict, "idempotency_conflict", `"c1"`)
		wantReason(t, do(t, base, call{method: "POST", path: "/v1/consumers", key: "c2", body: `{"id": "acme", "plan": "pro"}`}),
			http.StatusConflict, "exists", `"acme"`)
		wantReason(t, do(t, base, call{method: "POST", path: "/v1/consumers", body: `{"id": "globex", "plan": "pro"}`}),
			http.StatusBadRequest, "invalid_request", "Idempotency-Key header is required")
		for _, tt := range []struct{ body, detail string }{
			{`{"id": "globex", "plan": "pro", "tier": 1}`, `unknown field "tier" in request body (the fields are "id", "plan", "status", "metadata")`},
			{`{"ID": "globex", "plan": "pro"}`, `unknown field "ID"`},
			{`{"id": "globex", "plan": "pro", "plan": "free"}`, `field "plan" appears more than once`},
			{`{"id": 5, "plan": "pro"}`, `field "id" must be a JSON string, not number`},
			{`{"id": "globex"}`, `"plan" is required`},
			{`{"id": "globex", "plan": "pro", "status": "gone"}`, `status "gone"`},
			{`{"id": "glo bex", "plan": "pro"}`, `character ' '`},
			{`{"id": "globex", "plan": "pro", "metadata": []}`, `"metadata" must be a JSON object`},
			{`{"id": "globex", "plan": "pro"} {}`, "data after the JSON object"},
			{`[1]`, "not a JSON object"},
			{`null`, "not a JSON object"},
			{``, "request body is empty"},
			{`{"id": `, "not valid JSON"},
		} {
			wantReason(t, do(t, base, call{method: "POST", path: "/v1/consumers", key: "bad-" + tt.body, body: tt.body}),
				http.StatusBadRequest, "invalid_request", tt.detail)
		}
		wantProblem(t, do(t, base, call{method: "POST", path: "/v1/consumers", key: "big",
			body: `{"id": "globex", "plan": "` + strings.Repeat("p", admin.MaxDirectoryBodyLen) + `"}`}), http.StatusRequestEntityTooLarge)
		wantReason(t, do(t, base, call{method: "POST", path: "/v1/consumers", key: strings.Repeat("k", admin.MaxDirectoryIdempotencyKeyLen+1), body: `{"id": "globex", "plan": "pro"}`}),
			http.StatusBadRequest, "invalid_request", "the maximum is 128")

		decodeStrict(t, do(t, base, call{method: "GET", path: "/v1/consumers/acme"}), http.StatusOK, &c)
		wantReason(t, do(t, base, call{method: "GET", path: "/v1/consumers/nobody"}), http.StatusNotFound, "not_found", `"nobody"`)

		decodeStrict(t, do(t, base, call{method: "PATCH", path: "/v1/consumers/acme", body: `{"plan": "enterprise", "status": "suspended"}`}), http.StatusOK, &c)
		if c.Plan != "enterprise" || c.Status != "suspended" || c.Metadata["tier"] != "gold" {
			t.Errorf("updated %+v", c)
		}
		decodeStrict(t, do(t, base, call{method: "PATCH", path: "/v1/consumers/acme", key: "u1", body: `{"status": "active", "metadata": {}}`}), http.StatusOK, &c)
		if c.Status != "active" || len(c.Metadata) != 0 {
			t.Errorf("updated %+v", c)
		}
		wantReason(t, do(t, base, call{method: "PATCH", path: "/v1/consumers/acme", key: "u1", body: `{"status": "suspended"}`}),
			http.StatusConflict, "idempotency_conflict", `"u1"`)
		wantReason(t, do(t, base, call{method: "PATCH", path: "/v1/consumers/acme", body: `{}`}), http.StatusBadRequest, "invalid_request", "nothing to change")
		wantReason(t, do(t, base, call{method: "PATCH", path: "/v1/consumers/acme", body: `{"plan": ""}`}), http.StatusBadRequest, "invalid_request", `"plan" is empty`)
		wantReason(t, do(t, base, call{method: "PATCH", path: "/v1/consumers/nobody", body: `{"plan": "pro"}`}), http.StatusNotFound, "not_found", `"nobody"`)

		// Keys.
		var k1 newKeyBody
		decodeStrict(t, do(t, base, call{method: "POST", path: "/v1/consumers/acme/keys", key: "k1", body: `{"name": "production"}`}), http.StatusCreated, &k1)
		if !strings.HasPrefix(k1.Secret, "tg_") || !strings.HasPrefix(k1.Secret, k1.Prefix) || k1.Replayed || k1.Consumer != "acme" || k1.Name != "production" {
			t.Errorf("created key %+v", k1)
		}
		secrets = append(secrets, k1.Secret)
		if _, got, err := s.LookupHash(ctx, directory.Hash(k1.Secret)); err != nil || got.ID != k1.ID {
			t.Errorf("LookupHash(the secret) = %+v, %v; want key %s", got, err, k1.ID)
		}
		var replay newKeyBody
		decodeStrict(t, do(t, base, call{method: "POST", path: "/v1/consumers/acme/keys", key: "k1", body: `{"name": "production"}`}), http.StatusOK, &replay)
		if replay.ID != k1.ID || replay.Secret != "" || !replay.Replayed {
			t.Errorf("replayed key %+v, want %s without its secret", replay, k1.ID)
		}
		wantReason(t, do(t, base, call{method: "POST", path: "/v1/consumers/acme/keys", key: "k1", body: `{"name": "staging"}`}),
			http.StatusConflict, "idempotency_conflict", `"k1"`)
		wantReason(t, do(t, base, call{method: "POST", path: "/v1/consumers/acme/keys", body: `{}`}),
			http.StatusBadRequest, "invalid_request", "Idempotency-Key header is required")
		wantReason(t, do(t, base, call{method: "POST", path: "/v1/consumers/nobody/keys", key: "k2"}), http.StatusNotFound, "not_found", `"nobody"`)
		wantReason(t, do(t, base, call{method: "POST", path: "/v1/consumers/acme/keys", key: "k3", body: `{"expires_at": "tomorrow"}`}),
			http.StatusBadRequest, "invalid_request", "not valid JSON")
		var k2 newKeyBody // no body: no name, no expiry
		decodeStrict(t, do(t, base, call{method: "POST", path: "/v1/consumers/acme/keys", key: "k4"}), http.StatusCreated, &k2)
		secrets = append(secrets, k2.Secret)
		var k3 newKeyBody
		decodeStrict(t, do(t, base, call{method: "POST", path: "/v1/consumers/acme/keys", key: "k5", body: `{"expires_at": "2030-01-02T03:04:05Z"}`}), http.StatusCreated, &k3)
		if k3.ExpiresAt == nil || !k3.ExpiresAt.Equal(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)) {
			t.Errorf("key expires %v, want 2030-01-02T03:04:05Z", k3.ExpiresAt)
		}
		secrets = append(secrets, k3.Secret)

		// Rotation.
		wantReason(t, do(t, base, call{method: "POST", path: "/v1/keys/" + k1.ID + "/rotate", key: "r1", body: `{}`}),
			http.StatusBadRequest, "invalid_request", `"grace" is required`)
		wantReason(t, do(t, base, call{method: "POST", path: "/v1/keys/" + k1.ID + "/rotate", key: "r1", body: `{"grace": "-1h"}`}),
			http.StatusBadRequest, "invalid_request", `grace "-1h"`)
		wantReason(t, do(t, base, call{method: "POST", path: "/v1/keys/" + k1.ID + "/rotate", body: `{"grace": "1h"}`}),
			http.StatusBadRequest, "invalid_request", "Idempotency-Key header is required")
		wantReason(t, do(t, base, call{method: "POST", path: "/v1/keys/key_nope/rotate", key: "r0", body: `{"grace": "1h"}`}),
			http.StatusNotFound, "not_found", `"key_nope"`)
		before := time.Now()
		var rot newKeyBody
		decodeStrict(t, do(t, base, call{method: "POST", path: "/v1/keys/" + k1.ID + "/rotate", key: "r1", body: `{"grace": "1h"}`}), http.StatusCreated, &rot)
		if rot.ID == k1.ID || rot.RotatedFrom != k1.ID || rot.Name != "production" || rot.Secret == "" || rot.Secret == k1.Secret {
			t.Errorf("rotated %+v", rot)
		}
		secrets = append(secrets, rot.Secret)
		var rotAgain newKeyBody
		decodeStrict(t, do(t, base, call{method: "POST", path: "/v1/keys/" + k1.ID + "/rotate", key: "r1", body: `{"grace": "1h"}`}), http.StatusOK, &rotAgain)
		if rotAgain.ID != rot.ID || rotAgain.Secret != "" || !rotAgain.Replayed {
			t.Errorf("replayed rotation %+v, want %s without its secret", rotAgain, rot.ID)
		}
		wantReason(t, do(t, base, call{method: "POST", path: "/v1/keys/" + k1.ID + "/rotate", key: "r1", body: `{"grace": "2h"}`}),
			http.StatusConflict, "idempotency_conflict", `"r1"`)

		// The listing: one key per creation (replays made none), no
		// secret, no hash.
		var list struct {
			Consumer string          `json:"consumer"`
			Keys     []directory.Key `json:"keys"`
		}
		r = do(t, base, call{method: "GET", path: "/v1/consumers/acme/keys"})
		decodeStrict(t, r, http.StatusOK, &list)
		if list.Consumer != "acme" || len(list.Keys) != 4 {
			t.Fatalf("listed %s, want acme's 4 keys", r.body)
		}
		old := list.Keys[0]
		if old.ID != k1.ID || old.ExpiresAt == nil || old.ExpiresAt.Before(before.Add(time.Hour-time.Minute)) || old.ExpiresAt.After(time.Now().Add(time.Hour)) {
			t.Errorf("rotated key %+v, want it expiring in an hour", old)
		}
		for _, sec := range secrets {
			h := directory.Hash(sec)
			if strings.Contains(string(r.body), sec) || strings.Contains(string(r.body), hex.EncodeToString(h[:])) {
				t.Errorf("the listing shows a secret or its hash: %s", r.body)
			}
		}
		var empty struct {
			Consumer string          `json:"consumer"`
			Keys     []directory.Key `json:"keys"`
		}
		decodeStrict(t, do(t, base, call{method: "POST", path: "/v1/consumers", key: "c3", body: `{"id": "globex", "plan": "free"}`}), http.StatusCreated, &c)
		r = do(t, base, call{method: "GET", path: "/v1/consumers/globex/keys"})
		decodeStrict(t, r, http.StatusOK, &empty)
		if empty.Keys == nil || len(empty.Keys) != 0 {
			t.Errorf("listed %s, want an empty array", r.body)
		}
		wantReason(t, do(t, base, call{method: "GET", path: "/v1/consumers/nobody/keys"}), http.StatusNotFound, "not_found", `"nobody"`)

		// Expiry.
		var k directory.Key
		decodeStrict(t, do(t, base, call{method: "PUT", path: "/v1/keys/" + k2.ID + "/expiry", body: `{"expires_at": "2031-05-06T07:08:09+02:00"}`}), http.StatusOK, &k)
		if k.ExpiresAt == nil || !k.ExpiresAt.Equal(time.Date(2031, 5, 6, 5, 8, 9, 0, time.UTC)) {
			t.Errorf("expiry set to %v", k.ExpiresAt)
		}
		decodeStrict(t, do(t, base, call{method: "PUT", path: "/v1/keys/" + k3.ID + "/expiry", key: "e1", body: `{"expires_at": null}`}), http.StatusOK, &k)
		if k.ExpiresAt != nil {
			t.Errorf("expiry %v, want none", k.ExpiresAt)
		}
		wantReason(t, do(t, base, call{method: "PUT", path: "/v1/keys/" + k3.ID + "/expiry", body: `{}`}), http.StatusBadRequest, "invalid_request", `"expires_at" is required`)
		wantReason(t, do(t, base, call{method: "PUT", path: "/v1/keys/" + k3.ID + "/expiry", body: `{"expires_at": 5}`}), http.StatusBadRequest, "invalid_request", "expires_at 5 is not an RFC 3339 time")
		wantReason(t, do(t, base, call{method: "PUT", path: "/v1/keys/key_nope/expiry", body: `{"expires_at": null}`}), http.StatusNotFound, "not_found", `"key_nope"`)

		// Revocation.
		decodeStrict(t, do(t, base, call{method: "POST", path: "/v1/keys/" + rot.ID + "/revoke"}), http.StatusOK, &k)
		if k.RevokedAt == nil || k.ID != rot.ID {
			t.Errorf("revoked %+v", k)
		}
		revokedAt := *k.RevokedAt
		decodeStrict(t, do(t, base, call{method: "POST", path: "/v1/keys/" + rot.ID + "/revoke", body: `{}`}), http.StatusOK, &k)
		if k.RevokedAt == nil || !k.RevokedAt.Equal(revokedAt) {
			t.Errorf("revoked again %+v, want revoked at %v still", k, revokedAt)
		}
		wantReason(t, do(t, base, call{method: "POST", path: "/v1/keys/" + rot.ID + "/revoke", body: `{"now": true}`}), http.StatusBadRequest, "invalid_request", `unknown field "now"`)
		wantReason(t, do(t, base, call{method: "POST", path: "/v1/keys/key_nope/revoke"}), http.StatusNotFound, "not_found", `"key_nope"`)
		wantReason(t, do(t, base, call{method: "POST", path: "/v1/keys/" + rot.ID + "/rotate", key: "r2", body: `{"grace": "0s"}`}),
			http.StatusConflict, "key_inactive", "revoked")
		if _, got, err := s.LookupHash(ctx, directory.Hash(rot.Secret)); err != nil || got.Active(time.Now()) {
			t.Errorf("the revoked key: %+v, %v; want it inactive", got, err)
		}

		// Every change is in the change log, by the admin API.
		changes, err := s.ChangesSince(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(changes) == 0 {
			t.Fatal("no change logged")
		}
		for _, ch := range changes {
			if ch.Actor != admin.DirectoryActor {
				t.Errorf("change %d (%s) by %q, want %q", ch.Seq, ch.Op, ch.Actor, admin.DirectoryActor)
			}
		}

		// The rest of the paths and methods.
		for _, tt := range []struct {
			method, path string
			status       int
			allow        string
		}{
			{"GET", "/v1/consumers", http.StatusMethodNotAllowed, "POST"},
			{"DELETE", "/v1/consumers/acme", http.StatusMethodNotAllowed, "GET, HEAD, PATCH"},
			{"PUT", "/v1/consumers/acme/keys", http.StatusMethodNotAllowed, "GET, HEAD, POST"},
			{"GET", "/v1/keys/" + k1.ID + "/rotate", http.StatusMethodNotAllowed, "POST"},
			{"GET", "/v1/keys/" + k1.ID + "/revoke", http.StatusMethodNotAllowed, "POST"},
			{"POST", "/v1/keys/" + k1.ID + "/expiry", http.StatusMethodNotAllowed, "PUT"},
			{"GET", "/v1/keys/" + k1.ID, http.StatusNotFound, ""},
			{"GET", "/v1/consumers/acme/keys/x", http.StatusNotFound, ""},
		} {
			r := do(t, base, call{method: tt.method, path: tt.path})
			wantProblem(t, r, tt.status)
			if got := r.header.Get("Allow"); got != tt.allow {
				t.Errorf("%s %s: Allow %q, want %q", tt.method, tt.path, got, tt.allow)
			}
		}
		wantReason(t, do(t, base, call{method: "POST", path: "/v1/keys/" + strings.Repeat("k", 129) + "/revoke"}), http.StatusBadRequest, "invalid_request", "the maximum is 128")
	})
}

// TestDirectoryNotDurable: a store in memory marks every write response
// (errors too) with a Warning; a durable one, none; reads never.
func TestDirectoryNotDurable(t *testing.T) {
	directories(t, func(t *testing.T, s directory.Store, base string) {
		want := ""
		if !s.Durable() {
			want = admin.NotDurableWarning
		}
		for _, c := range []call{
			{method: "POST", path: "/v1/consumers", key: "c1", body: `{"id": "acme", "plan": "pro"}`},
			{method: "POST", path: "/v1/consumers", key: "c2", body: `{"id": "acme", "plan": "pro"}`}, // 409
			{method: "PATCH", path: "/v1/consumers/acme", body: `{"plan": "free"}`},
			{method: "POST", path: "/v1/consumers/acme/keys", key: "k1"},
			{method: "POST", path: "/v1/keys/key_nope/revoke"}, // 404
		} {
			r := do(t, base, c)
			if got := r.header.Get("Warning"); got != want {
				t.Errorf("%s %s (%d): Warning %q, want %q", c.method, c.path, r.status, got, want)
			}
		}
		for _, path := range []string{"/v1/consumers/acme", "/v1/consumers/acme/keys"} {
			if r := do(t, base, call{method: "GET", path: path}); r.status != http.StatusOK || r.header.Get("Warning") != "" {
				t.Errorf("GET %s: %d, Warning %q; want 200 and none", path, r.status, r.header.Get("Warning"))
			}
		}
	})
}

// TestDirectoryConcurrentRetries: retries of one creation racing each
// other make one key.
func TestDirectoryConcurrentRetries(t *testing.T) {
	directories(t, func(t *testing.T, s directory.Store, base string) {
		do(t, base, call{method: "POST", path: "/v1/consumers", key: "c1", body: `{"id": "acme", "plan": "pro"}`})
		const n = 8
		type result struct {
			r   reply
			err error
		}
		results := make(chan result, n)
		for range n {
			go func() {
				r, err := send(base, call{method: "POST", path: "/v1/consumers/acme/keys", auth: "", key: "same", body: `{"name": "ci"}`})
				results <- result{r, err}
			}()
		}
		created := 0
		for range n {
			res := <-results
			if res.err != nil {
				t.Fatal(res.err)
			}
			switch res.r.status {
			case http.StatusCreated:
				created++
			case http.StatusOK:
			default:
				t.Errorf("status %d: %s", res.r.status, res.r.body)
			}
		}
		keys, err := s.ListKeys(context.Background(), "acme")
		if err != nil {
			t.Fatal(err)
		}
		if created != 1 || len(keys) != 1 {
			t.Errorf("%d created answers, %d keys; want 1 and 1", created, len(keys))
		}
	})
}

// TestDirectoryDisabled: no tokens, no API.
func TestDirectoryDisabled(t *testing.T) {
	srv := httptest.NewServer(admin.DirectoryHandler(directory.NewMemory(directory.MemoryOptions{}), nil, discard))
	defer srv.Close()
	wantProblem(t, do(t, srv.URL, call{method: "POST", path: "/v1/consumers", key: "c1", body: `{"id": "acme", "plan": "pro"}`}), http.StatusForbidden)
}

// TestDirectoryUnavailable: with PostgreSQL out of reach the API answers
// 503, saying to retry with the same Idempotency-Key; the retry, once the
// database is back, makes the change once.
func TestDirectoryUnavailable(t *testing.T) {
	db := pgtest.New(t)
	if err := directory.Migrate(context.Background(), db.Pool()); err != nil {
		t.Fatal(err)
	}
	proxy := db.Proxy()
	s, err := directory.NewPG(proxy.Pool(), directory.PGOptions{Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(admin.DirectoryHandler(s, allScopes(t, token), discard))
	defer srv.Close()
	base := srv.URL
	do(t, base, call{method: "POST", path: "/v1/consumers", key: "c1", body: `{"id": "acme", "plan": "pro"}`})

	proxy.Cut()
	create := call{method: "POST", path: "/v1/consumers/acme/keys", key: "k1", body: `{"name": "ci"}`}
	p := wantProblem(t, do(t, base, create), http.StatusServiceUnavailable)
	if !strings.Contains(p.Detail, "retry later with the same Idempotency-Key") {
		t.Errorf("write: %+v", p)
	}
	p = wantProblem(t, do(t, base, call{method: "GET", path: "/v1/consumers/acme"}), http.StatusServiceUnavailable)
	if p.Detail != "the key directory is unavailable; retry later" {
		t.Errorf("read: %+v", p)
	}

	proxy.Restore()
	var k newKeyBody
	decodeStrict(t, do(t, base, create), http.StatusCreated, &k)
	decodeStrict(t, do(t, base, create), http.StatusOK, &k)
	if keys, err := s.ListKeys(context.Background(), "acme"); err != nil || len(keys) != 1 {
		t.Errorf("keys %+v, %v; want one", keys, err)
	}
}

// TestDirectoryActor: a change is recorded by the token's name; the same
// Idempotency-Key sent with another token is a conflict, not a replay.
func TestDirectoryActor(t *testing.T) {
	s := directory.NewMemory(directory.MemoryOptions{})
	tokens, err := admin.NewTokens(admin.AllScopes(token),
		admin.Token{Secret: "billing-token", Scopes: []admin.Scope{admin.ScopeKeys}, Name: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(admin.DirectoryHandler(s, tokens, discard))
	defer srv.Close()
	create := call{method: "POST", path: "/v1/consumers", auth: "Bearer billing-token", key: "c1", body: `{"id": "acme", "plan": "pro"}`}
	var c directory.Consumer
	decodeStrict(t, do(t, srv.URL, create), http.StatusCreated, &c)
	create.auth = ""
	wantReason(t, do(t, srv.URL, create), http.StatusConflict, "idempotency_conflict", `"c1"`)
	decodeStrict(t, do(t, srv.URL, call{method: "PATCH", path: "/v1/consumers/acme", body: `{"plan": "free"}`}), http.StatusOK, &c)
	changes, err := s.ChangesSince(context.Background(), 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ch := range changes {
		got = append(got, ch.Op+" by "+ch.Actor)
	}
	if want := []string{"create by admin:billing", "update by admin"}; !reflect.DeepEqual(got, want) {
		t.Errorf("changes %q, want %q", got, want)
	}
}
