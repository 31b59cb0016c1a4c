package xds

import (
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Reading the clusters of a routes file.

var (
	lbPolicies = []string{"round_robin", "least_request", "random", "ring_hash", "maglev"}
	protocols  = []string{"http1", "http2"}
)

const endpointsAllowed = "a list of host:port, all IP addresses (served over EDS) or all DNS names (STRICT_DNS)"

func (p *parser) cluster(n *yaml.Node) (Cluster, bool) {
	c := Cluster{Line: n.Line, Protocol: "http1", LBPolicy: "round_robin", ConnectTimeout: DefaultConnectTimeout}
	var name named
	var endpointsK, endpointsV, protocolV, lbV, timeoutV, healthK, healthV *yaml.Node
	ok := p.Item(n, "a cluster", clusterKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "name":
			name.set(p, v)
		case "endpoints":
			endpointsK, endpointsV = k, v
		case "protocol":
			protocolV = v
		case "lb_policy":
			lbV = v
		case "connect_timeout":
			timeoutV = v
		case "health_check":
			healthK, healthV = k, v
		}
	})
	who, ok := name.who(p, ok, n, "cluster", nameAllowed)
	if !ok {
		return c, false
	}
	c.Name = name.name
	if c.Name == DefaultTollgateCluster {
		p.Errorf(n, "%s: the name is reserved for the cluster that reaches Tollgate itself (allowed: any other name)", who)
	}
	if endpointsV == nil {
		p.missing(false, n, who, "endpoints", "a list of host:port, all IP addresses or all DNS names")
	} else {
		c.Endpoints = p.endpoints(endpointsK, endpointsV, who)
	}
	if protocolV != nil {
		c.Protocol = p.enum(protocolV, who+": protocol", c.Protocol, protocols)
	}
	if lbV != nil {
		c.LBPolicy = p.enum(lbV, who+": lb_policy", c.LBPolicy, lbPolicies)
	}
	if timeoutV != nil {
		c.ConnectTimeout = p.duration(timeoutV, "connect_timeout", c.ConnectTimeout, "")
	}
	if healthV != nil {
		c.HealthCheck = p.healthCheck(healthK, healthV, who)
	}
	return c, true
}

func (p *parser) endpoints(k, v *yaml.Node, who string) []Endpoint {
	errs := p.NumErrors()
	seen := map[string]int{}
	var out []Endpoint
	var lines []int
	p.Strings(v, "endpoints", endpointsAllowed, func(item *yaml.Node, s string) {
		e, ok := p.endpoint(item, s, who)
		if !ok {
			return
		}
		key := strings.ToLower(endpointKey(e))
		if first, dup := seen[key]; dup {
			p.Errorf(item, "%s: endpoint %q is listed twice (first at line %d)", who, s, first)
			return
		}
		seen[key] = item.Line
		out = append(out, e)
		lines = append(lines, item.Line)
	})
	for i, e := range out {
		if e.IsIP() != out[0].IsIP() {
			ipLine, dnsLine := lines[0], lines[i]
			if !out[0].IsIP() {
				ipLine, dnsLine = dnsLine, ipLine
			}
			p.ErrorAt(lines[i], 0, "%s: endpoint %q mixes IP addresses (line %d) and DNS names (line %d) (allowed: %s; split them into two clusters)", who, endpointKey(e), ipLine, dnsLine, endpointsAllowed)
			break
		}
	}
	if len(out) == 0 && p.NumErrors() == errs {
		p.Errorf(k, "%s: endpoints is empty (allowed: %s)", who, endpointsAllowed)
	}
	return out
}

// endpointKey is host:port, with brackets around IPv6 addresses.
func endpointKey(e Endpoint) string {
	h := e.Host
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	return h + ":" + strconv.FormatUint(uint64(e.Port), 10)
}

func (p *parser) endpoint(n *yaml.Node, s, who string) (Endpoint, bool) {
	host, port, ok := splitHostPort(s)
	if !ok {
		p.Errorf(n, "%s: endpoint %q is not host:port (allowed: e.g. 10.0.0.5:8080, [fd00::5]:8080 or invoices.internal:8080)", who, s)
		return Endpoint{}, false
	}
	if msg := checkHost(host); msg != "" {
		p.Errorf(n, "%s: endpoint %q: %s", who, s, msg)
		return Endpoint{}, false
	}
	if port == 0 {
		p.Errorf(n, "%s: endpoint %q has port 0 (allowed: a port from 1 to 65535)", who, s)
		return Endpoint{}, false
	}
	return Endpoint{Host: host, Port: port}, true
}

func (p *parser) healthCheck(k, v *yaml.Node, who string) *HealthCheck {
	h := &HealthCheck{Interval: 5 * time.Second, Timeout: time.Second, UnhealthyThreshold: 3, HealthyThreshold: 2}
	hasPath := false
	p.Mapping(v, "health_check", healthCheckKeys, func(key string, _, v *yaml.Node) {
		switch key {
		case "path":
			hasPath = true
			if s, ok := p.NonEmpty(v, key); ok {
				if !strings.HasPrefix(s, "/") {
					p.Errorf(v, "%s: health_check path %q does not start with / (allowed: a path such as /healthz)", who, s)
				}
				h.Path = s
			}
		case "interval":
			h.Interval = p.duration(v, key, h.Interval, "")
		case "timeout":
			h.Timeout = p.duration(v, key, h.Timeout, "")
		case "unhealthy_threshold":
			h.UnhealthyThreshold = p.uint32(v, key, h.UnhealthyThreshold, 1, 1000)
		case "healthy_threshold":
			h.HealthyThreshold = p.uint32(v, key, h.HealthyThreshold, 1, 1000)
		}
	})
	if !hasPath {
		p.Errorf(k, "%s: health_check needs path (allowed: the HTTP path to probe, e.g. /healthz)", who)
	}
	return h
}
