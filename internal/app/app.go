// Package app wires Tollgate's components into one server: the gRPC
// listener (ext_authz and health), the admin HTTP listener and the policy
// engine with its file reloader. cmd/tollgate only parses flags and calls it.
package app

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/authz/accesslog"
	"github.com/tollgate-dev/tollgate/internal/admin"
	"github.com/tollgate-dev/tollgate/internal/config"
	"github.com/tollgate-dev/tollgate/internal/decisionlog"
	dlogpg "github.com/tollgate-dev/tollgate/internal/decisionlog/pgsink"
	"github.com/tollgate-dev/tollgate/internal/directory"
	"github.com/tollgate-dev/tollgate/internal/pg"
	"github.com/tollgate-dev/tollgate/internal/reload"
	"github.com/tollgate-dev/tollgate/internal/tlsconfig"
	"github.com/tollgate-dev/tollgate/policies"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger/pgsink"
	"github.com/tollgate-dev/tollgate/ratelimit/rls"
	"github.com/tollgate-dev/tollgate/xds"
)

// App is a running Tollgate: listeners bound, policy loaded.
type App struct {
	cfg      *config.Config
	log      *slog.Logger
	engine   *policies.Engine
	rlsFiles *reload.Reloader // the rate limit service's config files (nil: none)
	xds      *xds.Server      // the xDS control plane (nil: off)
	grpcs    []*grpcListener  // one per distinct address, grpc.address first
	health   *health.Server
	admin    *admin.Server
	adminLn  net.Listener
	ready    atomic.Bool
	version  string
	// runners are the background work Run starts and stops with the
	// listeners: the file reloaders and the store's sweeper.
	runners []runner
	// pool is the PostgreSQL pool (nil: no PostgreSQL).
	pool *pgxpool.Pool
	// book is the durable ledger (nil: no PostgreSQL).
	book *pgsink.Sink
	// grpcTLS and adminTLS are the listeners' certificates (nil:
	// plaintext); identities, the gRPC services' allowed client
	// identities.
	grpcTLS, adminTLS *tlsconfig.Server
	identities        map[string]tlsconfig.IdentitySet
	// decisions are the decision logs in PostgreSQL, which usage reads
	// (nil: decision logs off, or another sink).
	decisions *dlogpg.Sink
	// dirStore and resolver are the key directory (nil: directory off).
	dirStore directory.Store
	resolver *directory.Resolver
	// undo releases what New provisioned, in reverse order: by New when
	// it fails, by Run when it returns.
	undo cleanup
}

// runner is background work that runs until its context is done; an error
// ends Run.
type runner struct {
	name string
	run  func(context.Context) error
	// afterDrain runners stop once the listeners have drained, not when
	// the drain begins: the decision log writes the draining calls too.
	afterDrain bool
	// by, when set, is told the shutdown deadline before the runner stops,
	// so its last work ends by then too.
	by func(time.Time)
}

// cleanup is a stack of undo steps.
type cleanup []func() error

// push adds an undo step whose error matters (closing the store).
func (c *cleanup) push(f func() error) { *c = append(*c, f) }

// pushQuiet adds an undo step whose error does not (closing a listener
// that serving may already have closed).
func (c *cleanup) pushQuiet(f func() error) { c.push(func() error { _ = f(); return nil }) }

// run undoes every step, last first, once.
func (c *cleanup) run() error {
	var errs []error
	for i := len(*c) - 1; i >= 0; i-- {
		if err := (*c)[i](); err != nil {
			errs = append(errs, err)
		}
	}
	*c = nil
	return errors.Join(errs...)
}

// AuthzCredentials is authz.credentials as the authz package takes it.
func AuthzCredentials(c config.Credentials) *authz.Credentials {
	return &authz.Credentials{Headers: c.HeaderNames(), Bearer: c.BearerOn(), QueryParam: c.QueryParam, Hide: c.HideOn()}
}

