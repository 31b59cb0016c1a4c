package app_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tollgate-dev/tollgate/internal/app"
	"github.com/tollgate-dev/tollgate/internal/reload/reloadtest"
	"github.com/tollgate-dev/tollgate/internal/tlsconfig/tlstest"
)

const (
	envoyID = "spiffe://cluster.local/ns/edge/sa/envoy"
	rlsID   = "rls-client.edge.svc"
	nodeID  = "spiffe://cluster.local/ns/edge/sa/xds-node"
)

// mtls is a running Tollgate with TLS on both listeners and the
// certificates to call it.
type mtls struct {
	r                  *running
	serverCA, clientCA *tlstest.CA
	dir                string
	grpcCert, grpcKey  string
}

func startMTLS(t testing.TB) *mtls {
	t.Helper()
	m := &mtls{serverCA: tlstest.NewCA(t, "server CA"), clientCA: tlstest.NewCA(t, "client CA"), dir: t.TempDir()}
	m.grpcCert, m.grpcKey = m.serverCA.Server(t).Write(t, m.dir, "grpc")
	adminCert, adminKey := m.serverCA.Server(t).Write(t, m.dir, "admin")
	caFile := filepath.Join(m.dir, "clients.pem")
	tlstest.WriteFile(t, caFile, m.clientCA.PEM)

	cfg := testConfig()
	cfg.GRPC.TLS.CertFile, cfg.GRPC.TLS.KeyFile, cfg.GRPC.TLS.ClientCAFile = m.grpcCert, m.grpcKey, caFile
	cfg.Admin.TLS.CertFile, cfg.Admin.TLS.KeyFile, cfg.Admin.TLS.ClientCAFile = adminCert, adminKey, caFile
	cfg.Authz.AllowedIdentities = []string{envoyID}
	cfg.RateLimit.AllowedIdentities = []string{rlsID}
	cfg.RateLimit.ConfigPaths = []string{"../../examples/ratelimit-migration/config.yaml"}
	cfg.XDS.AllowedIdentities = []string{nodeID}
	cfg.XDS.RoutesFile = "../../examples/xds/routes.yaml"
	cfg.Admin.AllowedIdentities = []string{"spiffe://cluster.local/ns/ops/sa/prometheus"}
	m.r = start(t, cfg)
	return m
}

