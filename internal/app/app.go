// Package app wires Tollgate's components into one server: the gRPC
// listener (ext_authz and health), the admin HTTP listener and the policy
// engine with its file reloader. cmd/tollgate only parses flags and calls it.
package app

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/internal/admin"
	"github.com/tollgate-dev/tollgate/internal/config"
	"github.com/tollgate-dev/tollgate/internal/reload"
	"github.com/tollgate-dev/tollgate/policies"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/rls"
	"github.com/tollgate-dev/tollgate/xds"
)

// App is a running Tollgate: listeners bound, policy loaded.
type App struct {
	cfg    *config.Config
	log    *slog.Logger
	engine *policies.Engine
	// The rate limit service's config files' reloader (nil: none).
	rlsFiles *reload.Reloader
	// The xDS control plane (nil: off).
	xds    *xds.Server
	limits *ratelimit.Engine
	// closeStore releases the limit store's connections.
	closeStore func() error
	grpc       *grpc.Server    // serves grpc.address
	grpcs      []*grpcListener // one per distinct address, grpc.address first
	health     *health.Server
	admin      *admin.Server
	adminLn    net.Listener
	ready      atomic.Bool
	version    string
}

// New loads the policies, builds every component and binds both listeners.
// Nothing is served until Run. On error nothing is left open.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger, version string) (*App, error) {
	// Reloaders watch from their construction: closed if New fails.
	var reloaders []*reload.Reloader
	built := false
	defer func() {
		if built {
			return
		}
		for _, r := range reloaders {
			_ = r.Close()
		}
	}()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	queries := []string{cfg.Policy.Decision}
	if cfg.RateLimit.Decision != "" {
		queries = append(queries, cfg.RateLimit.Decision)
	}
	engine, err := policies.New(ctx, policies.Options{
		Paths:      cfg.Policy.Paths,
		Queries:    queries,
		Watch:      cfg.Policy.WatchEnabled(),
		Logger:     log.With("component", "policies"),
		Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	reloaders = append(reloaders, engine.Reloader())
	query, err := engine.Query(cfg.Policy.Decision)
	if err != nil {
		return nil, err
	}
	store, closeStore, err := newStore(ctx, cfg.Store, log.With("component", "store"))
	if err != nil {
		return nil, err
	}
	limits, err := ratelimit.NewEngine(store, ratelimit.Options{Logger: log.With("component", "ratelimit"), Registerer: reg})
	if err != nil {
		closeStore()
		return nil, err
	}
	authzSrv, err := authz.New(query, authz.Options{
		DenyStatus: cfg.Authz.DenyStatus,
		Logger:     log.With("component", "authz"),
		Registerer: reg,
		Limiter:    limits,
	})
	if err != nil {
		closeStore()
		return nil, err
	}
	token, err := adminToken(cfg.Admin)
	if err != nil {
		closeStore()
		return nil, err
	}
	rlsOpts := rls.Options{FailClosed: cfg.RateLimit.FailureMode == "closed", Logger: log.With("component", "rls")}
	if cfg.RateLimit.Decision != "" {
		q, err := engine.Query(cfg.RateLimit.Decision)
		if err != nil {
			closeStore()
			return nil, err
		}
		rlsOpts.Source = rls.NewRegoSource(q, engine.Revision)
	}
	rlsSrv := rls.New(limits, rlsOpts)
	var rlsFiles *reload.Reloader
	if len(cfg.RateLimit.ConfigPaths) > 0 {
		if rlsFiles, err = rls.NewFiles(ctx, rlsSrv, rls.FilesOptions{
			Paths: cfg.RateLimit.ConfigPaths, Watch: cfg.RateLimit.WatchEnabled(), Logger: log.With("component", "rls"), Registerer: reg,
		}); err != nil {
			closeStore()
			return nil, err
		}
		reloaders = append(reloaders, rlsFiles)
	}

	var xdsSrv *xds.Server
	if cfg.XDS.Enabled() {
		if xdsSrv, err = xds.New(ctx, xds.Options{Files: cfg.XDS.Files(), Watch: cfg.XDS.WatchEnabled(), Logger: log.With("component", "xds"), Registerer: reg}); err != nil {
			closeStore()
			return nil, err
		}
		reloaders = append(reloaders, xdsSrv.Reloader())
	}

	a := &App{cfg: cfg, log: log, engine: engine, version: version, limits: limits, closeStore: closeStore, rlsFiles: rlsFiles, xds: xdsSrv}
	// One gRPC server per distinct address: ext_authz and health on
	// grpc.address; the RLS and xDS there too unless given their own.
	a.health = health.NewServer()
	a.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	a.health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	a.health.SetServingStatus(rlsv3.RateLimitService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	a.grpc = a.grpcServer(cfg.GRPC.Address, "grpc.address")
	authv3.RegisterAuthorizationServer(a.grpc, authzSrv)
	rlsv3.RegisterRateLimitServiceServer(a.grpcServer(cmp.Or(cfg.RateLimit.Address, cfg.GRPC.Address), "ratelimit.address"), rlsSrv)
	if xdsSrv != nil {
		xdsSrv.Register(a.grpcServer(cmp.Or(cfg.XDS.Address, cfg.GRPC.Address), "xds.address"))
	}
	a.admin = admin.New(admin.Options{
		Gatherer: reg,
		Ready:    a.ready.Load,
		Status:   a.status,
		Logger:   log.With("component", "admin"),
	})

	var lc net.ListenConfig
	if token != "" {
		a.admin.Handle("/v1/", admin.AccountsHandler(limits, token, log.With("component", "admin")))
	} else {
		log.Info("admin API (accounts, credits) is off: set admin.token or admin.token_file to enable it")
	}

	fail := func(err error) (*App, error) {
		for _, g := range a.grpcs {
			if g.ln != nil {
				g.ln.Close()
			}
			g.srv.Stop() // its stream workers
		}
		closeStore()
		return nil, err
	}
	for _, g := range a.grpcs {
		if g.ln, err = lc.Listen(ctx, "tcp", g.addr); err != nil {
			return fail(fmt.Errorf("%s: %w", g.field, err))
		}
	}
	if a.adminLn, err = lc.Listen(ctx, "tcp", cfg.Admin.Address); err != nil {
		return fail(fmt.Errorf("admin.address: %w", err))
	}
	built = true
	return a, nil
}

// grpcListener is one gRPC server and the address it serves.
type grpcListener struct {
	addr, field string
	srv         *grpc.Server
	ln          net.Listener
}

// grpcServer returns the gRPC server for addr, creating it (with health
// and, if enabled, reflection) on first use.
func (a *App) grpcServer(addr, field string) *grpc.Server {
	for _, g := range a.grpcs {
		if g.addr == addr {
			return g.srv
		}
	}
	// Stream workers: handler goroutines are reused, so the deep stacks that
	// Rego evaluation grows are kept instead of being grown (copied) again
	// for every call — a third of the CPU of a Check without them.
	srv := grpc.NewServer(grpc.NumStreamWorkers(uint32(16 * runtime.GOMAXPROCS(0))))
	healthpb.RegisterHealthServer(srv, a.health)
	if a.cfg.GRPC.ReflectionEnabled() {
		reflection.Register(srv)
	}
	a.grpcs = append(a.grpcs, &grpcListener{addr: addr, field: field, srv: srv})
	return srv
}

// reloaders are the components' file reloaders, each a runner: Run
// (watching, if on) until its context is done, or Close if it never runs.
func (a *App) reloaders() []*reload.Reloader {
	rs := []*reload.Reloader{a.engine.Reloader()}
	if a.rlsFiles != nil {
		rs = append(rs, a.rlsFiles)
	}
	if a.xds != nil {
		rs = append(rs, a.xds.Reloader())
	}
	return rs
}

// GRPCAddr is the bound gRPC address (useful with port 0).
func (a *App) GRPCAddr() string { return a.grpcs[0].ln.Addr().String() }

// Listeners maps each gRPC listener's config field (grpc.address,
// ratelimit.address, xds.address) to its bound address.
func (a *App) Listeners() map[string]string {
	m := make(map[string]string, len(a.grpcs))
	for _, g := range a.grpcs {
		m[g.field] = g.ln.Addr().String()
	}
	return m
}

// AdminAddr is the bound admin address.
func (a *App) AdminAddr() string { return a.adminLn.Addr().String() }

// Engine is the policy engine in use.
func (a *App) Engine() *policies.Engine { return a.engine }

// statusDoc is /status: every component's files in the one reload.Status
// shape.
type statusDoc struct {
	Version   string         `json:"version"`
	Ready     bool           `json:"ready"`
	Policy    reload.Status  `json:"policy"`
	RateLimit *reload.Status `json:"ratelimit,omitempty"`
	XDS       *reload.Status `json:"xds,omitempty"`
}

func (a *App) status() any {
	doc := statusDoc{Version: a.version, Ready: a.ready.Load(), Policy: a.engine.Reloader().Status()}
	if a.rlsFiles != nil {
		st := a.rlsFiles.Status()
		doc.RateLimit = &st
	}
	if a.xds != nil {
		st := a.xds.Reloader().Status()
		doc.XDS = &st
	}
	return doc
}

// Run serves until ctx is done, then drains: health and /readyz flip to
// not serving first, in-flight calls finish (up to shutdown_timeout), and
// Run returns nil. A listener failure ends Run with its error.
func (a *App) Run(ctx context.Context) error {
	errc := make(chan error, len(a.grpcs)+1)
	for _, g := range a.grpcs {
		go func() { errc <- g.srv.Serve(g.ln) }()
	}
	go func() { errc <- a.admin.Serve(a.adminLn) }()

	watchCtx, stopWatch := context.WithCancel(context.Background())
	var reloading sync.WaitGroup
	for _, r := range a.reloaders() {
		reloading.Go(func() { _ = r.Run(watchCtx) })
	}
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		if m, ok := a.limits.Store().(*ratelimit.MemoryStore); ok {
			m.Run(watchCtx, 10*time.Second) // reclaim expired counters
		}
	}()

	a.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	a.health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	a.health.SetServingStatus(rlsv3.RateLimitService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	a.ready.Store(true)

	var err error
	select {
	case <-ctx.Done():
		a.log.Info("shutting down: draining in-flight calls", "timeout", time.Duration(a.cfg.ShutdownTimeout))
	case err = <-errc:
		a.log.Error("listener failed; shutting down", "error", err)
	}

	a.ready.Store(false)
	a.health.Shutdown() // every service NOT_SERVING before draining
	stopWatch()

	timeout := time.Duration(a.cfg.ShutdownTimeout)
	drained := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		for _, g := range a.grpcs {
			wg.Add(1)
			go func() { defer wg.Done(); g.srv.GracefulStop() }()
		}
		wg.Wait()
		close(drained)
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-drained:
	case <-timer.C:
		a.log.Warn("drain timed out; closing remaining calls")
		for _, g := range a.grpcs {
			g.srv.Stop()
		}
		<-drained
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if serr := a.admin.Shutdown(sctx); serr != nil && err == nil {
		err = fmt.Errorf("admin shutdown: %w", serr)
	}
	reloading.Wait()
	<-sweepDone
	if cerr := a.closeStore(); cerr != nil && err == nil {
		err = fmt.Errorf("close store: %w", cerr)
	}
	return err
}

// Banner writes where Tollgate listens and, for the embedded demo policy,
// grpcurl commands that get a 200 and a 401.
func (a *App) Banner(w io.Writer) {
	policy := fmt.Sprintf("%v", a.cfg.Policy.Paths)
	if len(a.cfg.Policy.Paths) == 0 {
		policy = "embedded demo (policies/demo)"
	}
	fmt.Fprintf(w, "Tollgate %s is serving\n", a.version)
	fmt.Fprintf(w, "  gRPC              %s   envoy.service.auth.v3.Authorization/Check, envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit\n", a.GRPCAddr())
	for _, g := range a.grpcs[1:] {
		fmt.Fprintf(w, "  gRPC (%s)  %s\n", g.field, g.ln.Addr())
	}
	fmt.Fprintf(w, "  admin (HTTP)      http://%s   /metrics /healthz /readyz /status\n", a.AdminAddr())
	fmt.Fprintf(w, "  policy            %s, decision %s, revision %s\n", policy, a.cfg.Policy.Decision, a.engine.Revision())
	if len(a.cfg.Policy.Paths) != 0 {
		return
	}
	const check = "envoy.service.auth.v3.Authorization/Check"
	fmt.Fprintf(w, "\nTry it with grpcurl (https://github.com/fullstorydev/grpcurl):\n\n")
	fmt.Fprintf(w, "  # 200: consumer acme, plan pro\n  grpcurl -plaintext -d '%s' %s %s\n\n", DemoAllowed, a.GRPCAddr(), check)
	fmt.Fprintf(w, "  # 401: no API key\n  grpcurl -plaintext -d '%s' %s %s\n\n", DemoUnauthenticated, a.GRPCAddr(), check)
}

// Demo CheckRequests printed by the banner (and tested).
const (
	DemoAllowed         = `{"attributes":{"request":{"http":{"method":"GET","path":"/v1/invoices","host":"api.example.com","headers":{"x-api-key":"tg_live_3f9a1c0d5e7b4a2c"}}}}}`
	DemoUnauthenticated = `{"attributes":{"request":{"http":{"method":"GET","path":"/v1/invoices","host":"api.example.com","headers":{}}}}}`
)
