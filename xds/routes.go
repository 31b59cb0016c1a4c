// Package xds turns a declarative routes file into the Envoy resources that
// Tollgate serves over xDS: listeners whose HTTP connection managers already
// call Tollgate's ext_authz and rate limit services, their route
// configurations, clusters and endpoints, and API listeners for proxyless
// gRPC clients.
//
// Parse (or Load) reads and fully validates a file; Build turns it into
// Resources, which cannot fail for a File that Parse accepted; Snapshot
// packs them for go-control-plane's cache under a version that depends only
// on their content, so every replica serving the same file serves the same
// version.
package xds

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"github.com/tollgate-dev/tollgate/internal/wire"
	"github.com/tollgate-dev/tollgate/internal/yamlnode"
	"io"
	"math"
	"net/netip"
	"os"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// File is a routes file as read by Parse, with defaults applied. Line fields
// are the 1-based lines of the entries in the file (0 when built in Go).
type File struct {
	// Name is the file name used in error messages.
	Name         string
	Tollgate     Tollgate
	Listeners    []Listener
	Clusters     []Cluster
	GRPCServices []GRPCService
}

// Tollgate says how Envoy reaches Tollgate's ext_authz and rate limit
// services. Zero fields mean their defaults.
type Tollgate struct {
	// Address is host:port, an IP address or a DNS name (default
	// 127.0.0.1:9191).
	Address string
	// Timeout bounds each ext_authz Check call (default 200ms).
	Timeout time.Duration
	// RateLimitDomain is the domain of Envoy's rate limit requests
	// (default "tollgate").
	RateLimitDomain string
	// RateLimitTimeout bounds each ShouldRateLimit call (default 50ms).
	RateLimitTimeout time.Duration
	// FailureModeAllow lets requests through when the Check call fails;
	// false (the default) answers 503 instead.
	FailureModeAllow bool
	// RequestBody, when set, sends the request body to ext_authz.
	RequestBody *RequestBody
	Line        int
}

// RequestBody is ext_authz's with_request_body.
type RequestBody struct {
	MaxBytes     uint32
	AllowPartial bool
}

// Listener is an Envoy listener: one address, one HTTP connection manager.
type Listener struct {
	Name string
	// Address is ip:port, e.g. 0.0.0.0:8080 or [::]:8443.
	Address      string
	TLS          *TLS
	VirtualHosts []VirtualHost
	Line         int
}

// TLS terminates TLS on a listener with a certificate and key read from
// files by Envoy.
type TLS struct {
	CertFile string
	KeyFile  string
}

// VirtualHost is a set of domains and the routes that serve them.
type VirtualHost struct {
	Name    string
	Domains []string
	Routes  []Route
	Line    int
}

// Route sends the requests that match it to a cluster.
type Route struct {
	Name    string
	Match   Match
	Cluster string
	// Timeout is the whole request's timeout; 0 means none. Parse sets
	// Envoy's default, 15s, when the file gives none.
	Timeout       time.Duration
	Retries       *Retries
	PrefixRewrite string
	Tollgate      RouteTollgate
	Line          int
}

// Match selects requests: exactly one of Prefix, Path (exact) and Regex
// (RE2, whole path), and optionally methods and exact header values.
type Match struct {
	Prefix  string
	Path    string
	Regex   string
	Methods []string
	Headers []HeaderMatch
}

// HeaderMatch matches a request header's exact value.
type HeaderMatch struct {
	Name  string
	Value string
}

// Retries is a route's retry policy.
type Retries struct {
	// On is Envoy's retry_on, e.g. "5xx,reset".
	On            string
	Attempts      uint32
	PerTryTimeout time.Duration
}

// RouteTollgate is what Tollgate does on a route.
type RouteTollgate struct {
	// ExtAuthzDisabled turns the ext_authz filter off for the route
	// (ext_authz: false in the file).
	ExtAuthzDisabled bool
	// ContextExtensions are sent in every Check request of the route.
	ContextExtensions map[string]string
	// RateLimits are Envoy's rate limit configurations: each inner list of
	// actions produces one descriptor.
	RateLimits [][]RateLimitAction
}

// RateLimitAction is one entry of a descriptor; exactly one field is set.
type RateLimitAction struct {
	RequestHeader *RequestHeaderAction
	RemoteAddress bool
	GenericKey    *GenericKeyAction
}

// RequestHeaderAction produces the entry Key=<value of Header>.
type RequestHeaderAction struct {
	Header       string
	Key          string
	SkipIfAbsent bool
}

// GenericKeyAction produces the entry Key=Value (Key defaults to
// generic_key in Envoy).
type GenericKeyAction struct {
	Value string
	Key   string
}

// Cluster is a set of upstream endpoints.
type Cluster struct {
	Name string
	// Endpoints are all IP addresses (served over EDS) or all DNS names
	// (a STRICT_DNS cluster).
	Endpoints []Endpoint
	// Protocol is "http1" (default) or "http2".
	Protocol string
	// LBPolicy is round_robin (default), least_request, random, ring_hash
	// or maglev.
	LBPolicy string
	// ConnectTimeout defaults to 1s.
	ConnectTimeout time.Duration
	HealthCheck    *HealthCheck
	Line           int
}

// Endpoint is one upstream host and port.
type Endpoint struct {
	Host string
	Port uint32
}

// IsIP reports whether the endpoint's host is an IP address.
func (e Endpoint) IsIP() bool {
	_, err := netip.ParseAddr(e.Host)
	return err == nil
}

// DNS reports whether the cluster's endpoints are DNS names.
func (c *Cluster) DNS() bool {
	return len(c.Endpoints) > 0 && !c.Endpoints[0].IsIP()
}

// HealthCheck is an active HTTP health check of a cluster's endpoints.
type HealthCheck struct {
	Path               string
	Interval           time.Duration
	Timeout            time.Duration
	UnhealthyThreshold uint32
	HealthyThreshold   uint32
}

// GRPCService is published to proxyless gRPC clients (grpc-go's xDS
// resolver) as the target xds:///Name.
type GRPCService struct {
	Name string
	// Cluster receives the calls that no route sends elsewhere.
	Cluster string
	Routes  []GRPCRoute
	Line    int
}

// GRPCRoute sends the calls that match it to a cluster.
type GRPCRoute struct {
	Name    string
	Match   Match
	Cluster string
	// Timeout is the route's max_stream_duration; 0 means none.
	Timeout time.Duration
	Line    int
}

// Defaults of the file format.
const (
	DefaultTollgateAddress  = "127.0.0.1:9191"
	DefaultTimeout          = 200 * time.Millisecond
	DefaultRateLimitDomain  = "tollgate"
	DefaultRateLimitTimeout = 50 * time.Millisecond
	DefaultRouteTimeout     = 15 * time.Second
	DefaultConnectTimeout   = time.Second
	// DefaultTollgateCluster is the name of the cluster that reaches
	// Tollgate, when Build is given none. Parse reserves it.
	DefaultTollgateCluster = "tollgate"
)

// Error is one problem of a routes file, at a line (0 when unknown).
type Error = yamlnode.Error

// Load reads and parses the routes file at path.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read routes file: %w", err)
	}
	return Parse(path, b)
}

