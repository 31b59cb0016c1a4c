package xds

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	ratelimitconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	grpcalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tollgate-dev/tollgate/internal/wire"
)

// Names of the Envoy extensions that Build configures.
const (
	FilterExtAuthz  = "envoy.filters.http.ext_authz"
	FilterRateLimit = "envoy.filters.http.ratelimit"
	FilterRouter    = "envoy.filters.http.router"

	// AccessLogGRPC sends each request's access log entry to Tollgate,
	// which settles the charges ext_authz reserved (settle on delivery).
	AccessLogGRPC = "envoy.access_loggers.http_grpc"
	// AccessLogName is the log_name of that access log.
	AccessLogName = "tollgate"

	filterHCM           = "envoy.filters.network.http_connection_manager"
	transportSocketTLS  = "envoy.transport_sockets.tls"
	httpProtocolOptions = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// GRPCRouteConfigPrefix starts the name of the route configuration of a
// proxyless gRPC service, which is inlined in its API listener.
const GRPCRouteConfigPrefix = "grpc:"

// tollgateConnectTimeout is the connect timeout of the cluster that reaches
// Tollgate (as in envoy/ratelimit.yaml).
const tollgateConnectTimeout = 250 * time.Millisecond

// Resources are the Envoy resources of a routes file, each list sorted by
// name. Treat them as read-only: they may be shared with go-control-plane's
// cache.
type Resources struct {
	// Listeners holds one listener per file listener, and one API listener
	// per gRPC service (named by its xds:/// target).
	Listeners []*listenerv3.Listener
	// Routes holds one route configuration per listener, named like it.
	Routes []*routev3.RouteConfiguration
	// Clusters holds the file's clusters and the one that reaches Tollgate.
	Clusters []*clusterv3.Cluster
	// Endpoints holds the load assignment of each EDS cluster.
	Endpoints []*endpointv3.ClusterLoadAssignment
}

// Build turns a File into Envoy resources. tollgateCluster names the
// cluster through which the ext_authz and rate limit filters reach Tollgate
// (DefaultTollgateCluster if empty); Build adds it, from f.Tollgate.Address.
// Every resource passes its ValidateAll (typed configs included), and the
// set forms a consistent snapshot. An error names the listener, route or
// cluster at fault; Build does not fail for a File that Parse returned,
// unless tollgateCluster is the name of one of its clusters.
func Build(f *File, tollgateCluster string) (*Resources, error) {
	if f == nil {
		return nil, errors.New("build xds resources: no routes file")
	}
	if tollgateCluster == "" {
		tollgateCluster = DefaultTollgateCluster
	}
	b := &builder{f: f, tg: tollgateCluster, clusters: make(map[string]*Cluster, len(f.Clusters))}
	if err := b.build(); err != nil {
		if b.line > 0 {
			return nil, fmt.Errorf("%s:%d: %w", f.Name, b.line, err)
		}
		return nil, fmt.Errorf("%s: %w", f.Name, err)
	}
	r := &b.res
	sortByName(r.Listeners, (*listenerv3.Listener).GetName)
	sortByName(r.Routes, (*routev3.RouteConfiguration).GetName)
	sortByName(r.Clusters, (*clusterv3.Cluster).GetName)
	sortByName(r.Endpoints, (*endpointv3.ClusterLoadAssignment).GetClusterName)
	return r, nil
}

func sortByName[T any](s []T, name func(T) string) {
	slices.SortFunc(s, func(a, b T) int { return strings.Compare(name(a), name(b)) })
}

type builder struct {
	f        *File
	tg       string
	clusters map[string]*Cluster
	res      Resources
	line     int // of the innermost entry being built, for errors

	// Shared, read-only parts of every listener.
	httpFilters     []*hcmv3.HttpFilter
	routerOnly      []*hcmv3.HttpFilter
	accessLog       []*accesslogv3.AccessLog
	extAuthzOff     *anypb.Any
	protocolOptions map[string]*anypb.Any
}

func (b *builder) build() error {
	for i := range b.f.Clusters {
		c := &b.f.Clusters[i]
		if c.Name == b.tg {
			return fmt.Errorf("cluster %q: the name is taken by the cluster that reaches Tollgate (allowed: any other name)", c.Name)
		}
		if _, dup := b.clusters[c.Name]; dup {
			return fmt.Errorf("cluster %q is defined twice", c.Name)
		}
		b.clusters[c.Name] = c
	}
	if err := b.sharedParts(); err != nil {
		return err
	}
	names := map[string]string{} // listener name -> what it is
	for i := range b.f.Listeners {
		l := &b.f.Listeners[i]
		who := fmt.Sprintf("listener %q", l.Name)
		if prev, dup := names[l.Name]; dup {
			return fmt.Errorf("%s: the name is taken by %s", who, prev)
		}
		names[l.Name] = who
		if err := b.listener(l); err != nil {
			return fmt.Errorf("%s: %w", who, err)
		}
	}
	for i := range b.f.GRPCServices {
		g := &b.f.GRPCServices[i]
		who := fmt.Sprintf("grpc_services entry %q", g.Name)
		if prev, dup := names[g.Name]; dup {
			return fmt.Errorf("%s: the name is taken by %s", who, prev)
		}
		names[g.Name] = who
		if err := b.grpcService(g); err != nil {
			return fmt.Errorf("%s: %w", who, err)
		}
	}
	for i := range b.f.Clusters {
		c := &b.f.Clusters[i]
		b.line = c.Line
		if err := b.cluster(c); err != nil {
			return fmt.Errorf("cluster %q: %w", c.Name, err)
		}
	}
	b.line = b.f.Tollgate.Line
	if err := b.tollgateCluster(); err != nil {
		return fmt.Errorf("tollgate cluster %q: %w", b.tg, err)
	}
	return nil
}

type validator interface{ ValidateAll() error }

// pack validates m and wraps it in an Any, marshalled deterministically so
// that the version of a snapshot depends only on its content.
func pack(m proto.Message) (*anypb.Any, error) {
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			return nil, err
		}
	}
	a := new(anypb.Any)
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, err
	}
	return a, nil
}

