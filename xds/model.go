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
	"net/netip"
	"time"

	"github.com/tollgate-dev/tollgate/internal/yamlstrict"
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

// Error is one problem of a routes file, at its line and column. Parse
// returns every problem of a file together, as yamlstrict.Errors.
type Error = yamlstrict.Error
