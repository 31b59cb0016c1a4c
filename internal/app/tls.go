package app

import (
	"context"
	"crypto/tls"
	"strings"

	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tollgate-dev/tollgate/internal/config"
	"github.com/tollgate-dev/tollgate/internal/tlsconfig"
)

// listenerTLS loads a listener's certificate files (nil when it serves
// plaintext) and makes its reloader a runner, shown on /status.
func (a *App) listenerTLS(ctx context.Context, c config.ServerTLS, component string, auth tls.ClientAuthType,
	protos []string, reg prometheus.Registerer) (*tlsconfig.Server, error) {
	if !c.Enabled() {
		return nil, nil
	}
	s, err := tlsconfig.New(ctx, tlsconfig.Options{
		Component:  component,
		Files:      tlsconfig.Files{CertFile: c.CertFile, KeyFile: c.KeyFile, ClientCAFile: c.ClientCAFile},
		ClientAuth: auth,
		NextProtos: protos,
		Watch:      true,
		Logger:     a.log.With("component", component),
		Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	a.reloader(component, s.Reloader())
	return s, nil
}

// identityRules maps each gRPC service to the client identities allowed
// to call it (services not in it: any client the handshake accepted).
func identityRules(cfg *config.Config) map[string]tlsconfig.IdentitySet {
	rules := map[string]tlsconfig.IdentitySet{}
	add := func(ids []string, services ...string) {
		if len(ids) == 0 {
			return
		}
		set := tlsconfig.NewIdentitySet(ids)
		for _, s := range services {
			rules[s] = set
		}
	}
	// The access log comes from the Envoys that call Check.
	add(cfg.Authz.AllowedIdentities, authv3.Authorization_ServiceDesc.ServiceName, alsv3.AccessLogService_ServiceDesc.ServiceName)
	add(cfg.RateLimit.AllowedIdentities, rlsv3.RateLimitService_ServiceDesc.ServiceName)
	add(cfg.XDS.AllowedIdentities, discoverygrpc.AggregatedDiscoveryService_ServiceDesc.ServiceName)
	return rules
}

// identityInterceptors refuse (PERMISSION_DENIED) a call to a service
// whose client certificate carries none of the service's allowed
// identities.
func identityInterceptors(rules map[string]tlsconfig.IdentitySet) []grpc.ServerOption {
	check := func(ctx context.Context, method string) error {
		svc, _, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
		allowed, ok := rules[svc]
		if !ok {
			return nil
		}
		var ids []string
		if p, ok := peer.FromContext(ctx); ok {
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
				if allowed.Allows(&ti.State) {
					return nil
				}
				ids = tlsconfig.Identities(&ti.State)
			}
		}
		return status.Errorf(codes.PermissionDenied, "%s: none of the client certificate's identities %q is allowed", svc, ids)
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := check(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := check(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	}
}