// dial connects over TLS with a client certificate for l (nil: none).
func (m *mtls) dial(t testing.TB, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	cfg := &tls.Config{RootCAs: m.serverCA.Pool(), ServerName: "localhost"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(m.r.app.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (m *mtls) client(t testing.TB, l tlstest.Leaf) *tls.Certificate {
	c := m.clientCA.Issue(t, l).TLS
	return &c
}

func demoCheck(t testing.TB) *authv3.CheckRequest {
	t.Helper()
	req := &authv3.CheckRequest{}
	if err := protojson.Unmarshal([]byte(app.DemoAllowed), req); err != nil {
		t.Fatal(err)
	}
	return req
}

func check(conn *grpc.ClientConn, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return authv3.NewAuthorizationClient(conn).Check(ctx, req)
}

// TestMutualTLSListeners: with grpc.tls and a client CA, plaintext and
// certificates of another CA are refused, each service takes only its
// allowed identities (read from SANs, never the CN), and the admin
// listener serves HTTPS with probes open and the rest behind a client
// certificate.
func TestMutualTLSListeners(t *testing.T) {
	m := startMTLS(t)
	req := demoCheck(t)

	// Plaintext (the running helper's own connection) is refused.
	if _, err := check(m.r.conn, req); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext Check: %v, want Unavailable", err)
	}
	// No client certificate, and a certificate of another CA: refused.
	if _, err := check(m.dial(t, nil), req); status.Code(err) != codes.Unavailable {
		t.Errorf("Check without a client certificate: %v, want Unavailable", err)
	}
	stranger := tlstest.NewCA(t, "another CA").Issue(t, tlstest.Leaf{URIs: []string{envoyID}}).TLS
	if _, err := check(m.dial(t, &stranger), req); status.Code(err) != codes.Unavailable {
		t.Errorf("Check with another CA's certificate: %v, want Unavailable", err)
	}

	envoy := m.dial(t, m.client(t, tlstest.Leaf{URIs: []string{envoyID}}))
	resp, err := check(envoy, req)
	if err != nil || resp.GetStatus().GetCode() != int32(codes.OK) {
		t.Fatalf("Check from the allowed Envoy: %v %v", resp, err)
	}
	// The CN is not an identity; an unlisted SAN is refused.
	for name, l := range map[string]tlstest.Leaf{
		"CN only":      {CommonName: envoyID},
		"another SAN":  {CommonName: envoyID, URIs: []string{"spiffe://cluster.local/ns/dev/sa/envoy"}},
		"RLS identity": {DNSNames: []string{rlsID}},
	} {
		if _, err := check(m.dial(t, m.client(t, l)), req); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: Check %v, want PermissionDenied", name, err)
		}
	}

	// ShouldRateLimit: only the RLS client's identity.
	rls := &rlsv3.RateLimitRequest{Domain: "tollgate", Descriptors: []*commonv3.RateLimitDescriptor{{
		Entries: []*commonv3.RateLimitDescriptor_Entry{{Key: "remote_address", Value: "203.0.113.7"}}}}}
	ctx := context.Background()
	if _, err := rlsv3.NewRateLimitServiceClient(envoy).ShouldRateLimit(ctx, rls); status.Code(err) != codes.PermissionDenied {
		t.Errorf("ShouldRateLimit as the ext_authz identity: %v, want PermissionDenied", err)
	}
	rlsConn := m.dial(t, m.client(t, tlstest.Leaf{DNSNames: []string{rlsID}}))
	if _, err := rlsv3.NewRateLimitServiceClient(rlsConn).ShouldRateLimit(ctx, rls); err != nil {
		t.Errorf("ShouldRateLimit as the RLS identity: %v", err)
	}

	// xDS: only the known node gets routes and clusters.
	ads := func(conn *grpc.ClientConn) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		s, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			return err
		}
		// Send's io.EOF means the stream has ended: Recv has the status.
		if err := s.Send(&discoverygrpc.DiscoveryRequest{Node: &corev3.Node{Id: "envoy-1", Cluster: "edge"}, TypeUrl: resource.ClusterType}); err != nil && err != io.EOF {
			return err
		}
		resp, err := s.Recv()
		if err == nil && len(resp.Resources) == 0 {
			t.Errorf("CDS answered without clusters")
		}
		return err
	}
	if err := ads(envoy); status.Code(err) != codes.PermissionDenied {
		t.Errorf("ADS as the ext_authz identity: %v, want PermissionDenied", err)
	}
	if err := ads(m.dial(t, m.client(t, tlstest.Leaf{URIs: []string{nodeID}}))); err != nil {
		t.Errorf("ADS as the node identity: %v", err)
	}

	// Health stays open to any client the handshake accepted (Envoy's
	// gRPC health checks).
	if h, err := healthpb.NewHealthClient(rlsConn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health: %v %v", h, err)
	}

	// Admin: HTTPS; probes need no certificate, the rest an allowed one.
	admin := func(cert *tls.Certificate, path string) (int, string) {
		cfg := &tls.Config{RootCAs: m.serverCA.Pool(), ServerName: "localhost"}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
		defer c.CloseIdleConnections()
		resp, err := c.Get("https://" + m.r.app.AdminAddr() + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := admin(nil, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz without a client certificate: %d, want 200 (kubelet probes present none)", code)
	}
	if code, body := admin(nil, "/metrics"); code != http.StatusForbidden || !strings.Contains(body, "client_certificate") {
		t.Errorf("/metrics without a client certificate: %d %s, want 403", code, body)
	}
	if code, _ := admin(m.client(t, tlstest.Leaf{URIs: []string{envoyID}}), "/metrics"); code != http.StatusForbidden {
		t.Errorf("/metrics with an unlisted identity: %d, want 403", code)
	}
	code, body := admin(m.client(t, tlstest.Leaf{URIs: []string{"spiffe://cluster.local/ns/ops/sa/prometheus"}}), "/status")
	if code != http.StatusOK {
		t.Fatalf("/status with the allowed identity: %d %s", code, body)
	}
	if !strings.Contains(body, `"grpc_tls"`) || !strings.Contains(body, `"admin_tls"`) || !strings.Contains(body, "not_after") {
		t.Errorf("/status does not show the listeners' certificates: %s", body)
	}
	// Plain HTTP on the admin port gets no answer from the handlers.
	if resp, err := http.Get("http://" + m.r.app.AdminAddr() + "/readyz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP served on the TLS admin listener")
		}
	}
	if !strings.Contains(m.r.banner, "https://") || !strings.Contains(m.r.banner, "(TLS)") {
		t.Errorf("the banner does not say TLS:\n%s", m.r.banner)
	}
}

