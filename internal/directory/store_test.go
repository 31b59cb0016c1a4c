package directory_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tollgate-dev/tollgate/internal/directory"
	"github.com/tollgate-dev/tollgate/internal/pg/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// pgStore returns a PGStore on a new, migrated database.
func pgStore(t testing.TB) *directory.PGStore {
	t.Helper()
	pool := pgtest.New(t).Pool()
	if err := directory.Migrate(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	s, err := directory.NewPG(pool, directory.PGOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// stores runs f on each Store implementation.
func stores(t *testing.T, f func(t *testing.T, s directory.Store)) {
	t.Run("memory", func(t *testing.T) { f(t, directory.NewMemory(directory.MemoryOptions{})) })
	t.Run("postgres", func(t *testing.T) { f(t, pgStore(t)) })
}

func TestStoreCRUD(t *testing.T) {
	stores(t, func(t *testing.T, s directory.Store) {
		ctx := context.Background()
		c, err := s.CreateConsumer(ctx, directory.Meta{}, directory.Consumer{ID: "acme", Plan: "pro", Metadata: map[string]any{"tier": "gold", "seats": 3.0}})
		if err != nil {
			t.Fatal(err)
		}
		if c.Status != directory.StatusActive || c.Plan != "pro" || c.Metadata["tier"] != "gold" || c.CreatedAt.IsZero() {
			t.Errorf("created %+v", c)
		}
		if _, err := s.CreateConsumer(ctx, directory.Meta{}, directory.Consumer{ID: "acme"}); !errors.Is(err, directory.ErrExists) {
			t.Errorf("second create: %v, want ErrExists", err)
		}
		for _, bad := range []directory.Consumer{{ID: ""}, {ID: "a b"}, {ID: "x", Status: "gone"}} {
			if _, err := s.CreateConsumer(ctx, directory.Meta{}, bad); !errors.Is(err, directory.ErrInvalid) {
				t.Errorf("create %+v: %v, want ErrInvalid", bad, err)
			}
		}
		plan, status := "enterprise", directory.StatusSuspended
		c, err = s.UpdateConsumer(ctx, directory.Meta{}, "acme", directory.ConsumerUpdate{Plan: &plan, Status: &status})
		if err != nil {
			t.Fatal(err)
		}
		if c.Plan != plan || c.Status != status || c.Metadata["tier"] != "gold" {
			t.Errorf("updated %+v: want plan %s, status %s, metadata kept", c, plan, status)
		}
		if _, err := s.UpdateConsumer(ctx, directory.Meta{}, "nobody", directory.ConsumerUpdate{Plan: &plan}); !errors.Is(err, directory.ErrNotFound) {
			t.Errorf("update of nobody: %v, want ErrNotFound", err)
		}
		if _, err := s.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "nobody"}); !errors.Is(err, directory.ErrNotFound) {
			t.Errorf("key for nobody: %v, want ErrNotFound", err)
		}

		nk, err := s.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme", Name: "ci"})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(nk.Plaintext, "tg_") || len(nk.Plaintext) != 3+32 || nk.Replayed {
			t.Errorf("plaintext %q: want tg_ and 32 characters", nk.Plaintext)
		}
		if nk.Key.Hash != directory.Hash(nk.Plaintext) || nk.Key.Prefix != nk.Plaintext[:11] || nk.Key.Name != "ci" || nk.Key.Consumer != "acme" {
			t.Errorf("key %+v does not match its plaintext %q", nk.Key, nk.Plaintext)
		}
		gc, gk, err := s.LookupHash(ctx, directory.Hash(nk.Plaintext))
		if err != nil || gk.ID != nk.Key.ID || gc.ID != "acme" || gc.Plan != plan {
			t.Errorf("LookupHash = %+v, %+v, %v", gc, gk, err)
		}
		if _, _, err := s.LookupHash(ctx, directory.Hash("tg_unknown")); !errors.Is(err, directory.ErrNotFound) {
			t.Errorf("LookupHash(unknown): %v, want ErrNotFound", err)
		}
		at := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
		k, err := s.SetExpiry(ctx, directory.Meta{}, nk.Key.ID, &at)
		if err != nil || k.ExpiresAt == nil || !k.ExpiresAt.Equal(at) {
			t.Errorf("SetExpiry = %+v, %v; want expires_at %s", k, err, at)
		}
		k, err = s.RevokeKey(ctx, directory.Meta{Actor: "ops-token"}, nk.Key.ID)
		if err != nil || k.RevokedAt == nil || k.Active(time.Now()) {
			t.Errorf("RevokeKey = %+v, %v", k, err)
		}
		if _, err := s.RotateKey(ctx, directory.Meta{}, nk.Key.ID, time.Minute); !errors.Is(err, directory.ErrKeyInactive) {
			t.Errorf("rotating a revoked key: %v, want ErrKeyInactive", err)
		}
		if _, err := s.RevokeKey(ctx, directory.Meta{}, "key_nope"); !errors.Is(err, directory.ErrNotFound) {
			t.Errorf("revoke of an unknown key: %v, want ErrNotFound", err)
		}
		keys, err := s.ListKeys(ctx, "acme")
		if err != nil || len(keys) != 1 || keys[0].ID != nk.Key.ID {
			t.Errorf("ListKeys = %+v, %v", keys, err)
		}
		changes, err := s.ChangesSince(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		// create consumer, update, create key, expiry, revoke
		if len(changes) != 5 || changes[4].Key == nil || changes[4].Key.RevokedAt == nil || changes[1].Key != nil || changes[1].Consumer.Plan != plan {
			t.Errorf("ChangesSince(0) = %d changes: %+v", len(changes), changes)
		}
		var ops []string
		for _, ch := range changes {
			ops = append(ops, ch.Op)
		}
		if got, want := strings.Join(ops, ","), "create,update,create,expiry,revoke"; got != want {
			t.Errorf("ops %s, want %s", got, want)
		}
		if last := changes[len(changes)-1]; last.Actor != "ops-token" || time.Since(last.At) > time.Minute || changes[0].Actor != "" {
			t.Errorf("last change by %q at %s, first by %q; want ops-token, now, nobody", last.Actor, last.At, changes[0].Actor)
		}
		for i := 1; i < len(changes); i++ {
			if changes[i].Seq <= changes[i-1].Seq {
				t.Errorf("changes out of order: %d after %d", changes[i].Seq, changes[i-1].Seq)
			}
		}
		if rest, err := s.ChangesSince(ctx, changes[2].Seq, 100); err != nil || len(rest) != 2 {
			t.Errorf("ChangesSince(%d) = %d changes, %v; want 2", changes[2].Seq, len(rest), err)
		}
	})
}

func TestStoreIdempotency(t *testing.T) {
	stores(t, func(t *testing.T, s directory.Store) {
		ctx := context.Background()
		c1, err := s.CreateConsumer(ctx, directory.Meta{IdempotencyKey: "idem-c"}, directory.Consumer{ID: "acme", Plan: "pro"})
		if err != nil {
			t.Fatal(err)
		}
		c2, err := s.CreateConsumer(ctx, directory.Meta{IdempotencyKey: "idem-c"}, directory.Consumer{ID: "acme", Plan: "pro"})
		if err != nil || c2.ID != c1.ID {
			t.Errorf("retried create consumer = %+v, %v; want the first result", c2, err)
		}
		if _, err := s.CreateConsumer(ctx, directory.Meta{IdempotencyKey: "idem-c"}, directory.Consumer{ID: "acme", Plan: "free"}); !errors.Is(err, directory.ErrIdempotencyConflict) {
			t.Errorf("same idempotency key, other plan: %v, want ErrIdempotencyConflict", err)
		}
		if _, err := s.CreateConsumer(ctx, directory.Meta{IdempotencyKey: "idem-c", Actor: "someone-else"}, directory.Consumer{ID: "acme", Plan: "pro"}); !errors.Is(err, directory.ErrIdempotencyConflict) {
			t.Errorf("same idempotency key, another actor: %v, want ErrIdempotencyConflict", err)
		}
		nk1, err := s.CreateKey(ctx, directory.Meta{IdempotencyKey: "idem-k"}, directory.KeyRequest{Consumer: "acme", Name: "web"})
		if err != nil {
			t.Fatal(err)
		}
		nk2, err := s.CreateKey(ctx, directory.Meta{IdempotencyKey: "idem-k"}, directory.KeyRequest{Consumer: "acme", Name: "web"})
		if err != nil || nk2.Key.ID != nk1.Key.ID || !nk2.Replayed || nk2.Plaintext != "" {
			t.Errorf("retried create key = %+v, %v; want key %s replayed without its plaintext", nk2, err, nk1.Key.ID)
		}
		if _, err := s.RevokeKey(ctx, directory.Meta{IdempotencyKey: "idem-k"}, nk1.Key.ID); !errors.Is(err, directory.ErrIdempotencyConflict) {
			t.Errorf("idempotency key of a create reused for a revoke: %v, want ErrIdempotencyConflict", err)
		}
		r1, err := s.RotateKey(ctx, directory.Meta{IdempotencyKey: "idem-r"}, nk1.Key.ID, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := s.RotateKey(ctx, directory.Meta{IdempotencyKey: "idem-r"}, nk1.Key.ID, time.Hour)
		if err != nil || r2.Key.ID != r1.Key.ID || !r2.Replayed {
			t.Errorf("retried rotate = %+v, %v; want %s replayed", r2, err, r1.Key.ID)
		}
		keys, err := s.ListKeys(ctx, "acme")
		if err != nil || len(keys) != 2 {
			t.Errorf("ListKeys = %d keys, %v; want 2 (one created, one rotated: no duplicates)", len(keys), err)
		}
		changes, _ := s.ChangesSince(ctx, 0, 100)
		if len(changes) != 4 { // consumer, key, rotate (old key, new key)
			t.Errorf("%d changes, want 4", len(changes))
		}
	})
}

func TestStoreRotationGrace(t *testing.T) {
	stores(t, func(t *testing.T, s directory.Store) {
		ctx := context.Background()
		if _, err := s.CreateConsumer(ctx, directory.Meta{}, directory.Consumer{ID: "acme"}); err != nil {
			t.Fatal(err)
		}
		old, err := s.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme", Name: "prod"})
		if err != nil {
			t.Fatal(err)
		}
		before := time.Now()
		nk, err := s.RotateKey(ctx, directory.Meta{}, old.Key.ID, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if nk.Key.Name != "prod" || nk.Key.RotatedFrom != old.Key.ID || nk.Plaintext == "" || nk.Key.ExpiresAt != nil {
			t.Errorf("new key %+v: want name prod, rotated from %s, no expiry", nk.Key, old.Key.ID)
		}
		_, ok, err := s.LookupHash(ctx, old.Key.Hash)
		if err != nil {
			t.Fatal(err)
		}
		if ok.ExpiresAt == nil || ok.ExpiresAt.Before(before.Add(time.Hour-time.Minute)) || ok.ExpiresAt.After(time.Now().Add(time.Hour)) || !ok.Active(time.Now()) {
			t.Errorf("old key after rotation: expires %v; want active for an hour", ok.ExpiresAt)
		}
		if ok.Active(time.Now().Add(time.Hour + time.Second)) {
			t.Error("old key active after its grace period")
		}
		// A grace of 0 ends the new one at once.
		if _, err := s.RotateKey(ctx, directory.Meta{}, nk.Key.ID, 0); err != nil {
			t.Fatal(err)
		}
		if _, k, _ := s.LookupHash(ctx, nk.Key.Hash); k.Active(time.Now()) {
			t.Errorf("key rotated with no grace still active: %+v", k)
		}
	})
}

func TestLoadMemory(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	good := write("good.json", `{"consumers": [
  {"id": "acme", "plan": "pro", "metadata": {"region": "eu"}, "keys": [{"id": "key_acme", "name": "default", "key": "tg_demo_acme_1"}]},
  {"id": "globex", "plan": "free", "status": "suspended", "keys": [{"sha256": "`+directory.HashHex("tg_demo_globex")+`"}]}
]}`)
	s, err := directory.LoadMemory(good, directory.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Durable() {
		t.Error("a memory store says it is durable")
	}
	ctx := context.Background()
	c, k, err := s.LookupHash(ctx, directory.Hash("tg_demo_acme_1"))
	if err != nil || c.Plan != "pro" || c.Metadata["region"] != "eu" || k.ID != "key_acme" || k.Prefix != "tg_" /* a quarter of a short seeded key at most */ {
		t.Errorf("acme's key: %+v, %+v, %v", c, k, err)
	}
	if c, _, err := s.LookupHash(ctx, directory.Hash("tg_demo_globex")); err != nil || c.Status != directory.StatusSuspended {
		t.Errorf("globex's key: %+v, %v", c, err)
	}
	for _, tc := range []struct{ name, data, want string }{
		{"unknown field", `{"consumers": [{"id": "a", "plan_name": "x"}]}`, `unknown field "plan_name"`},
		{"no key", `{"consumers": [{"id": "a", "keys": [{"name": "x"}]}]}`, "consumers[0].keys[0]: set one of key and sha256"},
		{"bad hash", `{"consumers": [{"id": "a", "keys": [{"sha256": "abc"}]}]}`, `sha256 "abc": want 64 hex digits`},
		{"duplicate consumer", `{"consumers": [{"id": "a"}, {"id": "a"}]}`, `consumers[1]: consumer "a": already exists`},
		{"duplicate key", `{"consumers": [{"id": "a", "keys": [{"key": "k"}, {"key": "k"}]}]}`, "consumers[0].keys[1]: the same key as another"},
		{"bad status", `{"consumers": [{"id": "a", "status": "on"}]}`, `status "on" (allowed: active, suspended)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := directory.LoadMemory(write(strings.ReplaceAll(tc.name, " ", "_")+".json", tc.data), directory.MemoryOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestGenerateKey(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		plain, hash, display := directory.GenerateKey("sk_")
		if len(plain) != 35 || !strings.HasPrefix(plain, "sk_") || strings.Trim(plain[3:], "abcdefghijklmnopqrstuvwxyz234567") != "" {
			t.Fatalf("key %q: want sk_ and 32 lowercase base32 characters", plain)
		}
		if hash != directory.Hash(plain) || display != plain[:11] {
			t.Fatalf("key %q: hash or display prefix %q wrong", plain, display)
		}
		if seen[plain] {
			t.Fatalf("key %q generated twice", plain)
		}
		seen[plain] = true
	}
}

func writeFile(t testing.TB, file, data string) {
	t.Helper()
	if err := os.WriteFile(file, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// FuzzLoadMemory: a seed file never panics the loader; what it accepts
// resolves by store lookup.
func FuzzLoadMemory(f *testing.F) {
	f.Add(`{"consumers": [{"id": "acme", "plan": "pro", "keys": [{"key": "tg_demo"}]}]}`)
	f.Add(`{"consumers": [{"id": "a", "keys": [{"sha256": "` + directory.HashHex("x") + `", "expires_at": "2030-01-01T00:00:00Z"}]}]}`)
	f.Add(`{"consumers": [{"id": "a", "metadata": {"n": [1, {"b": null}]}}]} {}`)
	f.Fuzz(func(t *testing.T, data string) {
		file := filepath.Join(t.TempDir(), "seed.json")
		writeFile(t, file, data)
		s, err := directory.LoadMemory(file, directory.MemoryOptions{})
		if err != nil {
			return
		}
		changes, err := s.ChangesSince(context.Background(), 0, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range changes {
			if ch.Key == nil {
				continue
			}
			if _, k, err := s.LookupHash(context.Background(), ch.Key.Hash); err != nil || k.ID != ch.Key.ID {
				t.Fatalf("key %s: lookup = %s, %v", ch.Key.ID, k.ID, err)
			}
		}
	})
}

func TestPurgeIdempotency(t *testing.T) {
	ctx := context.Background()
	s := pgStore(t)
	if _, err := s.CreateConsumer(ctx, directory.Meta{IdempotencyKey: "once"}, directory.Consumer{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PurgeIdempotency(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Errorf("purge of keys older than an hour = %d, %v; want 0", n, err)
	}
	if n, err := s.PurgeIdempotency(ctx, time.Now().Add(time.Second)); err != nil || n != 1 {
		t.Errorf("purge of keys older than now = %d, %v; want 1", n, err)
	}
	// Forgotten: the retry runs again (and finds the consumer exists).
	if _, err := s.CreateConsumer(ctx, directory.Meta{IdempotencyKey: "once"}, directory.Consumer{ID: "acme"}); !errors.Is(err, directory.ErrExists) {
		t.Errorf("retry after the purge: %v, want ErrExists", err)
	}
}
