package app_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/app"
	"github.com/tollgate-dev/tollgate/internal/config"
)

// TestAdminScopedTokens: admin.tokens (one from a token_file) are served
// next to the all-scopes admin.token: a read token reads but cannot top
// up (403), a credits token tops up, admin.token does both.
func TestAdminScopedTokens(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "billing")
	if err := os.WriteFile(file, []byte("billing-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Admin.Token = "s3cret"
	cfg.Admin.Tokens = []config.AdminToken{
		{Token: "dashboard-token", Scopes: []string{"read"}},
		{TokenFile: file, Scopes: []string{"credits"}},
	}
	r := start(t, cfg)
	base := "http://" + r.app.AdminAddr()
	topUp := func(token, key string) (int, string) {
		return adminCall(t, http.MethodPost, base+"/v1/accounts/acme/credits", token, key, `{"amount": 5}`)
	}
	show := func(token string) (int, string) {
		return adminCall(t, http.MethodGet, base+"/v1/accounts/acme", token, "", "")
	}
	if code, body := topUp("dashboard-token", "k1"); code != 403 || !strings.Contains(body, "insufficient_scope") {
		t.Errorf("read token tops up: %d %s, want 403 insufficient_scope", code, body)
	}
	if code, body := topUp("billing-token", "k2"); code != 200 || !strings.Contains(body, `"balance":5`) {
		t.Errorf("credits token (from its file) tops up: %d %s, want 200, balance 5", code, body)
	}
	if code, body := topUp("s3cret", "k3"); code != 200 || !strings.Contains(body, `"balance":10`) {
		t.Errorf("admin.token tops up: %d %s, want 200, balance 10", code, body)
	}
	if code, body := show("dashboard-token"); code != 200 || !strings.Contains(body, `"balance":10`) {
		t.Errorf("read token reads: %d %s, want 200, balance 10", code, body)
	}
	if code, body := show("billing-token"); code != 403 || !strings.Contains(body, `scope \"read\"`) {
		t.Errorf("credits token reads: %d %s, want 403 naming scope read", code, body)
	}
	if code, body := show("nope"); code != 401 {
		t.Errorf("unknown token: %d %s, want 401", code, body)
	}
}

// TestAdminTokenFileSameToken: a token_file holding a token already
// configured is refused at startup, without quoting it.
func TestAdminTokenFileSameToken(t *testing.T) {
	file := filepath.Join(t.TempDir(), "dup")
	if err := os.WriteFile(file, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Admin.Token = "s3cret"
	cfg.Admin.Tokens = []config.AdminToken{{TokenFile: file, Scopes: []string{"read"}}}
	_, err := app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test")
	if err == nil {
		t.Fatal("app.New accepted the same token twice")
	}
	if !strings.Contains(err.Error(), "token 1 is token 0 again") || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("app.New: %v, want the duplicate named without the token", err)
	}
}