func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func orDuration(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func (b *builder) tollgateService(timeout time.Duration) *corev3.GrpcService {
	s := &corev3.GrpcService{
		TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: b.tg}},
	}
	if timeout > 0 {
		s.Timeout = durationpb.New(timeout)
	}
	return s
}

func (b *builder) sharedParts() error {
	t := &b.f.Tollgate
	authz := &extauthzv3.ExtAuthz{
		Services:            &extauthzv3.ExtAuthz_GrpcService{GrpcService: b.tollgateService(orDuration(t.Timeout, DefaultTimeout))},
		TransportApiVersion: corev3.ApiVersion_V3,
		FailureModeAllow:    t.FailureModeAllow,
		// Tollgate unreachable and failure_mode_allow false: 503, not 403.
		StatusOnError: &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
	}
	if rb := t.RequestBody; rb != nil {
		authz.WithRequestBody = &extauthzv3.BufferSettings{MaxRequestBytes: rb.MaxBytes, AllowPartialMessage: rb.AllowPartial}
	}
	domain := t.RateLimitDomain
	if domain == "" {
		domain = DefaultRateLimitDomain
	}
	rl := &ratelimitv3.RateLimit{
		Domain:  domain,
		Timeout: durationpb.New(orDuration(t.RateLimitTimeout, DefaultRateLimitTimeout)),
		RateLimitService: &ratelimitconfv3.RateLimitServiceConfig{
			GrpcService:         b.tollgateService(0),
			TransportApiVersion: corev3.ApiVersion_V3,
		},
		// A rate limit call that fails lets the request through: ext_authz
		// already failed closed if Tollgate is down.
		FailureModeDeny:         false,
		EnableXRatelimitHeaders: ratelimitv3.RateLimit_DRAFT_VERSION_03,
	}
	authzAny, err := pack(authz)
	if err != nil {
		return fmt.Errorf("tollgate: %s filter: %w", FilterExtAuthz, err)
	}
	rlAny, err := pack(rl)
	if err != nil {
		return fmt.Errorf("tollgate: %s filter: %w", FilterRateLimit, err)
	}
	routerAny, err := pack(&routerv3.Router{})
	if err != nil {
		return err
	}
	router := &hcmv3.HttpFilter{Name: FilterRouter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: routerAny}}
	b.httpFilters = []*hcmv3.HttpFilter{
		{Name: FilterExtAuthz, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: authzAny}},
		{Name: FilterRateLimit, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: rlAny}},
		router,
	}
	b.routerOnly = []*hcmv3.HttpFilter{router}
	if b.accessLog, err = b.settleAccessLog(); err != nil {
		return fmt.Errorf("tollgate: %s access log: %w", AccessLogGRPC, err)
	}
	if b.extAuthzOff, err = pack(&extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true}}); err != nil {
		return err
	}
	h2, err := pack(&upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			},
		},
	})
	if err != nil {
		return err
	}
	b.protocolOptions = map[string]*anypb.Any{httpProtocolOptions: h2}
	return nil
}

