package xds

import (
	"fmt"
	"math"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tollgate-dev/tollgate/internal/yamlstrict"
)

// Load reads and parses the routes file at path.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read routes file: %w", err)
	}
	return Parse(path, b)
}

// Parse reads a routes file; name is used in error messages. All problems
// are reported together (yamlstrict.Errors, sorted by line), and then the
// File is nil.
func Parse(name string, b []byte) (*File, error) {
	p := &parser{Decoder: yamlstrict.NewDecoder(name)}
	p.Home = home
	p.Printable = true // values reach Envoy: no tabs or line breaks
	f := p.parse(b)
	if err := p.Err(); err != nil {
		return nil, err
	}
	return f, nil
}

// Keys allowed in each mapping, in the order messages list them.
var (
	rootKeys          = yamlstrict.NewKeys("tollgate", "listeners", "clusters", "grpc_services", yamlstrict.ExtensionKeys)
	tollgateKeys      = yamlstrict.NewKeys("address", "timeout", "ratelimit_domain", "ratelimit_timeout", "failure_mode_allow", "with_request_body")
	requestBodyKeys   = yamlstrict.NewKeys("max_bytes", "allow_partial")
	listenerKeys      = yamlstrict.NewKeys("name", "address", "tls", "virtual_hosts")
	tlsKeys           = yamlstrict.NewKeys("cert_file", "key_file")
	vhostKeys         = yamlstrict.NewKeys("name", "domains", "routes")
	routeKeys         = yamlstrict.NewKeys("name", "match", "cluster", "timeout", "retries", "prefix_rewrite", "tollgate")
	matchKeys         = yamlstrict.NewKeys("prefix", "path", "regex", "methods", "headers")
	grpcMatchKeys     = yamlstrict.NewKeys("prefix", "path", "regex", "headers")
	retriesKeys       = yamlstrict.NewKeys("on", "attempts", "per_try_timeout")
	routeTollgateKeys = yamlstrict.NewKeys("ext_authz", "context_extensions", "rate_limits")
	actionKeys        = yamlstrict.NewKeys("request_headers", "remote_address", "generic_key")
	requestHeaderKeys = yamlstrict.NewKeys("header", "key", "skip_if_absent")
	genericKeyKeys    = yamlstrict.NewKeys("value", "key")
	noKeys            = yamlstrict.NewKeys()
	clusterKeys       = yamlstrict.NewKeys("name", "endpoints", "protocol", "lb_policy", "connect_timeout", "health_check")
	healthCheckKeys   = yamlstrict.NewKeys("path", "interval", "timeout", "unhealthy_threshold", "healthy_threshold")
	grpcServiceKeys   = yamlstrict.NewKeys("name", "cluster", "routes")
	grpcRouteKeys     = yamlstrict.NewKeys("name", "match", "cluster", "timeout")
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
	dnsNameRe = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$`)
)

// validName reports whether s is nameAllowed.
func validName(s string) bool {
	if s == "" || len(s) > 200 || !isAlnum(s[0]) && s[0] != '_' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && !strings.ContainsRune("_.:-", rune(c)) {
			return false
		}
	}
	return true
}

const nameAllowed = "a name of letters, digits and _ . : - (at most 200), starting with a letter, digit or _"

// parser reads one routes file into a File.
type parser struct {
	*yamlstrict.Decoder
}

func (p *parser) parse(data []byte) *File {
	root := p.Document(data, rootKeys.Allowed(), false)
	if root == nil {
		return nil
	}
	f := &File{Name: p.File()}
	f.Tollgate = Tollgate{
		Address:          DefaultTollgateAddress,
		Timeout:          DefaultTimeout,
		RateLimitDomain:  DefaultRateLimitDomain,
		RateLimitTimeout: DefaultRateLimitTimeout,
		Line:             root.Line,
	}
	var listeners, grpcs []*yaml.Node
	p.Mapping(root, "the file", rootKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "tollgate":
			p.tollgate(&f.Tollgate, k, v)
		case "listeners":
			listeners = p.List(v, key, "a list of listeners")
		case "clusters":
			for _, n := range p.List(v, key, "a list of clusters") {
				if c, ok := p.cluster(n); ok {
					f.Clusters = append(f.Clusters, c)
				}
			}
		case "grpc_services":
			grpcs = p.List(v, key, "a list of gRPC services")
		}
	})
	if p.Stopped() {
		return nil
	}
	refs := p.clusterRefs(f.Clusters)

	byName := map[string]int{} // listener name -> line
	byAddr := map[string]int{}
	f.Listeners = uniqueNames(p, listeners, func(n *yaml.Node) (Listener, bool) { return p.listener(n, refs) },
		"listener", "listener names must be unique", func(n *yaml.Node, l *Listener) bool {
			if first, dup := byAddr[l.Address]; dup {
				p.Errorf(n, "listener %q: address %q is already used by the listener at line %d", l.Name, l.Address, first)
			}
			byAddr[l.Address], byName[l.Name] = l.Line, l.Line
			return true
		})
	f.GRPCServices = uniqueNames(p, grpcs, func(n *yaml.Node) (GRPCService, bool) { return p.grpcService(n, refs) },
		"grpc_services entry", "names must be unique", func(n *yaml.Node, g *GRPCService) bool {
			if first, dup := byName[g.Name]; dup {
				p.Errorf(n, "grpc_services entry %q has the name of the listener at line %d; both are listeners in xDS, so names must differ", g.Name, first)
				return false
			}
			return true
		})
	if len(f.Listeners) == 0 && len(f.GRPCServices) == 0 && p.NumErrors() == 0 {
		p.Errorf(root, "the file defines no listeners and no grpc_services (allowed: at least one of them)")
	}
	return f
}

func (p *parser) tollgate(t *Tollgate, k, v *yaml.Node) {
	t.Line = k.Line
	p.Mapping(v, "tollgate", tollgateKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "address":
			if s, ok := p.NonEmpty(v, key); ok && p.hostPort(v, key, s, false) {
				t.Address = s
			}
		case "timeout":
			t.Timeout = p.duration(v, key, t.Timeout, "")
		case "ratelimit_domain":
			if s, ok := p.NonEmpty(v, key); ok {
				t.RateLimitDomain = s
			}
		case "ratelimit_timeout":
			t.RateLimitTimeout = p.duration(v, key, t.RateLimitTimeout, "")
		case "failure_mode_allow":
			t.FailureModeAllow, _ = p.Bool(v, key)
		case "with_request_body":
			rb := &RequestBody{MaxBytes: 8192}
			p.Mapping(v, key, requestBodyKeys, func(key string, _, v *yaml.Node) {
				switch key {
				case "max_bytes":
					rb.MaxBytes = p.uint32(v, key, rb.MaxBytes, 1, math.MaxUint32)
				case "allow_partial":
					rb.AllowPartial, _ = p.Bool(v, key)
				}
			})
			t.RequestBody = rb
		}
	})
}

// clusterRefs resolves the cluster names that routes use.
type clusterRefs struct {
	p      *parser
	byName map[string]*Cluster
	names  []string
}

// clusterRefs indexes the clusters by name, reporting names defined twice.
func (p *parser) clusterRefs(cs []Cluster) *clusterRefs {
	r := &clusterRefs{p: p, byName: make(map[string]*Cluster, len(cs))}
	for i := range cs {
		c := &cs[i]
		if first, dup := r.byName[c.Name]; dup {
			p.ErrorAt(c.Line, 0, "cluster %q is defined twice (first at line %d); cluster names must be unique", c.Name, first.Line)
			continue
		}
		r.byName[c.Name] = c
		r.names = append(r.names, c.Name)
	}
	slices.Sort(r.names)
	return r
}

// lookup returns the named cluster, or reports what refers to it.
func (r *clusterRefs) lookup(name string, at *yaml.Node, who string) *Cluster {
	if c := r.byName[name]; c != nil {
		return c
	}
	if len(r.names) == 0 {
		r.p.Errorf(at, "%s: cluster %q is not defined (no clusters are defined; add it under clusters)", who, name)
		return nil
	}
	r.p.Errorf(at, "%s: cluster %q is not defined (defined: %s)%s", who, name, listNames(r.names), yamlstrict.Hint(name, r.names))
	return nil
}

func listNames(names []string) string {
	if len(names) > 10 {
		return strings.Join(names[:10], ", ") + fmt.Sprintf(" and %d more", len(names)-10)
	}
	return strings.Join(names, ", ")
}

// entry is what uniqueNames reads: a listener, virtual host, route or
// gRPC service.
type entry interface {
	Listener | VirtualHost | Route | GRPCService | GRPCRoute
}

// uniqueNames reads each item of a list with read, and keeps the entries
// whose name no entry before took (what and rule word the error; an
// unnamed route is always kept) and that keep, if not nil, accepts.
func uniqueNames[T entry](p *parser, items []*yaml.Node, read func(*yaml.Node) (T, bool), what, rule string, keep func(*yaml.Node, *T) bool) []T {
	seen := map[string]int{}
	var out []T
	for _, n := range items {
		e, ok := read(n)
		if !ok {
			continue
		}
		out = append(out, e)
		last := &out[len(out)-1] // checked in place, not copied to the heap
		if name := entryNameOf(last); name != "" && !p.firstUse(seen, name, n, what, rule) ||
			keep != nil && !keep(n, last) {
			out = out[:len(out)-1]
		}
	}
	return out
}

func entryNameOf[T entry](e *T) string {
	switch e := any(e).(type) {
	case *Listener:
		return e.Name
	case *VirtualHost:
		return e.Name
	case *Route:
		return e.Name
	case *GRPCService:
		return e.Name
	case *GRPCRoute:
		return e.Name
	}
	return ""
}

// firstUse records name (defined at n) in seen and reports false, with an
// error, when it was defined before: "<what> %q is defined twice (first at
// line N); <rule>".
func (p *parser) firstUse(seen map[string]int, name string, n *yaml.Node, what, rule string) bool {
	if first, dup := seen[name]; dup {
		p.Errorf(n, "%s %q is defined twice (first at line %d); %s", what, name, first, rule)
		return false
	}
	seen[name] = n.Line
	return true
}

// missing reports a required key that the mapping n does not have.
func (p *parser) missing(set bool, n *yaml.Node, what, key, allowed string) {
	if !set {
		p.Errorf(n, "%s: %s is missing (allowed: %s)", what, key, allowed)
	}
}

// named is the name of a listener, virtual host, cluster or gRPC service
// as read: it must be given.
type named struct {
	name  string
	given bool
}

func (e *named) set(p *parser, v *yaml.Node) { e.given, e.name = true, p.name(v) }

// who returns how messages call the entry read from n (`<what> "<name>"`),
// or false when it was not read or, reported, has no name.
func (e *named) who(p *parser, read bool, n *yaml.Node, what, allowed string) (string, bool) {
	if !read {
		return "", false
	}
	if e.name == "" {
		p.missing(e.given, n, what, "name", allowed)
		return "", false
	}
	return fmt.Sprintf("%s %q", what, e.name), true
}

// entryName names an entry in messages: by its name, else by its line.
func entryName(parent, what, name string, line int) string {
	if name != "" {
		return fmt.Sprintf("%s: %s %q", parent, what, name)
	}
	return fmt.Sprintf("%s: %s at line %d", parent, what, line)
}

func (p *parser) name(v *yaml.Node) string {
	s, ok := p.String(v, "name")
	if !ok {
		return ""
	}
	if !validName(s) {
		p.Errorf(v, "name %q is not valid (allowed: %s)", s, nameAllowed)
		return ""
	}
	return s
}

// duration reads a duration, or returns def when it is not valid; zero
// says what 0s means ("" when it is not allowed).
func (p *parser) duration(v *yaml.Node, what string, def time.Duration, zero string) time.Duration {
	if d, ok := p.Duration(v, what, zero); ok {
		return d
	}
	return def
}

func (p *parser) uint32(v *yaml.Node, what string, def, lo, hi uint32) uint32 {
	if u, ok := p.Uint32(v, what, lo, hi); ok {
		return u
	}
	return def
}

func (p *parser) enum(v *yaml.Node, what, def string, allowed []string) string {
	if s, ok := p.Enum(v, what, allowed); ok {
		return s
	}
	return def
}

// hostPort checks host:port; a listener needs an IP address.
func (p *parser) hostPort(v *yaml.Node, what, s string, listen bool) bool {
	allowed := "host:port, e.g. 127.0.0.1:9191 or tollgate.internal:9191"
	if listen {
		allowed = "ip:port to listen on, e.g. 0.0.0.0:8080 or [::]:8080"
	}
	host, port, ok := splitHostPort(s)
	if !ok {
		p.Errorf(v, "%s %q is not host:port (allowed: %s)", what, s, allowed)
		return false
	}
	if port == 0 {
		p.Errorf(v, "%s %q has port 0 (allowed: a port from 1 to 65535)", what, s)
		return false
	}
	if listen {
		if a, err := netip.ParseAddr(host); err != nil || a.Zone() != "" {
			p.Errorf(v, "%s %q does not have an IP address (allowed: %s)", what, s, allowed)
			return false
		}
		return true
	}
	if msg := checkHost(host); msg != "" {
		p.Errorf(v, "%s %q: %s", what, s, msg)
		return false
	}
	return true
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