// New loads the policies, builds every component and binds every listener.
// Nothing is served until Run. On error, whatever New provisioned is
// released before it returns.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger, version string) (_ *App, err error) {
	a := &App{cfg: cfg, log: log, version: version}
	defer func() {
		if err != nil {
			_ = a.undo.run()
		}
	}()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	queries := []string{cfg.Policy.Decision}
	if cfg.RateLimit.Decision != "" {
		queries = append(queries, cfg.RateLimit.Decision)
	}
	a.engine, err = policies.New(ctx, policies.Options{
		Paths:      cfg.Policy.Paths,
		Queries:    queries,
		Watch:      cfg.Policy.WatchEnabled(),
		Logger:     log.With("component", "policies"),
		Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	a.reloader("policy", a.engine.Reloader())
	query, err := a.engine.Query(cfg.Policy.Decision)
	if err != nil {
		return nil, err
	}
	st, err := newStore(ctx, cfg.Store, cfg.Settle, cfg.Postgres.Enabled(), log.With("component", "store"))
	if err != nil {
		return nil, err
	}
	a.undo.push(st.close)
	for _, c := range st.metrics {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	if st.run != nil {
		a.runners = append(a.runners, runner{name: "store sweeper", run: st.run})
	}
	if err := a.shipLedger(ctx, st.ledger, reg); err != nil {
		return nil, err
	}
	engineOpts := ratelimit.Options{Logger: log.With("component", "ratelimit"), Registerer: reg,
		AnswerMargin: time.Duration(cfg.Store.AnswerMargin)}
	if a.book != nil { // pending voids and settles survive a restart in PostgreSQL
		engineOpts.Pending = a.book
		if rs, ok := st.Store.(*ratelimit.RedisStore); ok {
			rs.SetDurableLedger(a.book.FindCharge) // a void whose entries were shipped and trimmed looks there
		}
	}
	limits, err := ratelimit.NewEngine(st.Store, engineOpts)
	if err != nil {
		return nil, err
	}
	a.runners = append(a.runners, runner{name: "pending voids", run: limits.Run, afterDrain: true, by: limits.FlushBy})
	// Reservations (charges settled on delivery) that no access log entry
	// settles are released after settle.timeout, by every replica.
	a.runners = append(a.runners, runner{name: "settle sweeper", run: func(ctx context.Context) error {
		return limits.RunSweeper(ctx, time.Duration(cfg.Settle.SweepInterval))
	}})
	alsSrv, err := accesslog.New(limits, accesslog.Options{Logger: log.With("component", "accesslog"), Registerer: reg})
	if err != nil {
		return nil, err
	}
	dlog, err := a.decisionLog(ctx, reg)
	if err != nil {
		return nil, err
	}
	if err := a.keyDirectory(ctx, reg); err != nil {
		return nil, err
	}
	authzOpts := authz.Options{
		DenyStatus:  cfg.Authz.DenyStatus,
		Logger:      log.With("component", "authz"),
		Registerer:  reg,
		Limiter:     limits,
		Revision:    a.engine.Revision,
		Credentials: AuthzCredentials(cfg.Authz.Credentials),
	}
	if dlog != nil { // not a typed nil in the interface
		authzOpts.DecisionLog = dlog
	}
	if a.resolver != nil {
		authzOpts.Resolver = a.resolver
	}
	authzSrv, err := authz.New(query, authzOpts)
	if err != nil {
		return nil, err
	}
	tokens, err := adminTokens(cfg.Admin)
	if err != nil {
		return nil, err
	}
	rlsOpts := rls.Options{FailClosed: cfg.RateLimit.FailureMode == "closed", Logger: log.With("component", "rls"),
		Bounds: rls.Bounds{Descriptors: cfg.RateLimit.MaxDescriptors, Entries: cfg.RateLimit.MaxEntries, EntryBytes: cfg.RateLimit.MaxEntryBytes}}
	if dlog != nil {
		rlsOpts.DecisionLog = dlog
	}
	if cfg.RateLimit.Decision != "" {
		q, err := a.engine.Query(cfg.RateLimit.Decision)
		if err != nil {
			return nil, err
		}
		rlsOpts.Source = rls.NewRegoSource(q, a.engine.Revision)
	}
	rlsSrv := rls.New(limits, rlsOpts)
	if len(cfg.RateLimit.ConfigPaths) > 0 {
		if a.rlsFiles, err = rls.NewFiles(ctx, rlsSrv, rls.FilesOptions{
			Paths: cfg.RateLimit.ConfigPaths, Watch: cfg.RateLimit.WatchEnabled(), Logger: log.With("component", "rls"), Registerer: reg,
		}); err != nil {
			return nil, err
		}
		a.reloader("ratelimit", a.rlsFiles)
	}
	if cfg.XDS.Enabled() {
		if a.xds, err = xds.New(ctx, xds.Options{Files: cfg.XDS.Files(), Watch: cfg.XDS.WatchEnabled(), Logger: log.With("component", "xds"), Registerer: reg}); err != nil {
			return nil, err
		}
		a.reloader("xds", a.xds.Reloader())
	}

	// TLS: certificates reloaded as their files change; with a client CA,
	// gRPC clients must present a certificate (Envoy's cluster TLS
	// context), admin clients on every path but the probes.
	if a.grpcTLS, err = a.listenerTLS(ctx, cfg.GRPC.TLS, "grpc_tls", tls.RequireAndVerifyClientCert, []string{"h2"}, reg); err != nil {
		return nil, err
	}
	adminTLS, err := a.listenerTLS(ctx, cfg.Admin.TLS, "admin_tls", tls.VerifyClientCertIfGiven, []string{"h2", "http/1.1"}, reg)
	if err != nil {
		return nil, err
	}
	a.identities = identityRules(cfg)

	// One gRPC server per distinct address: ext_authz and health on
	// grpc.address; the RLS and xDS there too unless given their own.
	a.health = health.NewServer()
	a.setServing(false)
	authv3.RegisterAuthorizationServer(a.grpcServer(cfg.GRPC.Address, "grpc.address"), authzSrv)
	// The access log service completes what ext_authz reserved: on its
	// listener, which Envoy's "tollgate" cluster already reaches.
	alsv3.RegisterAccessLogServiceServer(a.grpcServer(cfg.GRPC.Address, "grpc.address"), alsSrv)
	rlsv3.RegisterRateLimitServiceServer(a.grpcServer(cmp.Or(cfg.RateLimit.Address, cfg.GRPC.Address), "ratelimit.address"), rlsSrv)
	if a.xds != nil {
		a.xds.Register(a.grpcServer(cmp.Or(cfg.XDS.Address, cfg.GRPC.Address), "xds.address"))
	}
	adminOpts := admin.Options{
		Gatherer:          reg,
		Ready:             a.readyz,
		Status:            a.status,
		Logger:            log.With("component", "admin"),
		ClientCert:        cfg.Admin.TLS.ClientCAFile != "",
		AllowedIdentities: cfg.Admin.AllowedIdentities,
		Limits:            admin.Limits{MaxConnections: cfg.Admin.MaxConnections},
	}
	if adminTLS != nil {
		adminOpts.TLS = adminTLS.Config()
		a.adminTLS = adminTLS
	}
	a.admin = admin.New(adminOpts)
	if tokens.On() {
		var book admin.Ledger // no typed nil in the interface
		if a.book != nil {
			book = a.book
		}
		a.admin.Handle("/v1/", admin.AccountsHandler(limits, tokens, log.With("component", "admin"), book))
		var usage admin.Usage // no typed nil in the interface
		if a.decisions != nil {
			usage = a.decisions
		}
		a.admin.Handle("/v1/usage", admin.UsageHandler(usage, tokens, log.With("component", "admin")))
		if a.dirStore != nil {
			dir := admin.DirectoryHandler(a.dirStore, tokens, log.With("component", "admin"))
			for _, p := range []string{"/v1/consumers", "/v1/consumers/", "/v1/keys/"} {
				a.admin.Handle(p, dir)
			}
		}
	} else {
		log.Info("admin API (accounts, credits, key directory) is off: set admin.token, admin.token_file or admin.tokens to enable it")
	}

	var lc net.ListenConfig
	for _, g := range a.grpcs {
		if g.ln, err = lc.Listen(ctx, "tcp", g.addr); err != nil {
			return nil, fmt.Errorf("%s: %w", g.field, err)
		}
		a.undo.pushQuiet(g.ln.Close)
	}
	if a.adminLn, err = lc.Listen(ctx, "tcp", cfg.Admin.Address); err != nil {
		return nil, fmt.Errorf("admin.address: %w", err)
	}
	a.undo.pushQuiet(a.adminLn.Close)
	return a, nil
}

// decisionLog builds the decision log when decision_logs.enabled: its sink
// (closed by undo), and its writer, a runner that stops after the drain.
// The postgres sink migrates tollgate_decisions and adds the retention
// runner.
func (a *App) decisionLog(ctx context.Context, reg prometheus.Registerer) (*decisionlog.Logger, error) {
	c := a.cfg.DecisionLogs
	if !c.Enabled {
		return nil, nil
	}
	var sink decisionlog.Sink = decisionlog.NewWriter(os.Stdout)
	switch c.Sink {
	case "file":
		f, err := decisionlog.OpenFile(c.Path)
		if err != nil {
			return nil, fmt.Errorf("decision_logs.path: %w", err)
		}
		sink = f
	case "postgres":
		if a.pool == nil { // config validation refuses it
			return nil, errors.New("decision_logs.sink: postgres needs postgres.dsn")
		}
		if err := dlogpg.Migrate(ctx, a.pool); err != nil {
			return nil, fmt.Errorf("postgres: %w", err)
		}
		a.decisions = dlogpg.New(a.pool, 0)
		sink = a.decisions
		a.runners = append(a.runners, runner{name: "decision log retention", run: a.decisions.Retention(dlogpg.RetentionOptions{
			Retention: time.Duration(c.Retention), Logger: a.log.With("component", "decisionlog"),
		})})
	}
	l, err := decisionlog.New(decisionlog.Options{
		Sink:   sink,
		Buffer: c.Buffer,
		Sample: *c.Sample,
		// The headers a credential is read from are masked too.
		Mask:         append(slices.Clone(c.Mask), a.cfg.Authz.Credentials.HeaderNames()...),
		Revision:     a.engine.Revision,
		FlushTimeout: time.Duration(a.cfg.ShutdownTimeout),
		Registerer:   reg,
		Logger:       a.log.With("component", "decisionlog"),
	})
	if err != nil {
		_ = sink.Close()
		return nil, err
	}
	a.undo.push(l.Close)
	a.runners = append(a.runners, runner{name: "decision log", run: l.Run, afterDrain: true, by: l.FlushBy})
	return l, nil
}

// reloader makes a component's file reloader a runner (watching, when on,
// from its construction) and closes its watches if New fails.
func (a *App) reloader(component string, r *reload.Reloader) {
	a.undo.pushQuiet(r.Close)
	a.runners = append(a.runners, runner{name: component + " reloader", run: r.Run})
}

// shipLedger, with PostgreSQL configured, opens it, migrates the ledger's
// tables and adds a runner shipping the store's ledger there.
func (a *App) shipLedger(ctx context.Context, src ledger.Source, reg prometheus.Registerer) error {
	if !a.cfg.Postgres.Enabled() {
		return nil
	}
	pool, err := pg.Open(ctx, a.cfg.Postgres)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	a.undo.push(func() error { pool.Close(); return nil })
	a.pool = pool
	if err := pgsink.Migrate(ctx, pool); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	a.book = pgsink.New(pool)
	sh, err := ledger.NewShipper(src, a.book, ledger.ShipOptions{
		Logger: a.log.With("component", "ledger"), Registerer: reg,
	})
	if err != nil {
		return err
	}
	a.runners = append(a.runners, runner{name: "ledger shipper", run: sh.Run, afterDrain: true, by: sh.FlushBy})
	return nil
}

// grpcListener is one gRPC server and the address it serves.
type grpcListener struct {
	addr, field string
	srv         *grpc.Server
	ln          net.Listener
}

// Keepalive for long-lived streams (xDS): ping an idle client every
// keepaliveTime and drop it when no answer comes within keepaliveTimeout;
// refuse clients that ping more often than keepaliveMinTime (as
// go-control-plane's example server does), so a misbehaving client cannot
// keep the server busy answering pings.
const (
	keepaliveTime    = 30 * time.Second
	keepaliveTimeout = 10 * time.Second
	keepaliveMinTime = 10 * time.Second
)

// grpcServer returns the gRPC server for addr, creating it (with health
// and, if enabled, reflection) on first use.
func (a *App) grpcServer(addr, field string) *grpc.Server {
	for _, g := range a.grpcs {
		if g.addr == addr {
			return g.srv
		}
	}
	opts := []grpc.ServerOption{
		// Stream workers: handler goroutines are reused, so the deep stacks
		// that Rego evaluation grows are kept instead of being grown
		// (copied) again for every call — a third of the CPU of a Check
		// without them.
		grpc.NumStreamWorkers(uint32(16 * runtime.GOMAXPROCS(0))),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime, PermitWithoutStream: true}),
	}
	if a.grpcTLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(a.grpcTLS.Config())))
	}
	if len(a.identities) > 0 {
		opts = append(opts, identityInterceptors(a.identities)...)
	}
	srv := grpc.NewServer(opts...)
	a.undo.push(func() error { srv.Stop(); return nil }) // its stream workers
	healthpb.RegisterHealthServer(srv, a.health)
	if a.cfg.GRPC.ReflectionOn(addr) {
		reflection.Register(srv)
	}
	a.grpcs = append(a.grpcs, &grpcListener{addr: addr, field: field, srv: srv})
	return srv
}

