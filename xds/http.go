package xds

import (
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tollgate-dev/tollgate/internal/wire"
	"github.com/tollgate-dev/tollgate/internal/yamlstrict"
)

// Reading the HTTP side of a routes file: listeners, virtual hosts, routes
// and their matches, retries and Tollgate settings.

var (
	httpMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
	// Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on conditions.
	retryOns = []string{"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
		"envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes",
		"retriable-headers", "http3-post-connect-failure",
		"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}
	domainRe = regexp.MustCompile(`^[A-Za-z0-9_.:\[\]-]+$`)
)

func (p *parser) listener(n *yaml.Node, refs *clusterRefs) (Listener, bool) {
	l := Listener{Line: n.Line}
	var name named
	var hasAddress bool
	var hostsK, hostsV *yaml.Node
	ok := p.Item(n, "a listener", listenerKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "name":
			name.set(p, v)
		case "address":
			hasAddress = true
			if s, ok := p.NonEmpty(v, key); ok && p.hostPort(v, key, s, true) {
				l.Address = s
			}
		case "tls":
			l.TLS = p.tls(k, v)
		case "virtual_hosts":
			hostsK, hostsV = k, v
		}
	})
	who, ok := name.who(p, ok, n, "listener", nameAllowed)
	if !ok {
		return l, false
	}
	l.Name = name.name
	p.missing(hasAddress, n, who, "address", "ip:port to listen on, e.g. 0.0.0.0:8080")
	if hostsV == nil {
		p.missing(false, n, who, "virtual_hosts", "a list of virtual hosts, each with name, domains and routes")
		return l, false
	}
	hosts := p.List(hostsV, "virtual_hosts", "a list of virtual hosts")
	if len(hosts) == 0 {
		p.Errorf(hostsK, "%s: virtual_hosts is empty (allowed: at least one virtual host)", who)
	}
	domains := map[string]int{}
	l.VirtualHosts = uniqueNames(p, hosts, func(h *yaml.Node) (VirtualHost, bool) { return p.virtualHost(h, who, refs) },
		who+": virtual host", "names must be unique in a listener", func(h *yaml.Node, vh *VirtualHost) bool {
			for _, d := range vh.Domains {
				k := strings.ToLower(d)
				if first, dup := domains[k]; dup {
					p.Errorf(h, "%s: virtual host %q: domain %q is already served by the virtual host at line %d; Envoy requires each domain once per listener", who, vh.Name, d, first)
					continue
				}
				domains[k] = vh.Line
			}
			return true
		})
	return l, true
}

func (p *parser) tls(k, v *yaml.Node) *TLS {
	t := &TLS{}
	p.Mapping(v, "tls", tlsKeys, func(key string, _, v *yaml.Node) {
		switch key {
		case "cert_file":
			t.CertFile, _ = p.NonEmpty(v, key)
		case "key_file":
			t.KeyFile, _ = p.NonEmpty(v, key)
		}
	})
	if t.CertFile == "" || t.KeyFile == "" {
		p.Errorf(k, "tls needs both cert_file and key_file (allowed: the paths of a PEM certificate chain and its private key, as Envoy sees them)")
	}
	return t
}

const domainsAllowed = `host names such as api.example.com, with an optional :port, or one * at the start or end ("*.example.com", "*")`

