package xds

import (
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Reading the grpc_services of a routes file: services for proxyless gRPC
// clients.

// grpcLBPolicies are the lb_policy values grpc-go's xDS client supports.
var grpcLBPolicies = []string{"round_robin", "least_request", "ring_hash"}

func (p *parser) grpcService(n *yaml.Node, refs *clusterRefs) (GRPCService, bool) {
	g := GRPCService{Line: n.Line}
	var name named
	var clusterV, routesK, routesV *yaml.Node
	ok := p.Item(n, "a gRPC service", grpcServiceKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "name":
			name.set(p, v)
		case "cluster":
			clusterV = v
		case "routes":
			routesK, routesV = k, v
		}
	})
	who, ok := name.who(p, ok, n, "grpc_services entry", "the xds:/// target name of the service, e.g. payments.example; "+nameAllowed)
	if !ok {
		return g, false
	}
	g.Name = name.name
	if clusterV != nil {
		if s, ok := p.NonEmpty(clusterV, "cluster"); ok {
			g.Cluster = s
			p.grpcCluster(refs, s, clusterV, who)
		}
	}
	if routesV == nil {
		p.missing(clusterV != nil, n, who, "cluster", "the cluster that receives the calls, or routes each with a cluster")
		return g, true
	}
	routes := p.List(routesV, "routes", "a list of routes, each with match and cluster")
	if len(routes) == 0 {
		p.Errorf(routesK, "%s: routes is empty (allowed: leave routes out to send every call to cluster, or list at least one route)", who)
	}
	g.Routes = uniqueNames(p, routes, func(rn *yaml.Node) (GRPCRoute, bool) { return p.grpcRoute(rn, who, g.Cluster, refs) },
		who+": route", "route names must be unique", nil)
	return g, true
}

// grpcCluster checks that a cluster used by proxyless gRPC clients is one
// grpc-go can use.
func (p *parser) grpcCluster(refs *clusterRefs, name string, at *yaml.Node, who string) {
	c := refs.lookup(name, at, who)
	if c == nil {
		return
	}
	if c.DNS() {
		p.Errorf(at, "%s: cluster %q has DNS endpoints, which proxyless gRPC clients cannot use (allowed: a cluster of IP endpoints, served over EDS)", who, name)
	}
	if !slices.Contains(grpcLBPolicies, c.LBPolicy) {
		p.Errorf(at, "%s: cluster %q has lb_policy %q, which grpc-go does not support (allowed: %s)", who, name, c.LBPolicy, strings.Join(grpcLBPolicies, ", "))
	}
}

func (p *parser) grpcRoute(n *yaml.Node, parent, defaultCluster string, refs *clusterRefs) (GRPCRoute, bool) {
	r := GRPCRoute{Line: n.Line, Cluster: defaultCluster}
	var c routeCommon
	ok := p.Item(n, "a route", grpcRouteKeys, func(key string, k, v *yaml.Node) { c.set(p, key, k, v) })
	if !ok {
		return r, false
	}
	r.Name = c.name
	who := entryName(parent, "route", r.Name, r.Line)
	r.Match = c.match(p, n, who, grpcMatchKeys, "a mapping with one of prefix, path, regex, and optional headers")
	r.Timeout = c.timeout(p, 0)
	if c.clusterV != nil {
		if s, ok := p.NonEmpty(c.clusterV, "cluster"); ok {
			r.Cluster = s
			p.grpcCluster(refs, s, c.clusterV, who)
		}
	} else if defaultCluster == "" {
		p.Errorf(n, "%s: cluster is missing, and the service has no cluster (allowed: the name of a cluster under clusters)", who)
	}
	return r, true
}
