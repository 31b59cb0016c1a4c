package tlsconfig_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/tollgate-dev/tollgate/internal/reload/reloadtest"
	"github.com/tollgate-dev/tollgate/internal/tlsconfig"
	"github.com/tollgate-dev/tollgate/internal/tlsconfig/tlstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// chain is the state a handshake leaves after verifying leaf.
func chain(leaf *x509.Certificate) *tls.ConnectionState {
	return &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}
}

// TestIdentitiesFromSANsOnly: URI and DNS SANs are identities; the
// subject's CN never is, even when it spells an allowed identity.
func TestIdentitiesFromSANsOnly(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh")
	allowed := tlsconfig.NewIdentitySet([]string{"spiffe://cluster.local/ns/edge/sa/envoy", "envoy.edge.svc"})
	tests := []struct {
		name string
		leaf tlstest.Leaf
		want bool
	}{
		{"URI SAN", tlstest.Leaf{URIs: []string{"spiffe://cluster.local/ns/edge/sa/envoy"}}, true},
		{"DNS SAN", tlstest.Leaf{DNSNames: []string{"envoy.edge.svc"}}, true},
		{"one of several SANs", tlstest.Leaf{DNSNames: []string{"x.example"}, URIs: []string{"spiffe://a/b", "spiffe://cluster.local/ns/edge/sa/envoy"}}, true},
		{"CN spelling an allowed identity", tlstest.Leaf{CommonName: "spiffe://cluster.local/ns/edge/sa/envoy"}, false},
		{"CN spelling an allowed DNS name", tlstest.Leaf{CommonName: "envoy.edge.svc", DNSNames: []string{"other.svc"}}, false},
		{"prefix of an allowed identity", tlstest.Leaf{URIs: []string{"spiffe://cluster.local/ns/edge/sa/envoy/extra"}}, false},
		{"other namespace", tlstest.Leaf{URIs: []string{"spiffe://cluster.local/ns/dev/sa/envoy"}}, false},
		{"case differs", tlstest.Leaf{DNSNames: []string{"ENVOY.edge.svc"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaf := ca.Issue(t, tt.leaf).Cert
			if got := allowed.Allows(chain(leaf)); got != tt.want {
				t.Errorf("Allowed = %v, want %v (identities %v)", got, tt.want, tlsconfig.Identities(chain(leaf)))
			}
			for _, id := range tlsconfig.Identities(chain(leaf)) {
				if id == tt.leaf.CommonName {
					t.Errorf("the CN %q is among the identities", id)
				}
			}
		})
	}
	if allowed.Allows(&tls.ConnectionState{}) || allowed.Allows(nil) {
		t.Error("a connection without a verified certificate is allowed")
	}
}

type server struct {
	srv   *tlsconfig.Server
	addr  string
	dir   string
	files tlsconfig.Files
}

// serve starts a TLS echo server on loopback from files in dir, watching
// them.
func serve(t *testing.T, files tlsconfig.Files) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := tlsconfig.New(ctx, tlsconfig.Options{
		Component: "test_tls", Files: files, ClientAuth: tls.RequireAndVerifyClientCert,
		Watch: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tln := tls.NewListener(ln, srv.Config())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(2)
	go func() { defer wg.Done(); _ = srv.Reloader().Run(ctx) }()
	go func() {
		defer wg.Done()
		for {
			c, err := tln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); _, _ = io.Copy(c, c) }()
		}
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
		_ = srv.Reloader().Close()
	})
	return &server{srv: srv, addr: ln.Addr().String(), files: files}
}

