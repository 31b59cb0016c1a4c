// Package admin serves Tollgate's HTTP admin listener: Prometheus metrics,
// Kubernetes probes and a status document.
package admin

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"

	"github.com/tollgate-dev/tollgate/internal/tlsconfig"
)

// Options configure the admin server.
type Options struct {
	// Gatherer is exposed on /metrics.
	Gatherer prometheus.Gatherer
	// Ready reports readiness for /readyz.
	Ready func() bool
	// Status returns the document served on /status (JSON).
	Status func() any
	Logger *slog.Logger
	// TLS, when set, serves HTTPS only.
	TLS *tls.Config
	// ClientCert: every path but the probes (/healthz, /readyz: kubelet
	// presents no certificate) needs a verified client certificate, and,
	// with AllowedIdentities, one carrying one of them.
	ClientCert        bool
	AllowedIdentities []string
	// Limits bound connections and requests (zero or negative fields:
	// the defaults; nothing is ever unbounded).
	Limits Limits
}

// Limits bound the admin listener: how many connections it keeps open and
// how long each may take, so that no client can exhaust the process's
// file descriptors or hold connections forever.
type Limits struct {
	// MaxConnections open at once; more wait to be accepted (in the
	// listen backlog) until one closes.
	MaxConnections int
	// ReadHeaderTimeout bounds reading a request's headers (and the TLS
	// handshake): a slowloris client is cut off after it.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from the end of its headers to the
	// end of its answer. It must exceed the longest admin answer: a usage
	// report's query may take up to 60 s (usageTimeout), then its 504
	// problem must still reach the client.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers.
	MaxHeaderBytes int
}

// DefaultLimits are the admin listener's bounds by default.
var DefaultLimits = Limits{
	MaxConnections:    256,
	ReadHeaderTimeout: 5 * time.Second,
	ReadTimeout:       30 * time.Second,
	WriteTimeout:      90 * time.Second,
	IdleTimeout:       60 * time.Second,
	MaxHeaderBytes:    64 << 10,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	pick := func(v, def time.Duration) time.Duration {
		if v <= 0 {
			return def
		}
		return v
	}
	if l.MaxConnections <= 0 {
		l.MaxConnections = d.MaxConnections
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	l.ReadHeaderTimeout = pick(l.ReadHeaderTimeout, d.ReadHeaderTimeout)
	l.ReadTimeout = pick(l.ReadTimeout, d.ReadTimeout)
	l.WriteTimeout = pick(l.WriteTimeout, d.WriteTimeout)
	l.IdleTimeout = pick(l.IdleTimeout, d.IdleTimeout)
	return l
}

// Server is the admin HTTP server.
type Server struct {
	mux      *http.ServeMux
	http     *http.Server
	tls      *tls.Config
	maxConns int
}

// New builds the admin server with /metrics, /healthz, /readyz and /status.
// More routes can be added with Handle before Serve.
func New(opts Options) *Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if opts.Ready == nil || !opts.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(opts.Status())
	})
	var errLog *slog.Logger
	if opts.Logger != nil {
		errLog = opts.Logger
	} else {
		errLog = slog.Default()
	}
	var handler http.Handler = mux
	if opts.ClientCert {
		handler = clientCert(mux, opts.AllowedIdentities)
	}
	lim := opts.Limits.withDefaults()
	return &Server{
		mux:      mux,
		tls:      opts.TLS,
		maxConns: lim.MaxConnections,
		http: &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: lim.ReadHeaderTimeout,
			ReadTimeout:       lim.ReadTimeout,
			WriteTimeout:      lim.WriteTimeout,
			IdleTimeout:       lim.IdleTimeout,
			MaxHeaderBytes:    lim.MaxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(errLog.Handler(), slog.LevelWarn),
		},
	}
}

// clientCert refuses (403) a request without a verified client
// certificate allowed here, except the probes.
func clientCert(next http.Handler, ids []string) http.Handler {
	allowed := tlsconfig.NewIdentitySet(ids)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			next.ServeHTTP(w, r)
			return
		}
		st := r.TLS
		ok := st != nil && len(st.VerifiedChains) > 0
		if ok && len(allowed) > 0 {
			ok = allowed.Allows(st)
		}
		if !ok {
			writeProblem(w, http.StatusForbidden, "client_certificate",
				"this path needs a client certificate with an allowed identity (admin.allowed_identities)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Handle adds a route (Go 1.22 pattern syntax).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Serve serves on ln until Shutdown; it returns nil after a shutdown. At
// most Limits.MaxConnections connections are open at once: the cap is on
// the TCP connections, under TLS, so that handshakes count too.
func (s *Server) Serve(ln net.Listener) error {
	ln = netutil.LimitListener(ln, s.maxConns)
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
	}
	if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting connections and waits for active ones until ctx
// is done; then it closes the rest.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if err != nil {
		_ = s.http.Close()
	}
	return err
}
