package app_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tollgate-dev/tollgate/internal/admin"
	"github.com/tollgate-dev/tollgate/internal/app"
	"github.com/tollgate-dev/tollgate/internal/config"
	"github.com/tollgate-dev/tollgate/internal/pg/pgtest"
	"github.com/tollgate-dev/tollgate/internal/reload/reloadtest"
)

// directoryConfig serves testdata/directory.rego (it allows the consumer
// in input.tollgate.consumer) with the key directory on and the admin API
// on with the token s3cret.
func directoryConfig() *config.Config {
	cfg := testConfig()
	cfg.Policy.Paths = []string{"testdata/directory.rego"}
	cfg.Directory.Enabled = true
	cfg.Admin.Token = "s3cret"
	return cfg
}

// keyCheck sends a Check presenting key in x-api-key; it returns the
// consumer and plan headers the answer sets upstream, or the denial's
// status.
func keyCheck(t *testing.T, client authv3.AuthorizationClient, key string) (consumer, plan string, denied int) {
	t.Helper()
	resp, err := client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "api.example.com", Path: "/v1/x", Headers: map[string]string{"x-api-key": key}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if d := resp.GetDeniedResponse(); d != nil {
		return "", "", int(d.GetStatus().GetCode())
	}
	for _, h := range resp.GetOkResponse().GetHeaders() {
		switch h.GetHeader().GetKey() {
		case "x-tollgate-consumer":
			consumer = h.GetHeader().GetValue()
		case "x-tollgate-plan":
			plan = h.GetHeader().GetValue()
		}
	}
	return consumer, plan, 0
}

// waitReady polls /readyz until it answers 200.
func waitReady(t *testing.T, r *running) {
	t.Helper()
	reloadtest.WaitFor(t, "/readyz 200", func() bool {
		code, _ := get(t, "http://"+r.app.AdminAddr()+"/readyz")
		return code == http.StatusOK
	})
}