// settleAccessLog is the access log of every HTTP listener: the entries of
// the requests whose ext_authz metadata names a reservation go to
// Tollgate's access log service, through the cluster ext_authz uses.
func (b *builder) settleAccessLog() ([]*accesslogv3.AccessLog, error) {
	cfg, err := pack(&grpcalsv3.HttpGrpcAccessLogConfig{CommonConfig: &grpcalsv3.CommonGrpcAccessLogConfig{
		LogName:             AccessLogName,
		GrpcService:         b.tollgateService(0),
		TransportApiVersion: corev3.ApiVersion_V3,
	}})
	if err != nil {
		return nil, err
	}
	al := &accesslogv3.AccessLog{
		Name: AccessLogGRPC,
		Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_MetadataFilter{MetadataFilter: &accesslogv3.MetadataFilter{
			Matcher: &matcherv3.MetadataMatcher{
				Filter: wire.MetadataNamespace,
				Path:   []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: wire.MetadataKey}}},
				Value:  &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: true}},
			},
			MatchIfKeyNotFound: wrapperspb.Bool(false),
		}}},
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: cfg},
	}
	if err := al.ValidateAll(); err != nil {
		return nil, err
	}
	return []*accesslogv3.AccessLog{al}, nil
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func (b *builder) listener(l *Listener) error {
	b.line = l.Line
	host, port, ok := splitHostPort(l.Address)
	if !ok {
		return fmt.Errorf("address %q is not ip:port", l.Address)
	}
	rc := &routev3.RouteConfiguration{Name: l.Name}
	for i := range l.VirtualHosts {
		vh := &l.VirtualHosts[i]
		v, err := b.virtualHost(vh)
		if err != nil {
			return fmt.Errorf("virtual host %q: %w", vh.Name, err)
		}
		rc.VirtualHosts = append(rc.VirtualHosts, v)
	}
	b.line = l.Line
	// One validation of the whole configuration; only on failure, a
	// search for the route at fault, to name it.
	if err := rc.ValidateAll(); err != nil {
		return fmt.Errorf("route configuration: %w", b.locate(l, rc, err))
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: l.Name,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    ads(),
			RouteConfigName: rc.Name,
		}},
		HttpFilters: b.httpFilters,
		AccessLog:   b.accessLog,
		// This Envoy is the edge: the client address (remote_address rate
		// limits, ext_authz's source) is the TCP peer, not X-Forwarded-For.
		UseRemoteAddress: wrapperspb.Bool(true),
		// Route and authorize the path as the upstream will read it: dot
		// segments (also %2e) and backslashes resolved, "//" merged, and
		// escaped slashes (%2F, %5C), which neither touches, answered with
		// 400 rather than meaning one path here and another upstream.
		NormalizePath:                wrapperspb.Bool(true),
		MergeSlashes:                 true,
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_REJECT_REQUEST,
	}
	hcmAny, err := pack(hcm)
	if err != nil {
		return fmt.Errorf("http connection manager: %w", err)
	}
	chain := &listenerv3.FilterChain{Filters: []*listenerv3.Filter{{
		Name:       filterHCM,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcmAny},
	}}}
	if l.TLS != nil {
		tlsAny, err := pack(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{{
				CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: l.TLS.CertFile}},
				PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: l.TLS.KeyFile}},
			}},
			AlpnProtocols: []string{"h2", "http/1.1"},
		}})
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		chain.TransportSocket = &corev3.TransportSocket{
			Name:       transportSocketTLS,
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsAny},
		}
	}
	out := &listenerv3.Listener{
		Name:         l.Name,
		Address:      socketAddress(host, port),
		FilterChains: []*listenerv3.FilterChain{chain},
	}
	if err := out.ValidateAll(); err != nil {
		return err
	}
	b.res.Listeners = append(b.res.Listeners, out)
	b.res.Routes = append(b.res.Routes, rc)
	return nil
}