// TestCertificateRotation: a renewed gRPC certificate is served to new
// connections while a connection made before keeps answering.
func TestCertificateRotation(t *testing.T) {
	m := startMTLS(t)
	req := demoCheck(t)
	cert := m.client(t, tlstest.Leaf{URIs: []string{envoyID}})
	old := m.dial(t, cert)
	if _, err := check(old, req); err != nil {
		t.Fatal(err)
	}
	renewed := m.serverCA.Server(t)
	tlstest.WriteFile(t, m.grpcKey, renewed.KeyPEM)
	tlstest.WriteFile(t, m.grpcCert, renewed.CertPEM)
	served := func() *x509.Certificate {
		c, err := tls.Dial("tcp", m.r.app.GRPCAddr(), &tls.Config{RootCAs: m.serverCA.Pool(), ServerName: "localhost",
			Certificates: []tls.Certificate{*cert}, NextProtos: []string{"h2"}})
		if err != nil {
			return nil
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0]
	}
	reloadtest.WaitFor(t, "the renewed certificate", func() bool {
		c := served()
		return c != nil && c.SerialNumber.Cmp(renewed.Cert.SerialNumber) == 0
	})
	if _, err := check(old, req); err != nil {
		t.Errorf("the connection made before the renewal: %v", err)
	}
	if _, err := check(m.dial(t, cert), req); err != nil {
		t.Errorf("a new connection after the renewal: %v", err)
	}
}

// TestReflectionLoopbackOnly: unset, gRPC reflection is on for a loopback
// listener (the banner's grpcurl commands) and off on a wildcard one.
func TestReflectionLoopbackOnly(t *testing.T) {
	list := func(addr string) error {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			return err
		}
		// Send's io.EOF means the stream has ended: Recv has the status.
		if err := s.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && err != io.EOF {
			return err
		}
		_, err = s.Recv()
		return err
	}
	if err := list(start(t, testConfig()).app.GRPCAddr()); err != nil {
		t.Errorf("reflection on 127.0.0.1: %v", err)
	}
	cfg := testConfig()
	cfg.GRPC.Address = "0.0.0.0:0"
	r := start(t, cfg)
	_, port, _ := net.SplitHostPort(r.app.GRPCAddr())
	if err := list(net.JoinHostPort("127.0.0.1", port)); status.Code(err) != codes.Unimplemented {
		t.Errorf("reflection on 0.0.0.0: %v, want Unimplemented", err)
	}
	on := true
	cfg = testConfig()
	cfg.GRPC.Address, cfg.GRPC.Reflection = "0.0.0.0:0", &on
	r = start(t, cfg)
	_, port, _ = net.SplitHostPort(r.app.GRPCAddr())
	if err := list(net.JoinHostPort("127.0.0.1", port)); err != nil {
		t.Errorf("reflection asked for on 0.0.0.0: %v", err)
	}
}

// BenchmarkCheckTransport: the demo Check over plaintext, over mutual TLS,
// and over mutual TLS with an identity allow-list, in the same run (both
// cores busy; client and server CPU together).
func BenchmarkCheckTransport(b *testing.B) {
	req := demoCheck(b)
	run := func(b *testing.B, conn *grpc.ClientConn) {
		client := authv3.NewAuthorizationClient(conn)
		b.ReportAllocs()
		b.SetParallelism(4)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := client.Check(context.Background(), req); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.Run("plaintext", func(b *testing.B) { run(b, start(b, testConfig()).conn) })
	b.Run("mtls+identities", func(b *testing.B) {
		m := startMTLS(b)
		run(b, m.dial(b, m.client(b, tlstest.Leaf{URIs: []string{envoyID}})))
	})
}