// Parse reads a routes file; name is used in error messages. All problems
// are reported together (errors.Join of *Error, sorted by line), and then
// the File is nil.
func Parse(name string, b []byte) (*File, error) {
	p := &parser{file: name, steps: maxSteps}
	f := p.parse(b)
	if len(p.errs) > 0 {
		slices.SortStableFunc(p.errs, func(a, b error) int {
			return cmp.Compare(a.(*Error).Line, b.(*Error).Line)
		})
		return nil, errors.Join(p.errs...)
	}
	return f, nil
}

// Limits that keep hostile files (alias bombs) from taking unbounded time.
const (
	maxErrors     = 50
	maxSteps      = 1 << 20 // mapping keys and list items read, aliases expanded
	maxMergeDepth = 8
)

// extensionKeys stands for the top-level keys that start with "x-": they
// are ignored, so that they can hold YAML anchors for the rest of the file.
const extensionKeys = "x-*"

// Keys allowed in each mapping, in the order messages list them.
var (
	rootKeys          = []string{"tollgate", "listeners", "clusters", "grpc_services", extensionKeys}
	tollgateKeys      = []string{"address", "timeout", "ratelimit_domain", "ratelimit_timeout", "failure_mode_allow", "with_request_body"}
	requestBodyKeys   = []string{"max_bytes", "allow_partial"}
	listenerKeys      = []string{"name", "address", "tls", "virtual_hosts"}
	tlsKeys           = []string{"cert_file", "key_file"}
	vhostKeys         = []string{"name", "domains", "routes"}
	routeKeys         = []string{"name", "match", "cluster", "timeout", "retries", "prefix_rewrite", "tollgate"}
	matchKeys         = []string{"prefix", "path", "regex", "methods", "headers"}
	grpcMatchKeys     = []string{"prefix", "path", "regex", "headers"}
	retriesKeys       = []string{"on", "attempts", "per_try_timeout"}
	routeTollgateKeys = []string{"ext_authz", "context_extensions", "rate_limits"}
	actionKeys        = []string{"request_headers", "remote_address", "generic_key"}
	requestHeaderKeys = []string{"header", "key", "skip_if_absent"}
	genericKeyKeys    = []string{"value", "key"}
	clusterKeys       = []string{"name", "endpoints", "protocol", "lb_policy", "connect_timeout", "health_check"}
	healthCheckKeys   = []string{"path", "interval", "timeout", "unhealthy_threshold", "healthy_threshold"}
	grpcServiceKeys   = []string{"name", "cluster", "routes"}
	grpcRouteKeys     = []string{"name", "match", "cluster", "timeout"}
)

// home tells where a misplaced key belongs, for hints.
var home = map[string]string{
	"listeners":          "at the top of the file",
	"clusters":           "at the top of the file",
	"grpc_services":      "at the top of the file",
	"virtual_hosts":      "in a listener",
	"tls":                "in a listener",
	"domains":            "in a virtual host",
	"routes":             "in a virtual host or a grpc_services entry",
	"prefix":             "under a route's match",
	"path":               "under a route's match, or in a health_check",
	"regex":              "under a route's match",
	"methods":            "under a route's match (not in grpc_services routes)",
	"headers":            "under a route's match",
	"ext_authz":          "under a route's tollgate",
	"context_extensions": "under a route's tollgate",
	"rate_limits":        "under a route's tollgate",
	"retries":            "in a route",
	"prefix_rewrite":     "in a route",
	"endpoints":          "in a cluster",
	"lb_policy":          "in a cluster",
	"protocol":           "in a cluster",
	"connect_timeout":    "in a cluster",
	"health_check":       "in a cluster",
	"ratelimit_domain":   "under the top-level tollgate",
	"failure_mode_allow": "under the top-level tollgate",
	"with_request_body":  "under the top-level tollgate",
}