func (b *builder) virtualHost(vh *VirtualHost) (*routev3.VirtualHost, error) {
	out := &routev3.VirtualHost{Name: vh.Name, Domains: vh.Domains}
	for i := range vh.Routes {
		r := &vh.Routes[i]
		b.line = r.Line
		rt, err := b.route(r)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", routeName(r.Name, i), err)
		}
		out.Routes = append(out.Routes, rt)
	}
	return out, nil
}

// locate names the virtual host and route of a validation error of rc,
// built from l.
func (b *builder) locate(l *Listener, rc *routev3.RouteConfiguration, err error) error {
	for i, vh := range rc.GetVirtualHosts() {
		v := &l.VirtualHosts[i]
		for j, rt := range vh.GetRoutes() {
			if rerr := rt.ValidateAll(); rerr != nil {
				r := &v.Routes[j]
				b.line = r.Line
				return fmt.Errorf("virtual host %q: %s: %w", v.Name, routeName(r.Name, j), rerr)
			}
		}
		vh := &routev3.VirtualHost{Name: vh.GetName(), Domains: vh.GetDomains()}
		if verr := vh.ValidateAll(); verr != nil {
			b.line = v.Line
			return fmt.Errorf("virtual host %q: %w", v.Name, verr)
		}
	}
	return err
}

func routeName(name string, i int) string {
	if name == "" {
		return fmt.Sprintf("route %d", i+1)
	}
	return fmt.Sprintf("route %q", name)
}

func (b *builder) checkCluster(name string) error {
	if _, ok := b.clusters[name]; !ok {
		return fmt.Errorf("cluster %q is not defined", name)
	}
	return nil
}

func (b *builder) route(r *Route) (*routev3.Route, error) {
	if err := b.checkCluster(r.Cluster); err != nil {
		return nil, err
	}
	action := &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: r.Cluster},
		Timeout:          durationpb.New(r.Timeout),
		PrefixRewrite:    r.PrefixRewrite,
	}
	if rt := r.Retries; rt != nil {
		action.RetryPolicy = &routev3.RetryPolicy{RetryOn: rt.On, NumRetries: wrapperspb.UInt32(rt.Attempts)}
		if rt.PerTryTimeout > 0 {
			action.RetryPolicy.PerTryTimeout = durationpb.New(rt.PerTryTimeout)
		}
	}
	for _, d := range r.Tollgate.RateLimits {
		rl := &routev3.RateLimit{}
		for _, a := range d {
			rl.Actions = append(rl.Actions, rateLimitAction(a))
		}
		action.RateLimits = append(action.RateLimits, rl)
	}
	out := &routev3.Route{
		Name:   r.Name,
		Match:  routeMatch(&r.Match),
		Action: &routev3.Route_Route{Route: action},
	}
	switch t := &r.Tollgate; {
	case t.ExtAuthzDisabled:
		out.TypedPerFilterConfig = map[string]*anypb.Any{FilterExtAuthz: b.extAuthzOff}
		// On a route without ext_authz, nothing removes a client's own
		// copies of the headers Tollgate sets: remove them here.
		out.RequestHeadersToRemove = wire.Headers()
	case len(t.ContextExtensions) > 0:
		a, err := pack(&extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{
			CheckSettings: &extauthzv3.CheckSettings{ContextExtensions: t.ContextExtensions},
		}})
		if err != nil {
			return nil, fmt.Errorf("context_extensions: %w", err)
		}
		out.TypedPerFilterConfig = map[string]*anypb.Any{FilterExtAuthz: a}
	}
	return out, nil
}

