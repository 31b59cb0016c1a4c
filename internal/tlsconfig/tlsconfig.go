// Package tlsconfig serves TLS on Tollgate's listeners from certificate
// files that are reloaded when they change (cert-manager renewals,
// Kubernetes secret rotations) without dropping a connection: each
// handshake takes the certificate and client CAs in force, connections
// already open keep theirs. It also reads a verified client certificate's
// identities (URI and DNS SANs, never the subject's CN) and checks them
// against a list of allowed identities.
package tlsconfig

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/reload"
)

// Files are a listener's certificate files (PEM).
type Files struct {
	CertFile string
	KeyFile  string
	// ClientCAFile, when set, asks clients for a certificate signed by
	// one of its CAs (mutual TLS).
	ClientCAFile string
}

// Options configure a Server.
type Options struct {
	// Component names the reloader on /status and in
	// tollgate_reloads_total ("grpc_tls", "admin_tls").
	Component string
	Files     Files
	// ClientAuth applies when Files.ClientCAFile is set:
	// tls.RequireAndVerifyClientCert (gRPC) or
	// tls.VerifyClientCertIfGiven (admin: probes present no certificate).
	ClientAuth tls.ClientAuthType
	// NextProtos are the ALPN protocols offered: "h2" for gRPC.
	NextProtos []string
	Watch      bool
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Server holds the TLS state in force and reloads it.
type Server struct {
	opts     Options
	current  atomic.Pointer[tls.Config]
	reloader *reload.Reloader
}

// Detail is what /status shows of the certificate in force.
type Detail struct {
	Subject  string    `json:"subject"`
	DNSNames []string  `json:"dns_names,omitempty"`
	URIs     []string  `json:"uris,omitempty"`
	NotAfter time.Time `json:"not_after"`
	ClientCA bool      `json:"client_ca"`
}

// New loads the files (they must be valid now) and, with Options.Watch,
// reloads them when Run runs.
func New(ctx context.Context, opts Options) (*Server, error) {
	if opts.Files.CertFile == "" || opts.Files.KeyFile == "" {
		return nil, errors.New("tlsconfig: a certificate and a key file are required")
	}
	s := &Server{opts: opts}
	paths := []string{opts.Files.CertFile, opts.Files.KeyFile}
	if opts.Files.ClientCAFile != "" {
		paths = append(paths, opts.Files.ClientCAFile)
	}
	r, err := reload.New(ctx, reload.Options{
		Component:  opts.Component,
		Paths:      paths,
		Build:      s.build,
		Watch:      opts.Watch,
		Logger:     opts.Logger,
		Registerer: opts.Registerer,
	})
	if err != nil {
		return nil, err
	}
	s.reloader = r
	return s, nil
}

// build reads the files into a tls.Config for the handshakes to come.
func (s *Server) build(context.Context) (*reload.Built, error) {
	f := s.opts.Files
	h := sha256.New()
	read := func(path string) ([]byte, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		h.Write(b)
		h.Write([]byte{0})
		return b, nil
	}
	certPEM, err := read(f.CertFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := read(f.KeyFile)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s, %s: %w", f.CertFile, f.KeyFile, err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   s.opts.NextProtos,
	}
	if f.ClientCAFile != "" {
		caPEM, err := read(f.ClientCAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("%s: no PEM certificate in it", f.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = s.opts.ClientAuth
	}
	d := Detail{Subject: cert.Leaf.Subject.String(), DNSNames: cert.Leaf.DNSNames, NotAfter: cert.Leaf.NotAfter,
		ClientCA: cfg.ClientCAs != nil}
	for _, u := range cert.Leaf.URIs {
		d.URIs = append(d.URIs, u.String())
	}
	return &reload.Built{
		Revision: hex.EncodeToString(h.Sum(nil)[:8]),
		Files:    slices.DeleteFunc(slices.Clone([]string{f.CertFile, f.KeyFile, f.ClientCAFile}), func(p string) bool { return p == "" }),
		Detail:   d,
		Publish: func(context.Context) error {
			s.current.Store(cfg)
			return nil
		},
	}, nil
}

// Config is the listener's TLS configuration: every handshake takes the
// certificate and client CAs in force at that moment.
func (s *Server) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: s.opts.NextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.current.Load(), nil
		},
	}
}

// Reloader is the files' reloader (Run it to watch; Status for /status).
func (s *Server) Reloader() *reload.Reloader { return s.reloader }

// Identities are a verified client certificate's URI SANs (SPIFFE IDs)
// and DNS SANs; nil without one. The subject's CN is never an identity:
// any CA that signs for one name signs the CN too, and Envoy, Istio and
// SPIFFE identify workloads by SANs.
func Identities(st *tls.ConnectionState) []string {
	var ids []string
	eachIdentity(st, func(id string) bool { ids = append(ids, id); return false })
	return ids
}

// IdentitySet is a set of allowed client identities.
type IdentitySet map[string]struct{}

// NewIdentitySet makes the set of ids.
func NewIdentitySet(ids []string) IdentitySet {
	s := make(IdentitySet, len(ids))
	for _, id := range ids {
		s[id] = struct{}{}
	}
	return s
}

// Allows reports whether a verified client certificate carries one of
// the set's identities (exact match).
func (s IdentitySet) Allows(st *tls.ConnectionState) bool {
	return eachIdentity(st, func(id string) bool { _, ok := s[id]; return ok })
}

// eachIdentity calls fn with each identity of st's verified client
// certificate until fn returns true, and reports whether one did.
func eachIdentity(st *tls.ConnectionState, fn func(string) bool) bool {
	if st == nil || len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return false
	}
	leaf := st.VerifiedChains[0][0]
	for _, u := range leaf.URIs {
		if fn(u.String()) {
			return true
		}
	}
	for _, n := range leaf.DNSNames {
		if fn(n) {
			return true
		}
	}
	return false
}
