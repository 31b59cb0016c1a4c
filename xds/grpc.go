package xds

import (
	"fmt"
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
	var hasName bool
	var clusterV, routesK, routesV *yaml.Node
	ok := p.Item(n, "a gRPC service", grpcServiceKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "name":
			hasName, g.Name = true, p.name(v)
		case "cluster":
			clusterV = v
		case "routes":
			routesK, routesV = k, v
		}
	})
	if !ok {
		return g, false
	}
	if g.Name == "" {
		p.missing(hasName, n, "grpc_services entry", "name", "the xds:/// target name of the service, e.g. payments.example; "+nameAllowed)
		return g, false
	}
	who := fmt.Sprintf("grpc_services entry %q", g.Name)
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
	seen := map[string]int{}
	for _, rn := range routes {
		r, ok := p.grpcRoute(rn, who, g.Cluster, refs)
		if !ok {
			continue
		}
		if r.Name != "" && !p.firstUse(seen, r.Name, rn, who+": route", "route names must be unique") {
			continue
		}
		g.Routes = append(g.Routes, r)
	}
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
	var matchK, matchV, clusterV, timeoutV *yaml.Node
	ok := p.Item(n, "a route", grpcRouteKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "name":
			r.Name = p.name(v)
		case "match":
			matchK, matchV = k, v
		case "cluster":
			clusterV = v
		case "timeout":
			timeoutV = v
		}
	})
	if !ok {
		return r, false
	}
	who := entryName(parent, "route", r.Name, r.Line)
	if matchV == nil {
		p.missing(false, n, who, "match", "a mapping with one of prefix, path, regex, and optional headers")
	} else {
		r.Match, _ = p.match(matchK, matchV, who, grpcMatchKeys)
	}
	if clusterV != nil {
		if s, ok := p.NonEmpty(clusterV, "cluster"); ok {
			r.Cluster = s
			p.grpcCluster(refs, s, clusterV, who)
		}
	} else if defaultCluster == "" {
		p.Errorf(n, "%s: cluster is missing, and the service has no cluster (allowed: the name of a cluster under clusters)", who)
	}
	if timeoutV != nil {
		r.Timeout = p.duration(timeoutV, "timeout", 0, "none")
	}
	return r, true
}