func rateLimitAction(a RateLimitAction) *routev3.RateLimit_Action {
	switch {
	case a.RequestHeader != nil:
		return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RequestHeaders_{
			RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{
				HeaderName:    a.RequestHeader.Header,
				DescriptorKey: a.RequestHeader.Key,
				SkipIfAbsent:  a.RequestHeader.SkipIfAbsent,
			},
		}}
	case a.GenericKey != nil:
		return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{
			GenericKey: &routev3.RateLimit_Action_GenericKey{
				DescriptorValue: a.GenericKey.Value,
				DescriptorKey:   a.GenericKey.Key,
			},
		}}
	default:
		return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RemoteAddress_{
			RemoteAddress: &routev3.RateLimit_Action_RemoteAddress{},
		}}
	}
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func routeMatch(m *Match) *routev3.RouteMatch {
	out := &routev3.RouteMatch{}
	switch {
	case m.Regex != "":
		out.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: m.Regex}}
	case m.Path != "":
		out.PathSpecifier = &routev3.RouteMatch_Path{Path: m.Path}
	default:
		out.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: m.Prefix}
	}
	switch len(m.Methods) {
	case 0:
	case 1:
		out.Headers = append(out.Headers, &routev3.HeaderMatcher{
			Name:                 ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact(m.Methods[0])},
		})
	default:
		// Envoy's safe regexes match the whole value.
		out.Headers = append(out.Headers, &routev3.HeaderMatcher{
			Name: ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: strings.Join(m.Methods, "|")}},
			}},
		})
	}
	for _, h := range m.Headers {
		out.Headers = append(out.Headers, &routev3.HeaderMatcher{
			Name:                 h.Name,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact(h.Value)},
		})
	}
	return out
}

// grpcService builds the API listener that grpc-go's xDS resolver reads
// for the target xds:///<name>. Its route configuration is inline: grpc-go
// accepts both, and go-control-plane's Snapshot.Consistent does not follow
// RDS names out of API listeners, so an RDS route configuration for it
// would make every snapshot inconsistent. grpc-go requires the router
// filter last and runs no ext_authz, so it is the only filter.
func (b *builder) grpcService(g *GRPCService) error {
	b.line = g.Line
	vh := &routev3.VirtualHost{Name: g.Name, Domains: []string{"*"}}
	routes := g.Routes
	if len(routes) == 0 {
		routes = []GRPCRoute{{Match: Match{Prefix: "/"}, Cluster: g.Cluster, Line: g.Line}}
	}
	for i := range routes {
		r := &routes[i]
		b.line = r.Line
		if err := b.checkCluster(r.Cluster); err != nil {
			return fmt.Errorf("%s: %w", routeName(r.Name, i), err)
		}
		if c := b.clusters[r.Cluster]; c.DNS() {
			return fmt.Errorf("%s: cluster %q has DNS endpoints; proxyless gRPC clients need an EDS cluster", routeName(r.Name, i), r.Cluster)
		}
		action := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: r.Cluster}}
		if r.Timeout > 0 {
			action.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(r.Timeout)}
		}
		rt := &routev3.Route{Name: r.Name, Match: routeMatch(&r.Match), Action: &routev3.Route_Route{Route: action}}
		if err := rt.ValidateAll(); err != nil {
			return fmt.Errorf("%s: %w", routeName(r.Name, i), err)
		}
		vh.Routes = append(vh.Routes, rt)
	}
	b.line = g.Line
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: g.Name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name:         GRPCRouteConfigPrefix + g.Name,
			VirtualHosts: []*routev3.VirtualHost{vh},
		}},
		HttpFilters: b.routerOnly,
	}
	hcmAny, err := pack(hcm)
	if err != nil {
		return fmt.Errorf("http connection manager: %w", err)
	}
	out := &listenerv3.Listener{
		Name:        g.Name,
		ApiListener: &listenerv3.ApiListener{ApiListener: hcmAny},
	}
	if err := out.ValidateAll(); err != nil {
		return err
	}
	b.res.Listeners = append(b.res.Listeners, out)
	return nil
}