func (p *parser) virtualHost(n *yaml.Node, parent string, refs *clusterRefs) (VirtualHost, bool) {
	vh := VirtualHost{Line: n.Line}
	var name named
	var domainsK, domainsV, routesK, routesV *yaml.Node
	ok := p.Item(n, "a virtual host", vhostKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "name":
			name.set(p, v)
		case "domains":
			domainsK, domainsV = k, v
		case "routes":
			routesK, routesV = k, v
		}
	})
	who, ok := name.who(p, ok, n, parent+": virtual host", nameAllowed)
	if !ok {
		return vh, false
	}
	vh.Name = name.name
	if domainsV == nil {
		p.missing(false, n, who, "domains", "a list of "+domainsAllowed)
	} else {
		errs := p.NumErrors()
		seen := map[string]int{}
		p.Strings(domainsV, "domains", "a list of "+domainsAllowed, func(item *yaml.Node, d string) {
			switch first, dup := seen[strings.ToLower(d)]; {
			case d == "":
				p.Errorf(item, "%s: a domain is empty (allowed: %s)", who, domainsAllowed)
			case !validDomain(d):
				p.Errorf(item, "%s: domain %q is not valid (allowed: %s)", who, d, domainsAllowed)
			case dup:
				p.Errorf(item, "%s: domain %q is listed twice (first at line %d)", who, d, first)
			default:
				seen[strings.ToLower(d)] = item.Line
				vh.Domains = append(vh.Domains, d)
			}
		})
		if len(vh.Domains) == 0 && p.NumErrors() == errs {
			p.Errorf(domainsK, "%s: domains is empty (allowed: a list of %s)", who, domainsAllowed)
		}
	}
	if routesV == nil {
		p.missing(false, n, who, "routes", "a list of routes, each with match and cluster")
		return vh, true
	}
	routes := p.List(routesV, "routes", "a list of routes")
	if len(routes) == 0 {
		p.Errorf(routesK, "%s has no routes (allowed: a list of at least one route, each with match and cluster)", who)
	}
	vh.Routes = uniqueNames(p, routes, func(rn *yaml.Node) (Route, bool) { return p.route(rn, who, refs) },
		who+": route", "route names must be unique in a virtual host", nil)
	return vh, true
}

// validHeaderName reports whether s is an HTTP header name (an RFC 9110
// token), or a pseudo-header such as :path.
func validHeaderName(s string) bool {
	s = strings.TrimPrefix(s, ":")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && !strings.ContainsRune("!#$%&'*+.^_|~`-", rune(c)) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func validDomain(d string) bool {
	if d == "*" {
		return true
	}
	if strings.Count(d, "*") > 1 {
		return false
	}
	rest := strings.TrimSuffix(strings.TrimPrefix(d, "*"), "*")
	if strings.Contains(rest, "*") || rest == "" {
		return false
	}
	return domainRe.MatchString(rest)
}

func (p *parser) route(n *yaml.Node, parent string, refs *clusterRefs) (Route, bool) {
	r := Route{Line: n.Line, Timeout: DefaultRouteTimeout}
	var c routeCommon
	var retriesK, retriesV, rewriteV, tollgateV *yaml.Node
	ok := p.Item(n, "a route", routeKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "retries":
			retriesK, retriesV = k, v
		case "prefix_rewrite":
			rewriteV = v
		case "tollgate":
			tollgateV = v
		default:
			c.set(p, key, k, v)
		}
	})
	if !ok {
		return r, false
	}
	r.Name = c.name
	who := entryName(parent, "route", r.Name, r.Line)
	r.Match = c.match(p, n, who, matchKeys, "a mapping with one of prefix, path, regex, and optional methods, headers")
	r.Timeout = c.timeout(p, r.Timeout)
	if c.clusterV == nil {
		p.missing(false, n, who, "cluster", "the name of a cluster under clusters")
	} else if s, ok := p.NonEmpty(c.clusterV, "cluster"); ok {
		r.Cluster = s
		refs.lookup(s, c.clusterV, who)
	}
	if retriesV != nil {
		r.Retries = p.retries(retriesK, retriesV, who)
	}
	if rewriteV != nil {
		if s, ok := p.String(rewriteV, "prefix_rewrite"); ok {
			if !strings.HasPrefix(s, "/") {
				p.Errorf(rewriteV, "%s: prefix_rewrite %q does not start with / (allowed: a path prefix such as /invoices)", who, s)
			}
			r.PrefixRewrite = s
		}
	}
	if r.PrefixRewrite != "" && r.Match.Regex != "" {
		p.Errorf(c.matchK, "%s: prefix_rewrite needs a prefix or path match, not regex (allowed: match.prefix or match.path with prefix_rewrite)", who)
	}
	if tollgateV != nil {
		r.Tollgate = p.routeTollgate(tollgateV, who)
	}
	return r, true
}