// setServing flips /readyz and every gRPC health status together. Once
// not serving after Run, it stays so.
func (a *App) setServing(on bool) {
	if !on && a.ready.Load() {
		a.ready.Store(false)
		a.health.Shutdown() // every service NOT_SERVING, for good
		return
	}
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if on {
		st = healthpb.HealthCheckResponse_SERVING
	}
	for _, svc := range []string{"", authv3.Authorization_ServiceDesc.ServiceName, rlsv3.RateLimitService_ServiceDesc.ServiceName,
		alsv3.AccessLogService_ServiceDesc.ServiceName} {
		a.health.SetServingStatus(svc, st)
	}
	a.ready.Store(on)
}

// readyz is /readyz: serving, and the key directory (when on) has loaded
// every key hash.
func (a *App) readyz() bool {
	return a.ready.Load() && (a.resolver == nil || a.resolver.Ready())
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
	// The listeners' certificates (detail: subject, SANs, not_after).
	GRPCTLS  *reload.Status `json:"grpc_tls,omitempty"`
	AdminTLS *reload.Status `json:"admin_tls,omitempty"`
	// Directory is the key directory (absent: off).
	Directory *directoryStatus `json:"directory,omitempty"`
}

func (a *App) status() any {
	doc := statusDoc{Version: a.version, Ready: a.readyz(), Policy: a.engine.Reloader().Status(), Directory: a.directoryStatus()}
	if a.rlsFiles != nil {
		st := a.rlsFiles.Status()
		doc.RateLimit = &st
	}
	if a.xds != nil {
		st := a.xds.Reloader().Status()
		doc.XDS = &st
	}
	if a.grpcTLS != nil {
		st := a.grpcTLS.Reloader().Status()
		doc.GRPCTLS = &st
	}
	if a.adminTLS != nil {
		st := a.adminTLS.Reloader().Status()
		doc.AdminTLS = &st
	}
	return doc
}