var lbPolicyValues = map[string]clusterv3.Cluster_LbPolicy{
	"":              clusterv3.Cluster_ROUND_ROBIN,
	"round_robin":   clusterv3.Cluster_ROUND_ROBIN,
	"least_request": clusterv3.Cluster_LEAST_REQUEST,
	"random":        clusterv3.Cluster_RANDOM,
	"ring_hash":     clusterv3.Cluster_RING_HASH,
	"maglev":        clusterv3.Cluster_MAGLEV,
}

func loadAssignment(name string, eps []Endpoint) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	if len(eps) == 0 {
		return cla
	}
	// grpc-go rejects localities without an ID and ignores those without
	// a weight.
	loc := &endpointv3.LocalityLbEndpoints{
		Locality:            &corev3.Locality{Region: "default"},
		LoadBalancingWeight: wrapperspb.UInt32(1),
	}
	for _, e := range eps {
		loc.LbEndpoints = append(loc.LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(e.Host, e.Port)}},
		})
	}
	cla.Endpoints = []*endpointv3.LocalityLbEndpoints{loc}
	return cla
}

func (b *builder) cluster(c *Cluster) error {
	lb, ok := lbPolicyValues[c.LBPolicy]
	if !ok {
		return fmt.Errorf("lb_policy %q is not one of %s", c.LBPolicy, strings.Join(lbPolicies, ", "))
	}
	out := &clusterv3.Cluster{
		Name:           c.Name,
		ConnectTimeout: durationpb.New(orDuration(c.ConnectTimeout, DefaultConnectTimeout)),
		LbPolicy:       lb,
	}
	cla := loadAssignment(c.Name, c.Endpoints)
	if c.DNS() {
		for _, e := range c.Endpoints {
			if e.IsIP() {
				return fmt.Errorf("endpoints mix IP addresses and DNS names")
			}
		}
		out.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		out.LoadAssignment = cla
		cla = nil
	} else {
		for _, e := range c.Endpoints {
			if !e.IsIP() {
				return fmt.Errorf("endpoints mix IP addresses and DNS names")
			}
		}
		out.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		out.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads()}
	}
	switch c.Protocol {
	case "", "http1":
	case "http2":
		out.TypedExtensionProtocolOptions = b.protocolOptions
	default:
		return fmt.Errorf("protocol %q is not one of %s", c.Protocol, strings.Join(protocols, ", "))
	}
	if h := c.HealthCheck; h != nil {
		hc := &corev3.HealthCheck_HttpHealthCheck{Path: h.Path}
		if c.Protocol == "http2" {
			hc.CodecClientType = typev3.CodecClientType_HTTP2
		}
		out.HealthChecks = []*corev3.HealthCheck{{
			Timeout:            durationpb.New(h.Timeout),
			Interval:           durationpb.New(h.Interval),
			UnhealthyThreshold: wrapperspb.UInt32(h.UnhealthyThreshold),
			HealthyThreshold:   wrapperspb.UInt32(h.HealthyThreshold),
			HealthChecker:      &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: hc},
		}}
	}
	if err := out.ValidateAll(); err != nil {
		return err
	}
	b.res.Clusters = append(b.res.Clusters, out)
	if cla != nil {
		if err := cla.ValidateAll(); err != nil {
			return fmt.Errorf("endpoints: %w", err)
		}
		b.res.Endpoints = append(b.res.Endpoints, cla)
	}
	return nil
}