// routeCommon holds what HTTP and gRPC routes both have, as read: name,
// match, cluster and timeout.
type routeCommon struct {
	name                               string
	matchK, matchV, clusterV, timeoutV *yaml.Node
}

// set records one of the common keys.
func (c *routeCommon) set(p *parser, key string, k, v *yaml.Node) {
	switch key {
	case "name":
		c.name = p.name(v)
	case "match":
		c.matchK, c.matchV = k, v
	case "cluster":
		c.clusterV = v
	case "timeout":
		c.timeoutV = v
	}
}

// match reads the route's match, which must be there.
func (c *routeCommon) match(p *parser, n *yaml.Node, who string, keys *yamlstrict.Keys, allowed string) Match {
	if c.matchV == nil {
		p.missing(false, n, who, "match", allowed)
		return Match{}
	}
	m, _ := p.match(c.matchK, c.matchV, who, keys)
	return m
}

// timeout reads the route's timeout, 0s meaning none; def when absent.
func (c *routeCommon) timeout(p *parser, def time.Duration) time.Duration {
	if c.timeoutV == nil {
		return def
	}
	return p.duration(c.timeoutV, "timeout", def, "none")
}

const regexAllowed = "an RE2 regular expression that the whole path matches"

func (p *parser) match(k, v *yaml.Node, who string, keys *yamlstrict.Keys) (Match, bool) {
	var m Match
	const kinds = "one of prefix, path (exact) or regex (RE2, the whole path)"
	var setBuf [3]string
	set := setBuf[:0]
	var methodsV, headersV *yaml.Node
	p.Mapping(v, "match", keys, func(key string, _, v *yaml.Node) {
		switch key {
		case "prefix", "path":
			s, ok := p.String(v, key)
			if !ok {
				return
			}
			set = append(set, key)
			if !strings.HasPrefix(s, "/") {
				p.Errorf(v, "%s: match %s %q does not start with / (allowed: a path such as /v1/invoices)", who, key, s)
			} else if key == "prefix" {
				m.Prefix = s
			} else {
				m.Path = s
			}
		case "regex":
			s, ok := p.String(v, key)
			if !ok {
				return
			}
			set = append(set, key)
			m.Regex = p.regex(v, s, who)
		case "methods":
			methodsV = v
		case "headers":
			headersV = v
		}
	})
	if methodsV != nil {
		p.Strings(methodsV, "methods", "a list of HTTP methods ("+strings.Join(httpMethods, ", ")+")", func(item *yaml.Node, s string) {
			switch {
			case !slices.Contains(httpMethods, s):
				p.Errorf(item, "%s: method %q is not allowed (allowed: %s)", who, s, strings.Join(httpMethods, ", "))
			case slices.Contains(m.Methods, s):
				p.Errorf(item, "%s: method %q is listed twice", who, s)
			default:
				m.Methods = append(m.Methods, s)
			}
		})
	}
	if headersV != nil {
		p.StringMap(headersV, "headers", "a mapping of header names to exact values", func(k *yaml.Node, name, val string) {
			switch {
			case !validHeaderName(name):
				p.Errorf(k, "%s: header name %q is not valid (allowed: an HTTP header name such as x-api-version)", who, name)
			case strings.EqualFold(name, ":method") && methodsV != nil:
				p.Errorf(k, "%s: header :method and methods both match the method (allowed: one of them)", who)
			default:
				m.Headers = append(m.Headers, HeaderMatch{Name: name, Value: val})
			}
		})
		slices.SortFunc(m.Headers, func(a, b HeaderMatch) int { return strings.Compare(a.Name, b.Name) })
	}
	switch len(set) {
	case 0:
		p.Errorf(k, "%s: match has no path condition (allowed: %s)", who, kinds)
		return m, false
	case 1:
		return m, true
	}
	p.Errorf(k, "%s: match has %s (allowed: %s)", who, strings.Join(set, " and "), kinds)
	return m, false
}

