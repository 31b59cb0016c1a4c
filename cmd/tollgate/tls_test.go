package main

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/admin"
	"github.com/tollgate-dev/tollgate/internal/tlsconfig/tlstest"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

// TestCreditsOverMutualTLS: the admin commands reach an admin listener
// that serves HTTPS with a private CA and asks for a client certificate,
// through --ca-file, --cert-file and --key-file (or their variables).
func TestCreditsOverMutualTLS(t *testing.T) {
	serverCA, clientCA := tlstest.NewCA(t, "server CA"), tlstest.NewCA(t, "client CA")
	e, err := ratelimit.NewEngine(ratelimit.NewMemoryStore(ratelimit.MemoryOptions{}), ratelimit.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(admin.AccountsHandler(e, adminTokens(t), slog.New(slog.DiscardHandler), nil))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCA.Server(t).TLS},
		ClientCAs: clientCA.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	tlstest.WriteFile(t, caFile, serverCA.PEM)
	certFile, keyFile := clientCA.Issue(t, tlstest.Leaf{URIs: []string{"spiffe://cluster.local/ns/ops/sa/billing"}}).Write(t, dir, "client")
	t.Setenv("TOLLGATE_ADMIN_TOKEN", testAdminToken)

	if _, _, err := credits("add", "acme", "100", "--idempotency-key", "k1", "--admin", srv.URL); err == nil {
		t.Error("without --ca-file the private CA was trusted")
	}
	if _, _, err := credits("show", "acme", "--admin", srv.URL, "--ca-file", caFile); err == nil {
		t.Error("without a client certificate the call went through")
	}
	out, _, err := credits("add", "acme", "100", "--idempotency-key", "k1", "--admin", srv.URL,
		"--ca-file", caFile, "--cert-file", certFile, "--key-file", keyFile)
	if err != nil || !strings.Contains(out, "100") {
		t.Fatalf("add over mutual TLS: %v %q", err, out)
	}
	t.Setenv("TOLLGATE_ADMIN_CA_FILE", caFile)
	t.Setenv("TOLLGATE_ADMIN_CERT_FILE", certFile)
	t.Setenv("TOLLGATE_ADMIN_KEY_FILE", keyFile)
	if out, _, err := credits("show", "acme", "--admin", srv.URL); err != nil || !strings.Contains(out, "100") {
		t.Errorf("show with the variables: %v %q", err, out)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--cert-file", certFile, "--key-file", ""}, "--cert-file and --key-file go together"},
		{[]string{"--ca-file", certFile + ".missing"}, "client.crt.missing"},
		{[]string{"--ca-file", keyFile}, "no PEM certificate"},
	} {
		_, errOut, err := credits(append([]string{"show", "acme", "--admin", srv.URL}, tt.args...)...)
		if !errors.Is(err, errUsage) || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: %v %q, want a usage error containing %q", tt.args, err, errOut, tt.want)
		}
	}
}
