package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/admin"
	"github.com/tollgate-dev/tollgate/internal/directory"
	"github.com/tollgate-dev/tollgate/internal/pg/pgtest"
)

// directoryServer runs the directory API over store, with the
// all-scopes token testAdminToken and a read-only token "read-token".
func directoryServer(t *testing.T, store directory.Store) string {
	t.Helper()
	tokens, err := admin.NewTokens(admin.AllScopes(testAdminToken), admin.Token{Secret: "read-token", Scopes: []admin.Scope{admin.ScopeRead}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(admin.DirectoryHandler(store, tokens, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	return srv.URL
}

func pgDirectory(t *testing.T) directory.Store {
	t.Helper()
	pool := pgtest.New(t).Pool()
	if err := directory.Migrate(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	s, err := directory.NewPG(pool, directory.PGOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var secretLine = regexp.MustCompile(`^tg_[a-z2-7]{32}\n$`)

// TestKeysAndConsumersCmd: the keys and consumers commands against the
// directory API, over a memory store and a PostgreSQL one; each step sees
// the previous ones.
func TestKeysAndConsumersCmd(t *testing.T) {
	for _, tt := range []struct {
		name  string
		store func(t *testing.T) directory.Store
	}{
		{"memory", func(*testing.T) directory.Store { return directory.NewMemory(directory.MemoryOptions{}) }},
		{"postgres", pgDirectory},
	} {
		t.Run(tt.name, func(t *testing.T) {
			store := tt.store(t)
			base := directoryServer(t, store)
			t.Setenv("TOLLGATE_ADMIN_TOKEN", testAdminToken)
			ok := func(args ...string) (string, string) {
				t.Helper()
				out, errOut, err := runCmd(t, append(args, "--admin", base)...)
				if err != nil {
					t.Fatalf("%v: %v; stderr %q", args, err, errOut)
				}
				if warned := strings.Contains(errOut, "warning from the server: 299 - \"the key directory is in memory"); warned == store.Durable() && args[1] != "show" && args[1] != "list" {
					t.Errorf("%v: stderr %q; want the not-durable warning exactly when the store is in memory", args, errOut)
				}
				return out, errOut
			}
			fails := func(want string, args ...string) {
				t.Helper()
				out, errOut, err := runCmd(t, append(args, "--admin", base)...)
				if err == nil || !strings.Contains(err.Error()+errOut, want) {
					t.Errorf("%v: err %v, stderr %q; want it to contain %q", args, err, errOut, want)
				}
				if out != "" {
					t.Errorf("%v: stdout %q, want nothing", args, out)
				}
			}
			decode := func(out string, v any) {
				t.Helper()
				if err := json.Unmarshal([]byte(out), v); err != nil {
					t.Fatalf("stdout %q: %v", out, err)
				}
			}

			// Consumers.
			var c directory.Consumer
			out, _ := ok("consumers", "create", "acme", "--plan", "pro", "--metadata", `{"team": "search"}`, "--idempotency-key", "c1")
			decode(out, &c)
			if c.ID != "acme" || c.Plan != "pro" || c.Status != "active" || c.Metadata["team"] != "search" {
				t.Errorf("created %+v", c)
			}
			out, _ = ok("consumers", "create", "acme", "--plan", "pro", "--metadata", `{"team": "search"}`, "--idempotency-key", "c1")
			decode(out, &c) // a retry answers the same consumer
			fails(`409 Conflict: Idempotency-Key "c1" was already used`, "consumers", "create", "acme", "--plan", "free", "--idempotency-key", "c1")
			_, errOut, _ := runCmd(t, "consumers", "create", "globex", "--plan", "free", "--admin", base)
			if !regexp.MustCompile(`^idempotency key: [0-9a-f]{32} \(to retry this creation safely`).MatchString(errOut) {
				t.Errorf("create without a key: stderr %q, want the generated key first", errOut)
			}
			fails("--plan is required", "consumers", "create", "initech")
			fails("is not a JSON object", "consumers", "create", "initech", "--plan", "pro", "--metadata", "[1]")
			fails("consumer \"acme\": already exists", "consumers", "create", "acme", "--plan", "pro", "--idempotency-key", "c2")
			out, _ = ok("consumers", "show", "acme")
			decode(out, &c)
			if c.Plan != "pro" {
				t.Errorf("shown %+v", c)
			}
			c = directory.Consumer{}
			out, _ = ok("consumers", "update", "acme", "--status", "suspended", "--plan", "enterprise")
			decode(out, &c)
			if c.Status != "suspended" || c.Plan != "enterprise" || c.Metadata["team"] != "search" {
				t.Errorf("updated %+v", c)
			}
			c = directory.Consumer{}
			out, _ = ok("consumers", "update", "acme", "--status", "active", "--metadata", "{}")
			decode(out, &c)
			if c.Status != "active" || len(c.Metadata) != 0 {
				t.Errorf("updated %+v", c)
			}
			fails("nothing to change", "consumers", "update", "acme")
			fails(`400 Bad Request: invalid: status "gone"`, "consumers", "update", "acme", "--status", "gone")
			fails("404 Not Found: consumer \"nobody\": not found", "consumers", "show", "nobody")

			// Keys: the key alone on stdout, once.
			out, errOut = ok("keys", "create", "acme", "--name", "production", "--idempotency-key", "k1")
			if !secretLine.MatchString(out) || !strings.Contains(errOut, "The key is shown this once") || !strings.Contains(errOut, `name "production"`) {
				t.Fatalf("keys create: stdout %q, stderr %q", out, errOut)
			}
			secret := strings.TrimSpace(out)
			_, k1, err := store.LookupHash(context.Background(), directory.Hash(secret))
			if err != nil || k1.Consumer != "acme" {
				t.Fatalf("the printed key resolves to %+v, %v; want a key of acme", k1, err)
			}
			_, _, err = runCmd(t, "keys", "create", "acme", "--name", "production", "--idempotency-key", "k1", "--admin", base)
			if !errors.Is(err, errReplayed) || !strings.Contains(err.Error(), k1.ID) {
				t.Errorf("retried create: %v, want errReplayed naming %s", err, k1.ID)
			}
			fails(`Idempotency-Key "k1" was already used`, "keys", "create", "acme", "--name", "staging", "--idempotency-key", "k1")
			out, errOut = ok("keys", "create", "acme", "--expires", "720h")
			if !secretLine.MatchString(out) || !strings.HasPrefix(errOut, "idempotency key: ") || !strings.Contains(errOut, "; it expires 20") {
				t.Errorf("keys create --expires: stdout %q, stderr %q", out, errOut)
			}
			secret2 := strings.TrimSpace(out)
			fails("--expires \"soon\" is neither an RFC 3339 time", "keys", "create", "acme", "--expires", "soon")
			fails("404 Not Found", "keys", "create", "nobody", "--idempotency-key", "k9")
			fails("403 Forbidden", "keys", "create", "acme", "--token", "read-token", "--idempotency-key", "k8")

			// Rotation.
			out, errOut = ok("keys", "rotate", k1.ID, "--grace", "1h", "--idempotency-key", "r1")
			if !secretLine.MatchString(out) || out == secret+"\n" || !strings.Contains(errOut, "rotated "+k1.ID) {
				t.Errorf("keys rotate: stdout %q, stderr %q", out, errOut)
			}
			secret3 := strings.TrimSpace(out)
			var rotated newKey
			out, _ = ok("keys", "rotate", k1.ID, "--grace", "0s", "--json", "--idempotency-key", "r2")
			decode(out, &rotated)
			if rotated.Secret == "" || rotated.Consumer != "acme" || rotated.Name != "production" {
				t.Errorf("keys rotate --json: %s", out)
			}
			fails("409 Conflict", "keys", "rotate", k1.ID, "--idempotency-key", "r3") // expired at once by r2
			fails("--grace -1s: want 0s or more", "keys", "rotate", rotated.ID, "--grace", "-1s")

			// The listing shows no key.
			var list struct {
				Keys []directory.Key `json:"keys"`
			}
			out, _ = ok("keys", "list", "acme")
			decode(out, &list)
			if len(list.Keys) != 4 {
				t.Errorf("listed %d keys, want 4: %s", len(list.Keys), out)
			}
			for _, s := range []string{secret, secret2, secret3, rotated.Secret} {
				if strings.Contains(out, s) {
					t.Errorf("keys list shows a key: %s", out)
				}
			}
			if _, _, err := runCmd(t, "keys", "list", "acme", "--admin", base, "--token", "read-token"); err != nil {
				t.Errorf("keys list with a read token: %v", err)
			}

			// Expiry and revocation.
			var k directory.Key
			out, _ = ok("keys", "expire", rotated.ID, "--at", "2030-01-02T03:04:05Z")
			decode(out, &k)
			if k.ExpiresAt == nil || !k.ExpiresAt.Equal(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)) {
				t.Errorf("expire --at: %s", out)
			}
			k = directory.Key{}
			out, _ = ok("keys", "expire", rotated.ID, "--never")
			decode(out, &k)
			if k.ID != rotated.ID || k.ExpiresAt != nil {
				t.Errorf("expire --never: %s", out)
			}
			fails("give one of --at T and --never", "keys", "expire", rotated.ID)
			fails("give one of --at T and --never", "keys", "expire", rotated.ID, "--never", "--at", "1h")
			out, _ = ok("keys", "revoke", rotated.ID)
			decode(out, &k)
			if k.RevokedAt == nil {
				t.Errorf("revoke: %s", out)
			}
			fails(`key "key_nope": not found`, "keys", "revoke", "key_nope")
			fails("want KEY_ID, got 0 argument(s)", "keys", "revoke")
			fails("want CONSUMER, got 2 argument(s)", "keys", "list", "acme", "globex")
		})
	}
}

func TestKeysCmdUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"keys"}, "tollgate keys create CONSUMER"},
		{[]string{"keys", "delete"}, `unknown command "delete"`},
		{[]string{"consumers"}, "tollgate consumers create ID --plan P"},
		{[]string{"consumers", "delete"}, `unknown command "delete"`},
	} {
		_, errOut, err := runCmd(t, tt.args...)
		if !errors.Is(err, errUsage) || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: %v, stderr %q; want a usage error containing %q", tt.args, err, errOut, tt.want)
		}
	}
	for _, args := range [][]string{{"keys", "help"}, {"consumers", "--help"}} {
		if out, _, err := runCmd(t, args...); err != nil || !strings.Contains(out, "Usage:") {
			t.Errorf("%v: %v, stdout %q", args, err, out)
		}
	}
	if out, _, _ := runCmd(t, "help"); !strings.Contains(out, "tollgate keys create") || !strings.Contains(out, "tollgate consumers create") {
		t.Errorf("tollgate help does not list keys and consumers: %s", out)
	}
}

func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		in   string
		want time.Time
		err  bool
	}{
		{"2027-01-01T00:00:00Z", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), false},
		{"2027-01-01T02:00:00+02:00", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), false},
		{"720h", now.Add(720 * time.Hour), false},
		{"90m", now.Add(90 * time.Minute), false},
		{"0s", time.Time{}, true},
		{"-1h", time.Time{}, true},
		{"+1h", now.Add(time.Hour), false},
		{"2027-01-01", time.Time{}, true},
		{"tomorrow", time.Time{}, true},
		{"", time.Time{}, true},
	} {
		got, err := parseWhen(tt.in, now)
		if (err != nil) != tt.err || !got.Equal(tt.want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v (error %v)", tt.in, got, err, tt.want, tt.err)
		}
	}
}

// FuzzParseWhen: a time flag either parses to an RFC 3339 time or a time
// after now, or is refused with a message quoting it; it never panics.
func FuzzParseWhen(f *testing.F) {
	for _, s := range []string{"2027-01-01T00:00:00Z", "720h", "1h30m", "-1h", "0", "9999999999h", "2027-13-01T00:00:00Z", ""} {
		f.Add(s)
	}
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseWhen(s, now)
		if err != nil {
			if !strings.Contains(err.Error(), "neither an RFC 3339 time") {
				t.Errorf("parseWhen(%q): %v", s, err)
			}
			return
		}
		if _, perr := time.Parse(time.RFC3339, s); perr != nil && !got.After(now.Add(-time.Second)) {
			t.Errorf("parseWhen(%q) = %v, not after %v", s, got, now)
		}
	})
}