// Run serves until ctx is done, then drains: health and /readyz flip to
// not serving first, serving goes on for shutdown_delay, the runners stop,
// and the gRPC and admin listeners
// finish their in-flight calls within one shutdown_timeout, after which the
// rest are closed; then the decision log writes what it holds (the
// draining calls' records too) within another shutdown_timeout at most. A
// listener or runner failure ends Run the same way, with its error.
func (a *App) Run(ctx context.Context) error {
	// The listeners are bound: a call made now waits in the backlog until
	// Serve takes it, so Tollgate is ready before the first Serve runs (a
	// client that saw the port open never sees NOT_SERVING).
	a.setServing(true)
	g, gctx := errgroup.WithContext(ctx)
	for _, l := range a.grpcs {
		g.Go(func() error {
			// ErrServerStopped: the drain began before Serve did.
			if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return fmt.Errorf("%s: %w", l.field, err)
			}
			return nil
		})
	}
	g.Go(func() error {
		if err := a.admin.Serve(a.adminLn); err != nil {
			return fmt.Errorf("admin.address: %w", err)
		}
		return nil
	})
	background, stopBackground := context.WithCancel(gctx)
	defer stopBackground()
	afterDrain, stopAfterDrain := context.WithCancel(context.WithoutCancel(gctx))
	defer stopAfterDrain()
	for _, r := range a.runners {
		rctx := background
		if r.afterDrain {
			rctx = afterDrain
		}
		g.Go(func() error {
			if err := r.run(rctx); err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		a.setServing(false)
		if ctx.Err() != nil {
			// Not ready, still serving: whoever routes here by readiness
			// (Kubernetes endpoints, Envoy's health checks) stops sending
			// before the listeners close. A failure skips the delay.
			if delay := time.Duration(*a.cfg.ShutdownDelay); delay > 0 {
				a.log.Info("shutting down: not ready, serving for shutdown_delay", "delay", delay)
				t := time.NewTimer(delay)
				<-t.C
			}
			a.log.Info("shutting down: draining in-flight calls", "timeout", time.Duration(a.cfg.ShutdownTimeout))
		} else {
			a.log.Error("shutting down after a failure: draining in-flight calls", "error", context.Cause(gctx))
		}
		stopBackground()
		// One deadline for all of it: the listeners' drain, then what the
		// after-drain runners (the decision log) still have to write.
		deadline := time.Now().Add(time.Duration(a.cfg.ShutdownTimeout))
		a.drain(deadline)
		for _, r := range a.runners {
			if r.afterDrain && r.by != nil {
				r.by(deadline)
			}
		}
		stopAfterDrain()
		return nil
	})
	err := g.Wait()
	if cerr := a.undo.run(); cerr != nil && err == nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	return err
}