var (
	lbPolicies = []string{"round_robin", "least_request", "random", "ring_hash", "maglev"}
	// grpc-go's xDS client supports only these.
	grpcLBPolicies = []string{"round_robin", "least_request", "ring_hash"}
	protocols      = []string{"http1", "http2"}
	httpMethods    = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
	// Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on conditions.
	retryOns = []string{"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
		"envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes",
		"retriable-headers", "http3-post-connect-failure",
		"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}
)

var (
	nameRe       = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,199}$`)
	headerNameRe = regexp.MustCompile("^:?[0-9a-zA-Z!#$%&'*+.^_|~`-]+$")
	dnsNameRe    = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$`)
	domainRe     = regexp.MustCompile(`^[A-Za-z0-9_.:\[\]-]+$`)
)

const nameAllowed = "a name of letters, digits and _ . : - (at most 200), starting with a letter, digit or _"

type parser struct {
	file  string
	errs  []error
	steps int
	full  bool
}

func (p *parser) errorf(line int, format string, args ...any) {
	if p.full {
		return
	}
	if len(p.errs) == maxErrors {
		p.errs = append(p.errs, &Error{File: p.file, Line: line, Msg: fmt.Sprintf("more than %d errors; stopping", maxErrors)})
		p.full = true
		return
	}
	p.errs = append(p.errs, &Error{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) parse(data []byte) *File {
	f := &File{Name: p.file}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errorf(1, "the file is empty (allowed: a mapping with %s)", allowedKeys(rootKeys))
		} else {
			p.yamlError(err, data)
		}
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.errorf(extra.Line, "a second YAML document starts here (allowed: one document per file)")
	} else if !errors.Is(err, io.EOF) {
		p.yamlError(err, data)
	}
	root := yamlnode.Deref(&doc)
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			p.errorf(1, "the file is empty (allowed: a mapping with %s)", allowedKeys(rootKeys))
			return nil
		}
		root = yamlnode.Deref(root.Content[0])
	}
	if root.Kind != yaml.MappingNode {
		p.errorf(root.Line, "the file is %s (allowed: a mapping with %s)", yamlnode.KindName(root), allowedKeys(rootKeys))
		return nil
	}

	f.Tollgate = Tollgate{
		Address:          DefaultTollgateAddress,
		Timeout:          DefaultTimeout,
		RateLimitDomain:  DefaultRateLimitDomain,
		RateLimitTimeout: DefaultRateLimitTimeout,
		Line:             root.Line,
	}
	var listeners, grpcs []*yaml.Node
	for _, fl := range p.fields(root, rootKeys, 0) {
		switch fl.name {
		case "tollgate":
			p.tollgate(&f.Tollgate, fl)
		case "listeners":
			listeners = p.seq(fl, "a list of listeners")
		case "clusters":
			for _, n := range p.seq(fl, "a list of clusters") {
				if c, ok := p.cluster(n); ok {
					f.Clusters = append(f.Clusters, c)
				}
			}
		case "grpc_services":
			grpcs = p.seq(fl, "a list of gRPC services")
		}
	}
	if p.full {
		return nil
	}
	clusters := make(map[string]*Cluster, len(f.Clusters))
	for i := range f.Clusters {
		c := &f.Clusters[i]
		if first, dup := clusters[c.Name]; dup {
			p.errorf(c.Line, "cluster %q is defined twice (first at line %d); cluster names must be unique", c.Name, first.Line)
			continue
		}
		clusters[c.Name] = c
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range clusters {
			if !yield(n) {
				return
			}
		}
	})
	refs := &clusterRefs{p: p, byName: clusters, names: names}

	seenL := map[string]int{}
	seenAddr := map[string]int{}
	for _, n := range listeners {
		l, ok := p.listener(n, refs)
		if !ok {
			continue
		}
		if !p.firstUse(seenL, l.Name, l.Line, "listener", "listener names must be unique") {
			continue
		}
		if first, dup := seenAddr[l.Address]; dup {
			p.errorf(l.Line, "listener %q: address %q is already used by the listener at line %d", l.Name, l.Address, first)
		}
		seenAddr[l.Address] = l.Line
		f.Listeners = append(f.Listeners, l)
	}
	seenG := map[string]int{}
	for _, n := range grpcs {
		g, ok := p.grpcService(n, refs)
		if !ok {
			continue
		}
		if !p.firstUse(seenG, g.Name, g.Line, "grpc_services entry", "names must be unique") {
			continue
		}
		if first, dup := seenL[g.Name]; dup {
			p.errorf(g.Line, "grpc_services entry %q has the name of the listener at line %d; both are listeners in xDS, so names must differ", g.Name, first)
			continue
		}
		f.GRPCServices = append(f.GRPCServices, g)
	}
	if len(f.Listeners) == 0 && len(f.GRPCServices) == 0 && len(p.errs) == 0 {
		p.errorf(root.Line, "the file defines no listeners and no grpc_services (allowed: at least one of them)")
	}
	return f
}

// clusterRefs resolves the cluster names that routes use.
type clusterRefs struct {
	p      *parser
	byName map[string]*Cluster
	names  []string
}

// lookup returns the named cluster, or reports what refers to it.
func (r *clusterRefs) lookup(name string, line int, who string) *Cluster {
	if c := r.byName[name]; c != nil {
		return c
	}
	if len(r.names) == 0 {
		r.p.errorf(line, "%s: cluster %q is not defined (no clusters are defined; add it under clusters)", who, name)
		return nil
	}
	r.p.errorf(line, "%s: cluster %q is not defined (defined: %s)%s", who, name, listNames(r.names), hint(name, r.names, false))
	return nil
}

func listNames(names []string) string {
	if len(names) > 10 {
		return strings.Join(names[:10], ", ") + fmt.Sprintf(" and %d more", len(names)-10)
	}
	return strings.Join(names, ", ")
}

func (p *parser) tollgate(t *Tollgate, fl field) {
	t.Line = fl.key.Line
	for _, f := range p.mapping(fl, "a mapping with "+strings.Join(tollgateKeys, ", "), tollgateKeys) {
		switch f.name {
		case "address":
			if s, ok := p.nonEmpty(f); ok {
				if _, _, ok := p.hostPort(f, s, false); ok {
					t.Address = s
				}
			}
		case "timeout":
			t.Timeout = p.duration(f, t.Timeout, false)
		case "ratelimit_domain":
			if s, ok := p.nonEmpty(f); ok {
				t.RateLimitDomain = s
			}
		case "ratelimit_timeout":
			t.RateLimitTimeout = p.duration(f, t.RateLimitTimeout, false)
		case "failure_mode_allow":
			t.FailureModeAllow = p.boolean(f, false)
		case "with_request_body":
			rb := &RequestBody{MaxBytes: 8192}
			for _, g := range p.mapping(f, "a mapping with "+strings.Join(requestBodyKeys, ", "), requestBodyKeys) {
				switch g.name {
				case "max_bytes":
					rb.MaxBytes = p.uint32(g, rb.MaxBytes, 1, math.MaxUint32)
				case "allow_partial":
					rb.AllowPartial = p.boolean(g, false)
				}
			}
			t.RequestBody = rb
		}
	}
}

func (p *parser) listener(n *yaml.Node, refs *clusterRefs) (Listener, bool) {
	l := Listener{Line: n.Line}
	fs, ok := p.item(n, "a listener", listenerKeys)
	if !ok {
		return l, false
	}
	var hostsField *field
	for _, f := range fs {
		switch f.name {
		case "name":
			l.Name, _ = p.name(f)
		case "address":
			if s, ok := p.nonEmpty(f); ok {
				if _, _, ok := p.hostPort(f, s, true); ok {
					l.Address = s
				}
			}
		case "tls":
			t := &TLS{}
			for _, g := range p.mapping(f, "a mapping with cert_file and key_file", tlsKeys) {
				switch g.name {
				case "cert_file":
					t.CertFile, _ = p.nonEmpty(g)
				case "key_file":
					t.KeyFile, _ = p.nonEmpty(g)
				}
			}
			if t.CertFile == "" || t.KeyFile == "" {
				p.errorf(f.key.Line, "tls needs both cert_file and key_file (allowed: the paths of a PEM certificate chain and its private key, as Envoy sees them)")
			}
			l.TLS = t
		case "virtual_hosts":
			hostsField = &f
		}
	}
	if l.Name == "" {
		p.missing(fs, n, "name", "listener", nameAllowed)
		return l, false
	}
	who := fmt.Sprintf("listener %q", l.Name)
	if l.Address == "" && !hasField(fs, "address") {
		p.errorf(n.Line, "%s: address is missing (allowed: ip:port to listen on, e.g. 0.0.0.0:8080)", who)
	}
	if hostsField == nil {
		p.errorf(n.Line, "%s: virtual_hosts is missing (allowed: a list of virtual hosts, each with name, domains and routes)", who)
		return l, false
	}
	hosts := p.seq(*hostsField, "a list of virtual hosts")
	if len(hosts) == 0 {
		p.errorf(hostsField.key.Line, "%s: virtual_hosts is empty (allowed: at least one virtual host)", who)
	}
	seen := map[string]int{}
	domains := map[string]int{}
	for _, h := range hosts {
		vh, ok := p.virtualHost(h, who, refs)
		if !ok {
			continue
		}
		if !p.firstUse(seen, vh.Name, vh.Line, who+": virtual host", "names must be unique in a listener") {
			continue
		}
		for _, d := range vh.Domains {
			k := strings.ToLower(d)
			if first, dup := domains[k]; dup {
				p.errorf(vh.Line, "%s: virtual host %q: domain %q is already served by the virtual host at line %d; Envoy requires each domain once per listener", who, vh.Name, d, first)
				continue
			}
			domains[k] = vh.Line
		}
		l.VirtualHosts = append(l.VirtualHosts, vh)
	}
	return l, true
}

func (p *parser) virtualHost(n *yaml.Node, who string, refs *clusterRefs) (VirtualHost, bool) {
	vh := VirtualHost{Line: n.Line}
	fs, ok := p.item(n, "a virtual host", vhostKeys)
	if !ok {
		return vh, false
	}
	var routesField, domainsField *field
	for _, f := range fs {
		switch f.name {
		case "name":
			vh.Name, _ = p.name(f)
		case "domains":
			domainsField = &f
		case "routes":
			routesField = &f
		}
	}
	if vh.Name == "" {
		p.missing(fs, n, "name", who+": virtual host", nameAllowed)
		return vh, false
	}
	who = fmt.Sprintf("%s: virtual host %q", who, vh.Name)
	const domainsAllowed = `host names such as api.example.com, with an optional :port, or one * at the start or end ("*.example.com", "*")`
	if domainsField == nil {
		p.errorf(n.Line, "%s: domains is missing (allowed: a list of %s)", who, domainsAllowed)
	} else {
		errs := len(p.errs)
		seen := map[string]int{}
		for _, d := range p.strList(*domainsField, "a list of "+domainsAllowed) {
			if d.s == "" {
				p.errorf(d.line, "%s: a domain is empty (allowed: %s)", who, domainsAllowed)
				continue
			}
			if !validDomain(d.s) {
				p.errorf(d.line, "%s: domain %q is not valid (allowed: %s)", who, d.s, domainsAllowed)
				continue
			}
			if first, dup := seen[strings.ToLower(d.s)]; dup {
				p.errorf(d.line, "%s: domain %q is listed twice (first at line %d)", who, d.s, first)
				continue
			}
			seen[strings.ToLower(d.s)] = d.line
			vh.Domains = append(vh.Domains, d.s)
		}
		if len(vh.Domains) == 0 && len(p.errs) == errs {
			p.errorf(domainsField.key.Line, "%s: domains is empty (allowed: a list of %s)", who, domainsAllowed)
		}
	}
	if routesField == nil {
		p.errorf(n.Line, "%s: routes is missing (allowed: a list of routes, each with match and cluster)", who)
		return vh, true
	}
	routes := p.seq(*routesField, "a list of routes")
	if len(routes) == 0 {
		p.errorf(routesField.key.Line, "%s has no routes (allowed: a list of at least one route, each with match and cluster)", who)
	}
	seen := map[string]int{}
	for _, rn := range routes {
		r, ok := p.route(rn, who, refs)
		if !ok {
			continue
		}
		if r.Name != "" && !p.firstUse(seen, r.Name, r.Line, who+": route", "route names must be unique in a virtual host") {
			continue
		}
		vh.Routes = append(vh.Routes, r)
	}
	return vh, true
}

// firstUse records name (defined at line) in seen and reports false, with
// an error, when it was defined before: "<what> %q is defined twice (first
// at line N); <rule>".
func (p *parser) firstUse(seen map[string]int, name string, line int, what, rule string) bool {
	if first, dup := seen[name]; dup {
		p.errorf(line, "%s %q is defined twice (first at line %d); %s", what, name, first, rule)
		return false
	}
	seen[name] = line
	return true
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

func routeWho(who string, r *Route) string {
	if r.Name != "" {
		return fmt.Sprintf("%s: route %q", who, r.Name)
	}
	return fmt.Sprintf("%s: route at line %d", who, r.Line)
}

func (p *parser) route(n *yaml.Node, who string, refs *clusterRefs) (Route, bool) {
	r := Route{Line: n.Line, Timeout: DefaultRouteTimeout}
	fs, ok := p.item(n, "a route", routeKeys)
	if !ok {
		return r, false
	}
	for _, f := range fs {
		if f.name == "name" {
			r.Name, _ = p.name(f)
		}
	}
	who = routeWho(who, &r)
	var matchLine int
	var tollgateField *field
	for _, f := range fs {
		switch f.name {
		case "match":
			r.Match, _ = p.match(f, who, matchKeys)
			matchLine = f.key.Line
		case "cluster":
			if s, ok := p.nonEmpty(f); ok {
				r.Cluster = s
				refs.lookup(s, f.val.Line, who)
			}
		case "timeout":
			r.Timeout = p.duration(f, r.Timeout, true)
		case "retries":
			r.Retries = p.retries(f, who)
		case "prefix_rewrite":
			if s, ok := p.str(f); ok {
				if !strings.HasPrefix(s, "/") {
					p.errorf(f.val.Line, "%s: prefix_rewrite %q does not start with / (allowed: a path prefix such as /invoices)", who, s)
				}
				r.PrefixRewrite = s
			}
		case "tollgate":
			tollgateField = &f
		}
	}
	if !hasField(fs, "match") {
		p.errorf(n.Line, "%s: match is missing (allowed: a mapping with one of prefix, path, regex, and optional methods, headers)", who)
	}
	if !hasField(fs, "cluster") {
		p.errorf(n.Line, "%s: cluster is missing (allowed: the name of a cluster under clusters)", who)
	}
	if r.PrefixRewrite != "" && r.Match.Regex != "" {
		p.errorf(matchLine, "%s: prefix_rewrite needs a prefix or path match, not regex (allowed: match.prefix or match.path with prefix_rewrite)", who)
	}
	if tollgateField != nil {
		r.Tollgate = p.routeTollgate(*tollgateField, who)
	}
	return r, true
}

func (p *parser) match(fl field, who string, allowed []string) (Match, bool) {
	var m Match
	const kinds = "one of prefix, path (exact) or regex (RE2, the whole path)"
	fs := p.mapping(fl, "a mapping with "+strings.Join(allowed, ", "), allowed)
	var set []string
	for _, f := range fs {
		switch f.name {
		case "prefix", "path":
			s, ok := p.str(f)
			if !ok {
				continue
			}
			set = append(set, f.name)
			if !strings.HasPrefix(s, "/") {
				p.errorf(f.val.Line, "%s: match %s %q does not start with / (allowed: a path such as /v1/invoices)", who, f.name, s)
				continue
			}
			if f.name == "prefix" {
				m.Prefix = s
			} else {
				m.Path = s
			}
		case "regex":
			s, ok := p.str(f)
			if !ok {
				continue
			}
			set = append(set, f.name)
			if s == "" {
				p.errorf(f.val.Line, "%s: match regex is empty (allowed: an RE2 regular expression that the whole path matches)", who)
				continue
			}
			if _, err := regexp.Compile(s); err != nil {
				p.errorf(f.val.Line, "%s: match regex %q does not compile: %v (allowed: an RE2 regular expression that the whole path matches)", who, s, unwrapRegexErr(err))
				continue
			}
			if n := programSize(s); n > maxRegexProgram {
				p.errorf(f.val.Line, "%s: match regex %q is too complex for Envoy: its RE2 program has about %d instructions (allowed: at most %d, Envoy's default re2.max_program_size.error_level; simplify it or use prefix or path)", who, s, n, maxRegexProgram)
				continue
			}
			m.Regex = s
		case "methods":
			seen := map[string]bool{}
			for _, s := range p.strList(f, "a list of HTTP methods ("+strings.Join(httpMethods, ", ")+")") {
				if !slices.Contains(httpMethods, s.s) {
					p.errorf(s.line, "%s: method %q is not allowed (allowed: %s)", who, s.s, strings.Join(httpMethods, ", "))
					continue
				}
				if seen[s.s] {
					p.errorf(s.line, "%s: method %q is listed twice", who, s.s)
					continue
				}
				seen[s.s] = true
				m.Methods = append(m.Methods, s.s)
			}
		case "headers":
			for _, kv := range p.strMap(f, "a mapping of header names to exact values") {
				if !headerNameRe.MatchString(kv.key) {
					p.errorf(kv.line, "%s: header name %q is not valid (allowed: an HTTP header name such as x-api-version)", who, kv.key)
					continue
				}
				if strings.EqualFold(kv.key, ":method") && hasField(fs, "methods") {
					p.errorf(kv.line, "%s: header :method and methods both match the method (allowed: one of them)", who)
					continue
				}
				m.Headers = append(m.Headers, HeaderMatch{Name: kv.key, Value: kv.val})
			}
			slices.SortFunc(m.Headers, func(a, b HeaderMatch) int { return strings.Compare(a.Name, b.Name) })
		}
	}
	switch len(set) {
	case 0:
		p.errorf(fl.key.Line, "%s: match has no path condition (allowed: %s)", who, kinds)
		return m, false
	case 1:
	default:
		p.errorf(fl.key.Line, "%s: match has %s (allowed: %s)", who, strings.Join(set, " and "), kinds)
		return m, false
	}
	return m, true
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

func unwrapRegexErr(err error) string {
	return strings.TrimPrefix(err.Error(), "error parsing regexp: ")
}

func (p *parser) retries(fl field, who string) *Retries {
	r := &Retries{Attempts: 1}
	fs := p.mapping(fl, "a mapping with on, attempts, per_try_timeout", retriesKeys)
	for _, f := range fs {
		switch f.name {
		case "on":
			s, ok := p.nonEmpty(f)
			if !ok {
				continue
			}
			bad := false
			var conds []string
			for c := range strings.SplitSeq(s, ",") {
				c = strings.TrimSpace(c)
				if !slices.Contains(retryOns, c) {
					p.errorf(f.val.Line, "%s: retries on %q has the condition %q (allowed: a comma-separated list of %s)", who, s, c, strings.Join(retryOns, ", "))
					bad = true
					break
				}
				conds = append(conds, c)
			}
			if !bad {
				r.On = strings.Join(conds, ",")
			}
		case "attempts":
			r.Attempts = p.uint32(f, r.Attempts, 1, 10)
		case "per_try_timeout":
			r.PerTryTimeout = p.duration(f, 0, false)
		}
	}
	if !hasField(fs, "on") {
		p.errorf(fl.key.Line, "%s: retries needs on (allowed: a comma-separated list of %s)", who, strings.Join(retryOns, ", "))
	}
	return r
}

func (p *parser) routeTollgate(fl field, who string) RouteTollgate {
	var t RouteTollgate
	extAuthz := true
	var extLine int
	fs := p.mapping(fl, "a mapping with "+strings.Join(routeTollgateKeys, ", "), routeTollgateKeys)
	for _, f := range fs {
		switch f.name {
		case "ext_authz":
			extAuthz = p.boolean(f, true)
			extLine = f.val.Line
		case "context_extensions":
			kvs := p.strMap(f, "a mapping of names to values sent in every Check request of the route")
			if len(kvs) > 0 {
				t.ContextExtensions = make(map[string]string, len(kvs))
			}
			for _, kv := range kvs {
				t.ContextExtensions[kv.key] = kv.val
			}
		case "rate_limits":
			for _, d := range p.seq(f, "a list of descriptors, each a list of actions") {
				t.RateLimits = append(t.RateLimits, p.descriptor(d, who))
			}
		}
	}
	t.ExtAuthzDisabled = !extAuthz
	if t.ExtAuthzDisabled {
		if len(t.ContextExtensions) > 0 {
			p.errorf(extLine, "%s: ext_authz is false, so context_extensions would never be sent (allowed: ext_authz: true with context_extensions, or no context_extensions)", who)
		}
		for _, d := range t.RateLimits {
			for _, a := range d {
				if a.RequestHeader != nil && wire.HasPrefix(a.RequestHeader.Header) {
					p.errorf(extLine, "%s: ext_authz is false, so header %q comes from the client and a rate limit on it could be forged (allowed: ext_authz: true, or rate limits on other headers)", who, a.RequestHeader.Header)
				}
			}
		}
	}
	return t
}

func (p *parser) descriptor(n *yaml.Node, who string) []RateLimitAction {
	const allowed = "a list of actions, each a mapping with one of request_headers: {header, key}, remote_address: {}, generic_key: {value}"
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, "%s: a rate_limits entry is %s (allowed: %s)", who, yamlnode.KindName(n), allowed)
		return nil
	}
	items := p.items(n)
	if len(items) == 0 {
		p.errorf(n.Line, "%s: a rate_limits entry is empty (allowed: %s)", who, allowed)
		return nil
	}
	var out []RateLimitAction
	for _, a := range items {
		if a.Kind != yaml.MappingNode {
			p.errorf(a.Line, "%s: a rate limit action is %s (allowed: a mapping with one of %s)", who, yamlnode.KindName(a), strings.Join(actionKeys, ", "))
			continue
		}
		fs := p.fields(a, actionKeys, 0)
		if len(fs) != 1 {
			if len(fs) > 1 {
				p.errorf(a.Line, "%s: a rate limit action has %d kinds (allowed: exactly one of %s; put more actions in the list)", who, len(fs), strings.Join(actionKeys, ", "))
			} else if len(a.Content) == 0 {
				p.errorf(a.Line, "%s: a rate limit action is empty (allowed: a mapping with one of %s)", who, strings.Join(actionKeys, ", "))
			}
			continue
		}
		f := fs[0]
		switch f.name {
		case "request_headers":
			rh := &RequestHeaderAction{}
			gs := p.mapping(f, "a mapping with header, key and optional skip_if_absent", requestHeaderKeys)
			for _, g := range gs {
				switch g.name {
				case "header":
					if s, ok := p.nonEmpty(g); ok {
						if !headerNameRe.MatchString(s) {
							p.errorf(g.val.Line, "%s: request_headers header %q is not valid (allowed: an HTTP header name such as x-tollgate-consumer or :path)", who, s)
						}
						rh.Header = s
					}
				case "key":
					rh.Key, _ = p.nonEmpty(g)
				case "skip_if_absent":
					rh.SkipIfAbsent = p.boolean(g, false)
				}
			}
			if !hasField(gs, "header") || !hasField(gs, "key") {
				p.errorf(f.key.Line, "%s: request_headers needs header and key (allowed: {header: <request header>, key: <descriptor key>})", who)
				continue
			}
			out = append(out, RateLimitAction{RequestHeader: rh})
		case "remote_address":
			p.mapping(f, "an empty mapping {}", nil)
			out = append(out, RateLimitAction{RemoteAddress: true})
		case "generic_key":
			gk := &GenericKeyAction{}
			gs := p.mapping(f, "a mapping with value and optional key", genericKeyKeys)
			for _, g := range gs {
				switch g.name {
				case "value":
					gk.Value, _ = p.nonEmpty(g)
				case "key":
					gk.Key, _ = p.nonEmpty(g)
				}
			}
			if !hasField(gs, "value") {
				p.errorf(f.key.Line, "%s: generic_key needs value (allowed: {value: <descriptor value>, key: <optional descriptor key>})", who)
				continue
			}
			out = append(out, RateLimitAction{GenericKey: gk})
		}
	}
	return out
}

func (p *parser) cluster(n *yaml.Node) (Cluster, bool) {
	c := Cluster{Line: n.Line, Protocol: "http1", LBPolicy: "round_robin", ConnectTimeout: DefaultConnectTimeout}
	fs, ok := p.item(n, "a cluster", clusterKeys)
	if !ok {
		return c, false
	}
	for _, f := range fs {
		if f.name == "name" {
			c.Name, _ = p.name(f)
		}
	}
	if c.Name == "" {
		p.missing(fs, n, "name", "cluster", nameAllowed)
		return c, false
	}
	if c.Name == DefaultTollgateCluster {
		p.errorf(n.Line, "cluster %q: the name is reserved for the cluster that reaches Tollgate itself (allowed: any other name)", c.Name)
	}
	who := fmt.Sprintf("cluster %q", c.Name)
	for _, f := range fs {
		switch f.name {
		case "endpoints":
			const allowed = "a list of host:port, all IP addresses (served over EDS) or all DNS names (STRICT_DNS)"
			errs := len(p.errs)
			seen := map[string]int{}
			var lines []int
			for _, s := range p.strList(f, allowed) {
				e, ok := p.endpoint(s, who)
				if !ok {
					continue
				}
				k := strings.ToLower(endpointKey(e))
				if first, dup := seen[k]; dup {
					p.errorf(s.line, "%s: endpoint %q is listed twice (first at line %d)", who, s.s, first)
					continue
				}
				seen[k] = s.line
				c.Endpoints = append(c.Endpoints, e)
				lines = append(lines, s.line)
			}
			for i, e := range c.Endpoints {
				if e.IsIP() != c.Endpoints[0].IsIP() {
					ipLine, dnsLine := lines[0], lines[i]
					if !c.Endpoints[0].IsIP() {
						ipLine, dnsLine = dnsLine, ipLine
					}
					p.errorf(lines[i], "%s: endpoint %q mixes IP addresses (line %d) and DNS names (line %d) (allowed: %s; split them into two clusters)", who, endpointKey(e), ipLine, dnsLine, allowed)
					break
				}
			}
			if len(c.Endpoints) == 0 && len(p.errs) == errs {
				p.errorf(f.key.Line, "%s: endpoints is empty (allowed: %s)", who, allowed)
			}
		case "protocol":
			c.Protocol = p.enum(f, c.Protocol, protocols, who)
		case "lb_policy":
			c.LBPolicy = p.enum(f, c.LBPolicy, lbPolicies, who)
		case "connect_timeout":
			c.ConnectTimeout = p.duration(f, c.ConnectTimeout, false)
		case "health_check":
			c.HealthCheck = p.healthCheck(f, who)
		}
	}
	if !hasField(fs, "endpoints") {
		p.errorf(n.Line, "%s: endpoints is missing (allowed: a list of host:port, all IP addresses or all DNS names)", who)
	}
	return c, true
}

// endpointKey is host:port, with brackets around IPv6 addresses.
func endpointKey(e Endpoint) string {
	h := e.Host
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	return h + ":" + strconv.FormatUint(uint64(e.Port), 10)
}

func (p *parser) endpoint(s strAt, who string) (Endpoint, bool) {
	host, port, ok := splitHostPort(s.s)
	if !ok {
		p.errorf(s.line, "%s: endpoint %q is not host:port (allowed: e.g. 10.0.0.5:8080, [fd00::5]:8080 or invoices.internal:8080)", who, s.s)
		return Endpoint{}, false
	}
	if msg := checkHost(host); msg != "" {
		p.errorf(s.line, "%s: endpoint %q: %s", who, s.s, msg)
		return Endpoint{}, false
	}
	if port == 0 {
		p.errorf(s.line, "%s: endpoint %q has port 0 (allowed: a port from 1 to 65535)", who, s.s)
		return Endpoint{}, false
	}
	return Endpoint{Host: host, Port: port}, true
}

func (p *parser) healthCheck(fl field, who string) *HealthCheck {
	h := &HealthCheck{Interval: 5 * time.Second, Timeout: time.Second, UnhealthyThreshold: 3, HealthyThreshold: 2}
	fs := p.mapping(fl, "a mapping with "+strings.Join(healthCheckKeys, ", "), healthCheckKeys)
	for _, f := range fs {
		switch f.name {
		case "path":
			if s, ok := p.nonEmpty(f); ok {
				if !strings.HasPrefix(s, "/") {
					p.errorf(f.val.Line, "%s: health_check path %q does not start with / (allowed: a path such as /healthz)", who, s)
				}
				h.Path = s
			}
		case "interval":
			h.Interval = p.duration(f, h.Interval, false)
		case "timeout":
			h.Timeout = p.duration(f, h.Timeout, false)
		case "unhealthy_threshold":
			h.UnhealthyThreshold = p.uint32(f, h.UnhealthyThreshold, 1, 1000)
		case "healthy_threshold":
			h.HealthyThreshold = p.uint32(f, h.HealthyThreshold, 1, 1000)
		}
	}
	if !hasField(fs, "path") {
		p.errorf(fl.key.Line, "%s: health_check needs path (allowed: the HTTP path to probe, e.g. /healthz)", who)
	}
	return h
}

func (p *parser) grpcService(n *yaml.Node, refs *clusterRefs) (GRPCService, bool) {
	g := GRPCService{Line: n.Line}
	fs, ok := p.item(n, "a gRPC service", grpcServiceKeys)
	if !ok {
		return g, false
	}
	for _, f := range fs {
		if f.name == "name" {
			g.Name, _ = p.name(f)
		}
	}
	if g.Name == "" {
		p.missing(fs, n, "name", "grpc_services entry", "the xds:/// target name of the service, e.g. payments.example; "+nameAllowed)
		return g, false
	}
	who := fmt.Sprintf("grpc_services entry %q", g.Name)
	var routesField *field
	for _, f := range fs {
		switch f.name {
		case "cluster":
			if s, ok := p.nonEmpty(f); ok {
				g.Cluster = s
				p.grpcCluster(refs, s, f.val.Line, who)
			}
		case "routes":
			routesField = &f
		}
	}
	if routesField == nil {
		if g.Cluster == "" && !hasField(fs, "cluster") {
			p.errorf(n.Line, "%s: cluster is missing (allowed: the cluster that receives the calls, or routes each with a cluster)", who)
		}
		return g, true
	}
	routes := p.seq(*routesField, "a list of routes, each with match and cluster")
	if len(routes) == 0 {
		p.errorf(routesField.key.Line, "%s: routes is empty (allowed: leave routes out to send every call to cluster, or list at least one route)", who)
	}
	seen := map[string]int{}
	for _, rn := range routes {
		r, ok := p.grpcRoute(rn, who, g.Cluster, refs)
		if !ok {
			continue
		}
		if r.Name != "" && !p.firstUse(seen, r.Name, r.Line, who+": route", "route names must be unique") {
			continue
		}
		g.Routes = append(g.Routes, r)
	}
	return g, true
}

// grpcCluster checks that a cluster used by proxyless gRPC clients is one
// grpc-go can use.
func (p *parser) grpcCluster(refs *clusterRefs, name string, line int, who string) {
	c := refs.lookup(name, line, who)
	if c == nil {
		return
	}
	if c.DNS() {
		p.errorf(line, "%s: cluster %q has DNS endpoints, which proxyless gRPC clients cannot use (allowed: a cluster of IP endpoints, served over EDS)", who, name)
	}
	if !slices.Contains(grpcLBPolicies, c.LBPolicy) {
		p.errorf(line, "%s: cluster %q has lb_policy %q, which grpc-go does not support (allowed: %s)", who, name, c.LBPolicy, strings.Join(grpcLBPolicies, ", "))
	}
}

func (p *parser) grpcRoute(n *yaml.Node, who, defaultCluster string, refs *clusterRefs) (GRPCRoute, bool) {
	r := GRPCRoute{Line: n.Line, Cluster: defaultCluster}
	fs, ok := p.item(n, "a route", grpcRouteKeys)
	if !ok {
		return r, false
	}
	for _, f := range fs {
		if f.name == "name" {
			r.Name, _ = p.name(f)
		}
	}
	if r.Name != "" {
		who = fmt.Sprintf("%s: route %q", who, r.Name)
	} else {
		who = fmt.Sprintf("%s: route at line %d", who, r.Line)
	}
	for _, f := range fs {
		switch f.name {
		case "match":
			r.Match, _ = p.match(f, who, grpcMatchKeys)
		case "cluster":
			if s, ok := p.nonEmpty(f); ok {
				r.Cluster = s
				p.grpcCluster(refs, s, f.val.Line, who)
			}
		case "timeout":
			r.Timeout = p.duration(f, 0, true)
		}
	}
	if !hasField(fs, "match") {
		p.errorf(n.Line, "%s: match is missing (allowed: a mapping with one of prefix, path, regex, and optional headers)", who)
	}
	if r.Cluster == "" && !hasField(fs, "cluster") {
		p.errorf(n.Line, "%s: cluster is missing, and the service has no cluster (allowed: the name of a cluster under clusters)", who)
	}
	return r, true
}

// ---- YAML helpers ----

// yamlError records a YAML syntax error with its line.
func (p *parser) yamlError(err error, data []byte) {
	line, msg := yamlnode.SyntaxLine(err, data)
	p.errorf(line, "invalid YAML: %s", msg)
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

type field struct {
	name     string
	key, val *yaml.Node
}

func hasField(fs []field, name string) bool {
	return slices.ContainsFunc(fs, func(f field) bool { return f.name == name })
}

// missing reports a required field that is absent or empty; an empty one
// was already reported by its reader.
func (p *parser) missing(fs []field, n *yaml.Node, name, what, allowed string) {
	if !hasField(fs, name) {
		p.errorf(n.Line, "%s: %s is missing (allowed: %s)", what, name, allowed)
	}
}

// step charges n units of work, and reports when the budget runs out.
func (p *parser) step(n int, line int) bool {
	if p.steps -= n; p.steps < 0 {
		if !p.full {
			p.errorf(line, "the file expands to more than %d keys and items (aliases and merge keys expanded)", maxSteps)
			p.full = true
		}
		return false
	}
	return !p.full
}

// fields returns a mapping's fields, with "<<" merge keys expanded
// (explicit keys win), reporting repeated and unknown keys.
func (p *parser) fields(m *yaml.Node, allowed []string, mergeDepth int) []field {
	if !p.step(len(m.Content)/2, m.Line) {
		return nil
	}
	var out []field
	var merges []*yaml.Node
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := yamlnode.Deref(m.Content[i]), m.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.errorf(k.Line, "a key is %s (allowed: %s)", yamlnode.KindName(k), allowedKeys(allowed))
			continue
		}
		if k.ShortTag() == "!!merge" {
			merges = append(merges, v)
			continue
		}
		if j := slices.IndexFunc(out, func(f field) bool { return f.name == k.Value }); j >= 0 {
			p.errorf(k.Line, "key %q is repeated (first at line %d); each key may appear once", k.Value, out[j].key.Line)
			continue
		}
		if strings.HasPrefix(k.Value, "x-") && slices.Contains(allowed, extensionKeys) {
			continue // a place for YAML anchors, ignored
		}
		if !slices.Contains(allowed, k.Value) {
			p.errorf(k.Line, "unknown key %q (allowed: %s)%s", k.Value, allowedKeys(allowed), hint(k.Value, allowed, true))
			continue
		}
		out = append(out, field{k.Value, k, v})
	}
	for _, mv := range merges {
		if mergeDepth >= maxMergeDepth {
			p.errorf(mv.Line, "merge keys (<<) nest more than %d deep", maxMergeDepth)
			break
		}
		mv = yamlnode.Deref(mv)
		srcs := []*yaml.Node{mv}
		if mv.Kind == yaml.SequenceNode {
			srcs = mv.Content
		}
		for _, src := range srcs {
			src = yamlnode.Deref(src)
			if src.Kind != yaml.MappingNode {
				p.errorf(src.Line, "a merge key (<<) takes %s (allowed: a mapping or a list of mappings)", yamlnode.KindName(src))
				continue
			}
			for _, f := range p.fields(src, allowed, mergeDepth+1) {
				if !hasField(out, f.name) {
					out = append(out, f)
				}
			}
		}
	}
	return out
}

func allowedKeys(allowed []string) string {
	if len(allowed) == 0 {
		return "no keys"
	}
	s := strings.Join(allowed, ", ")
	return strings.Replace(s, extensionKeys, "x-... (ignored, a place for YAML anchors)", 1)
}

// hint suggests where a misplaced key belongs, or which allowed name a
// misspelt one meant.
func hint(key string, allowed []string, isKey bool) string {
	if isKey {
		if where, ok := home[key]; ok {
			return fmt.Sprintf("; %q belongs %s", key, where)
		}
	}
	best, bestDist := "", 3
	for _, a := range allowed {
		if a == extensionKeys {
			continue
		}
		if d := yamlnode.EditDistance(key, a); d < bestDist {
			best, bestDist = a, d
		}
	}
	if best != "" {
		return fmt.Sprintf("; did you mean %q?", best)
	}
	return ""
}

// mapping reads a field whose value must be a mapping; null reads as an
// empty mapping.
func (p *parser) mapping(f field, allowed string, keys []string) []field {
	v := yamlnode.Deref(f.val)
	if isNull(v) {
		return nil
	}
	if v.Kind != yaml.MappingNode {
		p.errorf(v.Line, "%s is %s (allowed: %s)", f.name, yamlnode.KindName(v), allowed)
		return nil
	}
	return p.fields(v, keys, 0)
}

// item reads a list item that must be a mapping.
func (p *parser) item(n *yaml.Node, what string, keys []string) ([]field, bool) {
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, "%s is %s (allowed: a mapping with %s)", what, yamlnode.KindName(n), strings.Join(keys, ", "))
		return nil, false
	}
	return p.fields(n, keys, 0), true
}

// seq reads a field whose value must be a list; null reads as empty. The
// items come back dereferenced.
func (p *parser) seq(f field, allowed string) []*yaml.Node {
	v := yamlnode.Deref(f.val)
	if isNull(v) {
		return nil
	}
	if v.Kind != yaml.SequenceNode {
		p.errorf(v.Line, "%s is %s (allowed: %s)", f.name, yamlnode.KindName(v), allowed)
		return nil
	}
	return p.items(v)
}

func (p *parser) items(v *yaml.Node) []*yaml.Node {
	if !p.step(len(v.Content), v.Line) {
		return nil
	}
	out := make([]*yaml.Node, len(v.Content))
	for i, n := range v.Content {
		out[i] = yamlnode.Deref(n)
	}
	return out
}

type strAt struct {
	s    string
	line int
}

func (p *parser) strList(f field, allowed string) []strAt {
	var out []strAt
	for _, n := range p.seq(f, allowed) {
		if s, ok := p.scalar(n, "an item of "+f.name, allowed); ok {
			out = append(out, strAt{s, n.Line})
		}
	}
	return out
}

type keyVal struct {
	key, val string
	line     int
}

// strMap reads a mapping of strings to strings, in file order.
func (p *parser) strMap(f field, allowed string) []keyVal {
	v := yamlnode.Deref(f.val)
	if isNull(v) {
		return nil
	}
	if v.Kind != yaml.MappingNode {
		p.errorf(v.Line, "%s is %s (allowed: %s)", f.name, yamlnode.KindName(v), allowed)
		return nil
	}
	if !p.step(len(v.Content)/2, v.Line) {
		return nil
	}
	var out []keyVal
	seen := map[string]int{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		kn, vn := yamlnode.Deref(v.Content[i]), yamlnode.Deref(v.Content[i+1])
		k, ok := p.scalar(kn, "a key of "+f.name, allowed)
		if !ok {
			continue
		}
		if kn.ShortTag() == "!!merge" {
			p.errorf(kn.Line, "%s: merge keys (<<) are not supported here (allowed: %s)", f.name, allowed)
			continue
		}
		if k == "" {
			p.errorf(kn.Line, "%s has an empty key (allowed: %s)", f.name, allowed)
			continue
		}
		if first, dup := seen[k]; dup {
			p.errorf(kn.Line, "%s: key %q is repeated (first at line %d)", f.name, k, first)
			continue
		}
		seen[k] = kn.Line
		val, ok := p.scalar(vn, fmt.Sprintf("%s %q", f.name, k), allowed)
		if !ok {
			continue
		}
		out = append(out, keyVal{k, val, kn.Line})
	}
	return out
}

// scalar reads a scalar as text (numbers and booleans as written; null as
// ""), refusing control characters.
func (p *parser) scalar(n *yaml.Node, what, allowed string) (string, bool) {
	n = yamlnode.Deref(n)
	if n.Kind != yaml.ScalarNode {
		p.errorf(n.Line, "%s is %s (allowed: %s)", what, yamlnode.KindName(n), allowed)
		return "", false
	}
	if isNull(n) {
		return "", true
	}
	if !utf8.ValidString(n.Value) || strings.ContainsFunc(n.Value, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		p.errorf(n.Line, "%s %q contains a control character or invalid UTF-8 (allowed: printable text)", what, n.Value)
		return "", false
	}
	return n.Value, true
}

func (p *parser) str(f field) (string, bool) {
	return p.scalar(f.val, f.name, "a string")
}

// nonEmpty reads a string that may not be empty.
func (p *parser) nonEmpty(f field) (string, bool) {
	s, ok := p.str(f)
	if ok && s == "" {
		p.errorf(f.val.Line, "%s is empty (allowed: a non-empty string)", f.name)
		return "", false
	}
	return s, ok && s != ""
}

func (p *parser) name(f field) (string, bool) {
	s, ok := p.str(f)
	if !ok {
		return "", false
	}
	if !nameRe.MatchString(s) {
		p.errorf(f.val.Line, "name %q is not valid (allowed: %s)", s, nameAllowed)
		return "", false
	}
	return s, true
}

func (p *parser) enum(f field, def string, allowed []string, who string) string {
	s, ok := p.str(f)
	if !ok {
		return def
	}
	if !slices.Contains(allowed, s) {
		p.errorf(f.val.Line, "%s: %s %q is not allowed (allowed: %s)%s", who, f.name, s, strings.Join(allowed, ", "), hint(s, allowed, false))
		return def
	}
	return s
}

func (p *parser) boolean(f field, def bool) bool {
	v := yamlnode.Deref(f.val)
	var b bool
	if v.Kind != yaml.ScalarNode || isNull(v) || v.ShortTag() != "!!bool" || v.Decode(&b) != nil {
		p.errorf(v.Line, "%s is %s (allowed: true, false)", f.name, yamlnode.KindName(v))
		return def
	}
	return b
}

func (p *parser) uint32(f field, def uint32, lo, hi uint64) uint32 {
	v := yamlnode.Deref(f.val)
	var u uint64
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || v.Decode(&u) != nil || u < lo || u > hi {
		p.errorf(v.Line, "%s is %s (allowed: a whole number from %d to %d)", f.name, yamlnode.KindName(v), lo, hi)
		return def
	}
	return uint32(u)
}

// duration reads a Go duration such as 200ms or 15s; zero is allowed only
// when zeroOK (it then means "no timeout").
func (p *parser) duration(f field, def time.Duration, zeroOK bool) time.Duration {
	allowed := "a duration above 0 such as 200ms, 15s or 1m"
	if zeroOK {
		allowed = "a duration such as 200ms, 15s or 1m, or 0s for none"
	}
	v := yamlnode.Deref(f.val)
	if v.Kind != yaml.ScalarNode || isNull(v) {
		p.errorf(v.Line, "%s is %s (allowed: %s)", f.name, yamlnode.KindName(v), allowed)
		return def
	}
	d, err := time.ParseDuration(v.Value)
	if err != nil && v.Value == "0" {
		d, err = 0, nil
	}
	switch {
	case err != nil:
		p.errorf(v.Line, "%s %q is not a duration (allowed: %s)", f.name, v.Value, allowed)
		return def
	case d < 0, d == 0 && !zeroOK:
		p.errorf(v.Line, "%s %q is out of range (allowed: %s)", f.name, v.Value, allowed)
		return def
	}
	return d
}

// hostPort checks host:port; a listener needs an IP address.
func (p *parser) hostPort(f field, s string, listen bool) (string, uint32, bool) {
	allowed := "host:port, e.g. 127.0.0.1:9191 or tollgate.internal:9191"
	if listen {
		allowed = "ip:port to listen on, e.g. 0.0.0.0:8080 or [::]:8080"
	}
	host, port, ok := splitHostPort(s)
	if !ok {
		p.errorf(f.val.Line, "%s %q is not host:port (allowed: %s)", f.name, s, allowed)
		return "", 0, false
	}
	if port == 0 {
		p.errorf(f.val.Line, "%s %q has port 0 (allowed: a port from 1 to 65535)", f.name, s)
		return "", 0, false
	}
	if listen {
		if a, err := netip.ParseAddr(host); err != nil || a.Zone() != "" {
			p.errorf(f.val.Line, "%s %q does not have an IP address (allowed: %s)", f.name, s, allowed)
			return "", 0, false
		}
		return host, port, true
	}
	if msg := checkHost(host); msg != "" {
		p.errorf(f.val.Line, "%s %q: %s", f.name, s, msg)
		return "", 0, false
	}
	return host, port, true
}

// checkHost returns what is wrong with an upstream host, or "".
func checkHost(host string) string {
	if a, err := netip.ParseAddr(host); err == nil {
		if a.IsUnspecified() {
			return fmt.Sprintf("%s is not an address to connect to (allowed: the address of a host)", host)
		}
		if a.Zone() != "" {
			return "IPv6 zones are not supported (allowed: an address without %zone)"
		}
		return ""
	}
	if len(host) > 253 || !dnsNameRe.MatchString(host) {
		return fmt.Sprintf("host %q is neither an IP address nor a DNS name (allowed: e.g. 10.0.0.5 or invoices.internal)", host)
	}
	return ""
}

// splitHostPort splits host:port or [v6]:port, with a decimal port.
func splitHostPort(s string) (string, uint32, bool) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", 0, false
	}
	host, ps := s[:i], s[i+1:]
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") {
			return "", 0, false
		}
		host = host[1 : len(host)-1]
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return "", 0, false
		}
	} else if strings.ContainsAny(host, "[]:") {
		return "", 0, false
	}
	if host == "" || ps == "" || len(ps) > 5 || strings.TrimLeft(ps, "0123456789") != "" {
		return "", 0, false
	}
	port, err := strconv.ParseUint(ps, 10, 32)
	if err != nil || port > 65535 {
		return "", 0, false
	}
	return host, uint32(port), true
}