// tollgateCluster reaches Tollgate's gRPC server: HTTP/2 in cleartext,
// STATIC for an IP address, STRICT_DNS for a name.
func (b *builder) tollgateCluster() error {
	addr := b.f.Tollgate.Address
	if addr == "" {
		addr = DefaultTollgateAddress
	}
	host, port, ok := splitHostPort(addr)
	if !ok {
		return fmt.Errorf("address %q is not host:port", addr)
	}
	if msg := checkHost(host); msg != "" {
		return fmt.Errorf("address %q: %s", addr, msg)
	}
	e := Endpoint{Host: host, Port: port}
	typ := clusterv3.Cluster_STATIC
	if !e.IsIP() {
		typ = clusterv3.Cluster_STRICT_DNS
	}
	out := &clusterv3.Cluster{
		Name:                          b.tg,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: typ},
		ConnectTimeout:                durationpb.New(tollgateConnectTimeout),
		TypedExtensionProtocolOptions: b.protocolOptions,
		LoadAssignment:                loadAssignment(b.tg, []Endpoint{e}),
	}
	if err := out.ValidateAll(); err != nil {
		return err
	}
	b.res.Clusters = append(b.res.Clusters, out)
	return nil
}

// typed is one resource with its type URL and name.
type typed struct {
	typeURL string
	name    string
	msg     types.Resource
}

// all returns every resource, sorted by type URL and then name.
func (r *Resources) all() []typed {
	out := make([]typed, 0, len(r.Listeners)+len(r.Routes)+len(r.Clusters)+len(r.Endpoints))
	for _, x := range r.Clusters {
		out = append(out, typed{resource.ClusterType, x.GetName(), x})
	}
	for _, x := range r.Endpoints {
		out = append(out, typed{resource.EndpointType, x.GetClusterName(), x})
	}
	for _, x := range r.Listeners {
		out = append(out, typed{resource.ListenerType, x.GetName(), x})
	}
	for _, x := range r.Routes {
		out = append(out, typed{resource.RouteType, x.GetName(), x})
	}
	slices.SortStableFunc(out, func(a, b typed) int {
		return cmp.Or(strings.Compare(a.typeURL, b.typeURL), strings.Compare(a.name, b.name))
	})
	return out
}

// Version is the first 16 hex digits of the SHA-256 of the deterministic
// encoding of every resource, sorted by type and name: replicas that build
// the same file serve the same version.
func (r *Resources) Version() (string, error) {
	h := sha256.New()
	opts := proto.MarshalOptions{Deterministic: true}
	var buf []byte
	var n [8]byte
	for _, t := range r.all() {
		var err error
		if buf, err = opts.MarshalAppend(buf[:0], t.msg); err != nil {
			return "", fmt.Errorf("encode %s %q: %w", t.typeURL, t.name, err)
		}
		for _, part := range [][]byte{[]byte(t.typeURL), []byte(t.name), buf} {
			binary.BigEndian.PutUint64(n[:], uint64(len(part)))
			h.Write(n[:])
			h.Write(part)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// Snapshot packs the resources into a go-control-plane snapshot, versioned
// by Version, and checks that it is consistent (every RDS and EDS name
// referenced is present, and nothing else).
func (r *Resources) Snapshot() (*cache.Snapshot, error) {
	version, err := r.Version()
	if err != nil {
		return nil, err
	}
	s, err := cache.NewSnapshot(version, map[resource.Type][]types.Resource{
		resource.ListenerType: asResources(r.Listeners),
		resource.RouteType:    asResources(r.Routes),
		resource.ClusterType:  asResources(r.Clusters),
		resource.EndpointType: asResources(r.Endpoints),
	})
	if err != nil {
		return nil, fmt.Errorf("xds snapshot %s: %w", version, err)
	}
	if err := s.Consistent(); err != nil {
		return nil, fmt.Errorf("xds snapshot %s is inconsistent: %w", version, err)
	}
	return s, nil
}

func asResources[T types.Resource](s []T) []types.Resource {
	out := make([]types.Resource, len(s))
	for i, x := range s {
		out[i] = x
	}
	return out
}