// regex checks a match regex, returning it or "".
func (p *parser) regex(v *yaml.Node, s, who string) string {
	if s == "" {
		p.Errorf(v, "%s: match regex is empty (allowed: %s)", who, regexAllowed)
		return ""
	}
	if _, err := regexp.Compile(s); err != nil {
		p.Errorf(v, "%s: match regex %q does not compile: %s (allowed: %s)", who, s, strings.TrimPrefix(err.Error(), "error parsing regexp: "), regexAllowed)
		return ""
	}
	if n := programSize(s); n > maxRegexProgram {
		p.Errorf(v, "%s: match regex %q is too complex for Envoy: its RE2 program has about %d instructions (allowed: at most %d, Envoy's default re2.max_program_size.error_level; simplify it or use prefix or path)", who, s, n, maxRegexProgram)
		return ""
	}
	return s
}

// maxRegexProgram is Envoy's default limit on the size of a safe regex's
// RE2 program (runtime key re2.max_program_size.error_level); Envoy
// rejects a route configuration with a larger one.
const maxRegexProgram = 100

// programSize estimates RE2's ProgramSize with Go's compiler, which
// follows RE2's.
func programSize(re string) int {
	r, err := syntax.Parse(re, syntax.Perl)
	if err != nil {
		return 0
	}
	prog, err := syntax.Compile(r.Simplify())
	if err != nil {
		return 0
	}
	return len(prog.Inst)
}

func (p *parser) retries(k, v *yaml.Node, who string) *Retries {
	r := &Retries{Attempts: 1}
	hasOn := false
	p.Mapping(v, "retries", retriesKeys, func(key string, _, v *yaml.Node) {
		switch key {
		case "on":
			hasOn = true
			if s, ok := p.NonEmpty(v, key); ok {
				r.On = p.retryOn(v, s, who)
			}
		case "attempts":
			r.Attempts = p.uint32(v, key, r.Attempts, 1, 10)
		case "per_try_timeout":
			r.PerTryTimeout = p.duration(v, key, 0, "")
		}
	})
	if !hasOn {
		p.Errorf(k, "%s: retries needs on (allowed: a comma-separated list of %s)", who, strings.Join(retryOns, ", "))
	}
	return r
}

// retryOn checks a comma-separated list of retry conditions, returning it
// without spaces, or "".
func (p *parser) retryOn(v *yaml.Node, s, who string) string {
	var conds []string
	for c := range strings.SplitSeq(s, ",") {
		c = strings.TrimSpace(c)
		if !slices.Contains(retryOns, c) {
			p.Errorf(v, "%s: retries on %q has the condition %q (allowed: a comma-separated list of %s)", who, s, c, strings.Join(retryOns, ", "))
			return ""
		}
		conds = append(conds, c)
	}
	return strings.Join(conds, ",")
}

func (p *parser) routeTollgate(v *yaml.Node, who string) RouteTollgate {
	var t RouteTollgate
	extAuthz := true
	var extV *yaml.Node
	p.Mapping(v, "tollgate", routeTollgateKeys, func(key string, _, v *yaml.Node) {
		switch key {
		case "ext_authz":
			extV = v
			if b, ok := p.Bool(v, key); ok {
				extAuthz = b
			}
		case "context_extensions":
			p.StringMap(v, key, "a mapping of names to values sent in every Check request of the route", func(_ *yaml.Node, k, val string) {
				if t.ContextExtensions == nil {
					t.ContextExtensions = map[string]string{}
				}
				t.ContextExtensions[k] = val
			})
		case "rate_limits":
			for _, d := range p.List(v, key, "a list of descriptors, each a list of actions") {
				t.RateLimits = append(t.RateLimits, p.descriptor(d, who))
			}
		}
	})
	t.ExtAuthzDisabled = !extAuthz
	if !t.ExtAuthzDisabled {
		return t
	}
	if len(t.ContextExtensions) > 0 {
		p.Errorf(extV, "%s: ext_authz is false, so context_extensions would never be sent (allowed: ext_authz: true with context_extensions, or no context_extensions)", who)
	}
	for _, d := range t.RateLimits {
		for _, a := range d {
			if a.RequestHeader != nil && wire.HasPrefix(a.RequestHeader.Header) {
				p.Errorf(extV, "%s: ext_authz is false, so header %q comes from the client and a rate limit on it could be forged (allowed: ext_authz: true, or rate limits on other headers)", who, a.RequestHeader.Header)
			}
		}
	}
	return t
}