// within polls cond every 5ms until it holds, failing the test when it
// still does not after limit; it returns how long it took.
func within(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// TestDirectoryPostgres: with PostgreSQL, a consumer and key created
// through the admin API resolve on the next Checks (the policy sees the
// consumer's id and plan in input.tollgate.consumer), and once the key is
// revoked the Checks are refused within a second.
func TestDirectoryPostgres(t *testing.T) {
	db := pgtest.New(t)
	cfg := directoryConfig()
	cfg.Postgres.DSN = db.DSN
	r := start(t, cfg)
	waitReady(t, r)
	base := "http://" + r.app.AdminAddr()
	client := authv3.NewAuthorizationClient(r.conn)

	if code, body := adminCall(t, http.MethodPost, base+"/v1/consumers", "s3cret", "c1", `{"id": "acme", "plan": "pro"}`); code != http.StatusCreated {
		t.Fatalf("create consumer: %d %s", code, body)
	}
	code, body := adminCall(t, http.MethodPost, base+"/v1/consumers/acme/keys", "s3cret", "k1", `{"name": "production"}`)
	if code != http.StatusCreated {
		t.Fatalf("create key: %d %s", code, body)
	}
	var key struct{ ID, Secret string }
	if err := json.Unmarshal([]byte(body), &key); err != nil || key.Secret == "" || !strings.HasPrefix(key.Secret, "tg_") {
		t.Fatalf("create key: %s (%v), want a secret starting tg_", body, err)
	}
	took := within(t, time.Second, "the new key resolves", func() bool {
		consumer, plan, _ := keyCheck(t, client, key.Secret)
		return consumer == "acme" && plan == "pro"
	})
	t.Logf("a key created through the admin API resolved after %s", took)

	if code, body := adminCall(t, http.MethodPost, base+"/v1/keys/"+key.ID+"/revoke", "s3cret", "", ""); code != http.StatusOK {
		t.Fatalf("revoke: %d %s", code, body)
	}
	took = within(t, time.Second, "the revoked key is refused", func() bool {
		_, _, denied := keyCheck(t, client, key.Secret)
		return denied == http.StatusUnauthorized
	})
	t.Logf("the revocation was seen after %s", took)

	var status struct {
		Ready     bool
		Directory struct {
			Store   string
			Durable bool
			Ready   bool
			Seq     int64
		}
	}
	getJSON(t, base+"/status", "", &status)
	if d := status.Directory; !status.Ready || d.Store != "postgres" || !d.Durable || !d.Ready || d.Seq < 3 {
		t.Errorf("/status: %+v, want ready, directory postgres, durable, ready, seq >= 3 (consumer, key, revocation)", status)
	}
	_, metrics := get(t, base+"/metrics")
	if !strings.Contains(metrics, `tollgate_directory_lookups_total{result="hit"}`) {
		t.Errorf("/metrics has no tollgate_directory_lookups_total")
	}
}

// TestDirectoryMemorySeed: without PostgreSQL the directory is in memory,
// seeded from directory.seed_file; its admin API works and says it is not
// durable.
func TestDirectoryMemorySeed(t *testing.T) {
	seed := filepath.Join(t.TempDir(), "consumers.json")
	if err := os.WriteFile(seed, []byte(`{"consumers": [
		{"id": "acme", "plan": "pro", "keys": [{"id": "key_acme", "name": "default", "key": "tg_seed_acme"}]},
		{"id": "globex", "plan": "free", "keys": [{"key": "tg_seed_globex"}]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := directoryConfig()
	cfg.Directory.SeedFile = seed
	r := start(t, cfg)
	waitReady(t, r)
	if !strings.Contains(r.banner, "key directory     in memory (not durable)") {
		t.Errorf("banner:\n%s\nwant the key directory in memory", r.banner)
	}
	client := authv3.NewAuthorizationClient(r.conn)
	for _, c := range []struct{ key, consumer, plan string }{
		{"tg_seed_acme", "acme", "pro"},
		{"tg_seed_globex", "globex", "free"},
	} {
		if consumer, plan, denied := keyCheck(t, client, c.key); consumer != c.consumer || plan != c.plan {
			t.Errorf("Check with %s: consumer %q plan %q (denied %d), want %s %s", c.key, consumer, plan, denied, c.consumer, c.plan)
		}
	}
	if _, _, denied := keyCheck(t, client, "tg_unknown"); denied != http.StatusUnauthorized {
		t.Errorf("unknown key: denied %d, want 401", denied)
	}

	req, _ := http.NewRequest(http.MethodPost, "http://"+r.app.AdminAddr()+"/v1/keys/key_acme/revoke", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Warning") != admin.NotDurableWarning {
		t.Errorf("revoke: %s, Warning %q, want 200 and %q", resp.Status, resp.Header.Get("Warning"), admin.NotDurableWarning)
	}
	within(t, time.Second, "the revoked seed key is refused", func() bool {
		_, _, denied := keyCheck(t, client, "tg_seed_acme")
		return denied == http.StatusUnauthorized
	})
}

// TestDirectoryREADMESeed: the README's seed file example loads, and its
// key resolves.
func TestDirectoryREADMESeed(t *testing.T) {
	doc, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(doc), "<!-- directory-seed -->\n```json\n")
	block, _, ok2 := strings.Cut(after, "```")
	if !ok || !ok2 {
		t.Fatal("README.md has no ```json block after <!-- directory-seed -->")
	}
	seed := filepath.Join(t.TempDir(), "consumers.json")
	if err := os.WriteFile(seed, []byte(block), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := directoryConfig()
	cfg.Directory.SeedFile = seed
	r := start(t, cfg)
	waitReady(t, r)
	if consumer, plan, denied := keyCheck(t, authv3.NewAuthorizationClient(r.conn), "tg_live_3f9a1c0d5e7b4a2c"); consumer != "acme" || plan != "pro" {
		t.Errorf("Check with the README's key: consumer %q plan %q (denied %d), want acme pro", consumer, plan, denied)
	}
}

// TestDirectorySeedFileMissing: a seed file that cannot be read fails
// New, naming the setting.
func TestDirectorySeedFileMissing(t *testing.T) {
	cfg := directoryConfig()
	cfg.Directory.SeedFile = filepath.Join(t.TempDir(), "nope.json")
	_, err := app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test")
	if err == nil || !strings.Contains(err.Error(), "directory.seed_file") {
		t.Fatalf("app.New: %v, want an error naming directory.seed_file", err)
	}
}

// TestDirectoryOff: by default there is no directory: the policy sees no
// input.tollgate (it refuses every key), /status shows none and the
// directory's API is not mounted.
func TestDirectoryOff(t *testing.T) {
	cfg := directoryConfig()
	cfg.Directory.Enabled = false
	r := start(t, cfg)
	client := authv3.NewAuthorizationClient(r.conn)
	if consumer, _, denied := keyCheck(t, client, "tg_seed_acme"); denied != http.StatusUnauthorized {
		t.Errorf("Check: consumer %q denied %d, want 401", consumer, denied)
	}
	base := "http://" + r.app.AdminAddr()
	if _, body := get(t, base+"/status"); strings.Contains(body, `"directory"`) {
		t.Errorf("/status shows a directory: %s", body)
	}
	if code, body := adminCall(t, http.MethodPost, base+"/v1/consumers", "s3cret", "c1", `{"id": "acme", "plan": "pro"}`); code == http.StatusCreated {
		t.Errorf("POST /v1/consumers with the directory off: %d %s, want it refused", code, body)
	}
}

// TestDirectoryGatesReadiness: /readyz answers 503 until the directory has
// loaded every key hash (here: until PostgreSQL answers again), then 200.
func TestDirectoryGatesReadiness(t *testing.T) {
	db := pgtest.New(t)
	proxy := db.Proxy()
	cfg := directoryConfig()
	cfg.Postgres.DSN = proxy.DSN
	a, err := app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test")
	if err != nil {
		t.Fatal(err)
	}
	proxy.Cut() // after the migrations: the directory cannot load
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	base := "http://" + a.AdminAddr()
	for range 5 {
		if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable {
			t.Fatalf("/readyz with the directory not loaded: %d %s, want 503", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var status struct {
		Ready     bool
		Directory *struct {
			Store string
			Ready bool
		}
	}
	getJSON(t, base+"/status", "", &status)
	if status.Ready || status.Directory == nil || status.Directory.Store != "postgres" || status.Directory.Ready {
		t.Errorf("/status: %+v, want not ready, the postgres directory not ready", status)
	}
	proxy.Restore()
	reloadtest.WaitFor(t, "/readyz 200 once PostgreSQL answers", func() bool {
		code, _ := get(t, base+"/readyz")
		return code == http.StatusOK
	})
}