// drain stops every listener gracefully by one deadline shared by all of
// them, then closes whatever is still open. The admin listener goes
// last, so /readyz answers 503 while the gRPC calls drain.
func (a *App) drain(deadline time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	var wg sync.WaitGroup
	for _, l := range a.grpcs {
		wg.Go(func() {
			done := make(chan struct{})
			go func() { defer close(done); l.srv.GracefulStop() }()
			select {
			case <-done:
			case <-ctx.Done():
				a.log.Warn("drain timed out; closing remaining calls", "listener", l.field)
				l.srv.Stop()
				<-done
			}
		})
	}
	wg.Wait()
	if err := a.admin.Shutdown(ctx); err != nil {
		a.log.Warn("admin drain timed out; closing remaining connections", "error", err)
	}
}

// Banner writes where Tollgate listens and, for the embedded demo policy,
// grpcurl commands that get a 200 and a 401.
func (a *App) Banner(w io.Writer) {
	policy := fmt.Sprintf("%v", a.cfg.Policy.Paths)
	if len(a.cfg.Policy.Paths) == 0 {
		policy = "embedded demo (policies/demo)"
	}
	scheme, grpcTLS := "http", ""
	if a.adminTLS != nil {
		scheme = "https"
	}
	if a.grpcTLS != nil {
		grpcTLS = " (TLS)"
	}
	fmt.Fprintf(w, "Tollgate %s is serving\n", a.version)
	fmt.Fprintf(w, "  gRPC              %s%s   envoy.service.auth.v3.Authorization/Check, envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit, envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs\n", a.GRPCAddr(), grpcTLS)
	for _, g := range a.grpcs[1:] {
		fmt.Fprintf(w, "  gRPC (%s)  %s\n", g.field, g.ln.Addr())
	}
	fmt.Fprintf(w, "  admin (HTTP)      %s://%s   /metrics /healthz /readyz /status\n", scheme, a.AdminAddr())
	fmt.Fprintf(w, "  policy            %s, decision %s, revision %s\n", policy, a.cfg.Policy.Decision, a.engine.Revision())
	if a.dirStore != nil {
		store := "in memory (not durable)"
		if a.dirStore.Durable() {
			store = "PostgreSQL"
		}
		api := "admin API off (no admin token)"
		if a.cfg.Admin.APIOn() {
			api = "admin API /v1/consumers /v1/keys/"
		}
		fmt.Fprintf(w, "  key directory     %s, input.tollgate.consumer; %s\n", store, api)
	}
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