func (p *parser) descriptor(n *yaml.Node, who string) []RateLimitAction {
	const allowed = "a list of actions, each a mapping with one of request_headers: {header, key}, remote_address: {}, generic_key: {value}"
	what := "a rate_limits entry"
	if n.Kind != yaml.SequenceNode {
		what = who + ": " + what // built only for the error
	}
	items := p.List(n, what, allowed)
	if len(items) == 0 {
		if n.Kind == yaml.SequenceNode || yamlstrict.IsNull(n) {
			p.Errorf(n, "%s: a rate_limits entry is empty (allowed: %s)", who, allowed)
		}
		return nil
	}
	var out []RateLimitAction
	for _, a := range items {
		kinds := 0
		var kind string
		var kindK, kindV *yaml.Node
		what := "a rate limit action"
		if a.Kind != yaml.MappingNode {
			what = who + ": " + what // built only for the error
		}
		ok := p.Item(a, what, actionKeys, func(key string, k, v *yaml.Node) {
			kinds++
			kind, kindK, kindV = key, k, v
		})
		switch {
		case !ok:
			continue
		case kinds > 1:
			p.Errorf(a, "%s: a rate limit action has %d kinds (allowed: exactly one of %s; put more actions in the list)", who, kinds, "request_headers, remote_address, generic_key")
			continue
		case kinds == 0:
			if len(a.Content) == 0 {
				p.Errorf(a, "%s: a rate limit action is empty (allowed: a mapping with one of %s)", who, "request_headers, remote_address, generic_key")
			}
			continue
		}
		if action, ok := p.action(kind, kindK, kindV, who); ok {
			out = append(out, action)
		}
	}
	return out
}

// action reads one rate limit action of the given kind.
func (p *parser) action(kind string, k, v *yaml.Node, who string) (RateLimitAction, bool) {
	switch kind {
	case "request_headers":
		rh := &RequestHeaderAction{}
		var hasHeader, hasKey bool
		p.Mapping(v, kind, requestHeaderKeys, func(key string, _, v *yaml.Node) {
			switch key {
			case "header":
				hasHeader = true
				if s, ok := p.NonEmpty(v, key); ok {
					if !validHeaderName(s) {
						p.Errorf(v, "%s: request_headers header %q is not valid (allowed: an HTTP header name such as x-tollgate-consumer or :path)", who, s)
					}
					rh.Header = s
				}
			case "key":
				hasKey = true
				rh.Key, _ = p.NonEmpty(v, key)
			case "skip_if_absent":
				rh.SkipIfAbsent, _ = p.Bool(v, key)
			}
		})
		if !hasHeader || !hasKey {
			p.Errorf(k, "%s: request_headers needs header and key (allowed: {header: <request header>, key: <descriptor key>})", who)
			return RateLimitAction{}, false
		}
		return RateLimitAction{RequestHeader: rh}, true
	case "remote_address":
		p.Mapping(v, kind, noKeys, func(string, *yaml.Node, *yaml.Node) {})
		return RateLimitAction{RemoteAddress: true}, true
	default: // generic_key
		gk := &GenericKeyAction{}
		hasValue := false
		p.Mapping(v, kind, genericKeyKeys, func(key string, _, v *yaml.Node) {
			switch key {
			case "value":
				hasValue = true
				gk.Value, _ = p.NonEmpty(v, key)
			case "key":
				gk.Key, _ = p.NonEmpty(v, key)
			}
		})
		if !hasValue {
			p.Errorf(k, "%s: generic_key needs value (allowed: {value: <descriptor value>, key: <optional descriptor key>})", who)
			return RateLimitAction{}, false
		}
		return RateLimitAction{GenericKey: gk}, true
	}
}