// dial handshakes as a client trusting roots, presenting cert if given,
// and checks the connection echoes.
func dial(addr string, roots *x509.CertPool, cert *tls.Certificate) (*tls.Conn, error) {
	cfg := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	if err := echo(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// echo round-trips a line: with TLS 1.3 a refused client certificate
// shows on the first read, not in the handshake.
func echo(c *tls.Conn) error {
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "ping\n" {
		return errors.New("echo: " + line)
	}
	return nil
}

// TestMutualTLS: without a certificate, or with one another CA signed,
// the client is refused; the client CA's certificate is accepted.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, clients, other := tlstest.NewCA(t, "server CA"), tlstest.NewCA(t, "client CA"), tlstest.NewCA(t, "other CA")
	certFile, keyFile := ca.Server(t).Write(t, dir, "server")
	caFile := filepath.Join(dir, "clients.pem")
	tlstest.WriteFile(t, caFile, clients.PEM)
	s := serve(t, tlsconfig.Files{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile})

	good := clients.Issue(t, tlstest.Leaf{URIs: []string{"spiffe://test/envoy"}}).TLS
	if c, err := dial(s.addr, ca.Pool(), &good); err != nil {
		t.Fatalf("client CA's certificate refused: %v", err)
	} else {
		c.Close()
	}
	if c, err := dial(s.addr, ca.Pool(), nil); err == nil {
		c.Close()
		t.Error("a client without a certificate was accepted")
	}
	wrong := other.Issue(t, tlstest.Leaf{URIs: []string{"spiffe://test/envoy"}}).TLS
	if c, err := dial(s.addr, ca.Pool(), &wrong); err == nil {
		c.Close()
		t.Error("a certificate of another CA was accepted")
	}
	// The server's certificate is verified by clients as usual.
	if c, err := dial(s.addr, other.Pool(), &good); err == nil {
		c.Close()
		t.Error("the client trusted a server its roots did not sign")
	}
}

// TestRotation: new certificate files are used by the next handshake;
// connections made before keep working; a broken file keeps the last
// good certificate; a new client CA refuses the old CA's clients.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	ca, clients := tlstest.NewCA(t, "server CA"), tlstest.NewCA(t, "client CA")
	first := ca.Server(t)
	certFile, keyFile := first.Write(t, dir, "server")
	caFile := filepath.Join(dir, "clients.pem")
	tlstest.WriteFile(t, caFile, clients.PEM)
	s := serve(t, tlsconfig.Files{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile})
	client := clients.Issue(t, tlstest.Leaf{DNSNames: []string{"envoy"}}).TLS

	old, err := dial(s.addr, ca.Pool(), &client)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if got := old.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(first.Cert.SerialNumber) != 0 {
		t.Fatalf("served serial %v, want the first certificate's", got)
	}

	// Rotate the server certificate, as cert-manager renewing a secret does.
	before := s.srv.Reloader().Status()
	second := ca.Server(t)
	tlstest.WriteFile(t, keyFile, second.KeyPEM)
	tlstest.WriteFile(t, certFile, second.CertPEM)
	served := func() *x509.Certificate {
		c, err := dial(s.addr, ca.Pool(), &client)
		if err != nil {
			return nil
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0]
	}
	reloadtest.WaitFor(t, "the renewed certificate to be served", func() bool {
		c := served()
		return c != nil && c.SerialNumber.Cmp(second.Cert.SerialNumber) == 0
	})
	if st := s.srv.Reloader().Status(); st.Reloads <= before.Reloads {
		t.Errorf("reloads %d → %d", before.Reloads, st.Reloads)
	}
	if err := echo(old); err != nil {
		t.Errorf("the connection made before the rotation broke: %v", err)
	}

	// A broken certificate file is refused; the last good one stays.
	failures := s.srv.Reloader().Status().Failures
	tlstest.WriteFile(t, certFile, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"))
	reloadtest.WaitFor(t, "the broken certificate to be refused", func() bool {
		return s.srv.Reloader().Status().Failures > failures
	})
	if st := s.srv.Reloader().Status(); !strings.Contains(st.LastError, certFile) {
		t.Errorf("last error %q does not name %s", st.LastError, certFile)
	}
	if c := served(); c == nil || c.SerialNumber.Cmp(second.Cert.SerialNumber) != 0 {
		t.Errorf("after a broken file: served %v, want the last good certificate", c)
	}

	// A new client CA: clients of the old one are refused from then on.
	tlstest.WriteFile(t, certFile, second.CertPEM)
	next := tlstest.NewCA(t, "next client CA")
	tlstest.WriteFile(t, caFile, next.PEM)
	nextClient := next.Issue(t, tlstest.Leaf{DNSNames: []string{"envoy"}}).TLS
	reloadtest.WaitFor(t, "the new client CA", func() bool {
		c, err := dial(s.addr, ca.Pool(), &nextClient)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if c, err := dial(s.addr, ca.Pool(), &client); err == nil {
		c.Close()
		t.Error("the old client CA's certificate is still accepted")
	}
}

// TestNewNamesTheBadFile: a listener does not start on files it cannot
// use, and the error says which.
func TestNewNamesTheBadFile(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "ca")
	certFile, keyFile := ca.Server(t).Write(t, dir, "server")
	otherKey := filepath.Join(dir, "other.key")
	tlstest.WriteFile(t, otherKey, ca.Server(t).KeyPEM)
	emptyCA := filepath.Join(dir, "empty.pem")
	tlstest.WriteFile(t, emptyCA, []byte("no PEM here\n"))
	tests := []struct {
		name  string
		files tlsconfig.Files
		want  string
	}{
		{"missing cert", tlsconfig.Files{CertFile: filepath.Join(dir, "nope.crt"), KeyFile: keyFile}, "nope.crt"},
		{"key of another certificate", tlsconfig.Files{CertFile: certFile, KeyFile: otherKey}, "other.key"},
		{"client CA without a certificate", tlsconfig.Files{CertFile: certFile, KeyFile: keyFile, ClientCAFile: emptyCA}, "empty.pem: no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tlsconfig.New(context.Background(), tlsconfig.Options{
				Component: "test_tls", Files: tt.files, Registerer: prometheus.NewRegistry(),
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want an error naming %q", err, tt.want)
			}
		})
	}
}
