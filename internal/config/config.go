// Package config reads and validates Tollgate's YAML configuration file.
//
// Decoding is strict: an unknown key is an error that names it and its line.
// Validation runs completely before anything starts, so a server is never
// built from a half-valid file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole Tollgate configuration file.
type Config struct {
	GRPC   GRPC   `yaml:"grpc"`
	Admin  Admin  `yaml:"admin"`
	Log    Log    `yaml:"log"`
	Policy Policy `yaml:"policy"`
	Authz  Authz  `yaml:"authz"`
	Store  Store  `yaml:"store"`
	// RateLimit is the rate limit service (RLS) for Envoy's ratelimit filter.
	RateLimit RateLimit `yaml:"ratelimit"`
	// XDS is the control plane pushing routes files to Envoys.
	XDS XDS `yaml:"xds"`
	// ShutdownTimeout bounds how long in-flight calls may drain after SIGTERM.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
}

// GRPC is the listener that serves ext_authz (and, later, the rate limit
// service and xDS) plus the gRPC health service.
type GRPC struct {
	Address    string `yaml:"address"`
	Reflection *bool  `yaml:"reflection"`
}

// ReflectionEnabled reports whether gRPC server reflection is on (default true,
// so grpcurl works without proto files).
func (g GRPC) ReflectionEnabled() bool { return g.Reflection == nil || *g.Reflection }

// Admin is the HTTP listener for /metrics, /healthz, /readyz and /status,
// and the admin API (accounts and credits) when a token is set.
type Admin struct {
	Address string `yaml:"address"`
	// Token is the admin API's bearer token; TokenFile reads it from a
	// file (a Kubernetes secret). Neither set: the admin API is off.
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
}

// RateLimit configures the rate limit service, served on the gRPC
// listener: envoyproxy/ratelimit configuration files, used unchanged.
type RateLimit struct {
	// Address gives the rate limit service a listener of its own
	// (default: grpc.address).
	Address string `yaml:"address"`
	// ConfigPaths are .yaml/.yml files or directories of them.
	ConfigPaths []string `yaml:"config_paths"`
	// Watch reloads them when they change (default true).
	Watch *bool `yaml:"watch"`
	// Decision, when set, is a Rego rule path (such as
	// "tollgate/ratelimit") giving plan-aware limits per descriptor.
	Decision string `yaml:"decision"`
	// FailureMode of the files' limits when the store fails: open (OK,
	// default) or closed (gRPC UNAVAILABLE: Envoy's failure_mode_deny).
	FailureMode string `yaml:"failure_mode"`
}

// WatchEnabled reports whether the files are watched (default true).
func (r RateLimit) WatchEnabled() bool { return r.Watch == nil || *r.Watch }

// XDS serves Envoy (and proxyless gRPC) configuration from routes files,
// over ADS on the gRPC listener.
type XDS struct {
	// Address gives the xDS server a listener of its own (default:
	// grpc.address).
	Address string `yaml:"address"`
	// RoutesFile is served to every node whose cluster has no fleet file.
	RoutesFile string `yaml:"routes_file"`
	// Fleets maps an Envoy node's cluster to its own routes file.
	Fleets map[string]string `yaml:"fleets"`
	// Watch pushes changes to connected Envoys (default true).
	Watch *bool `yaml:"watch"`
}

// Enabled reports whether any routes file is configured.
func (x XDS) Enabled() bool { return x.RoutesFile != "" || len(x.Fleets) > 0 }

// WatchEnabled reports whether the files are watched (default true).
func (x XDS) WatchEnabled() bool { return x.Watch == nil || *x.Watch }

// Files returns fleet → file, the default fleet under "".
func (x XDS) Files() map[string]string {
	m := make(map[string]string, len(x.Fleets)+1)
	for k, v := range x.Fleets {
		m[k] = v
	}
	if x.RoutesFile != "" {
		m[""] = x.RoutesFile
	}
	return m
}

// Store is where counters and balances live.
type Store struct {
	// Kind is memory (one replica, not durable; the default) or redis.
	Kind   string      `yaml:"kind"`
	Memory MemoryStore `yaml:"memory"`
	Redis  RedisStore  `yaml:"redis"`
}

// MemoryStore settings.
type MemoryStore struct {
	MaxKeys int `yaml:"max_keys"`
}

// RedisStore settings: one address for a single node, several for a
// Cluster, master_name for Sentinel.
type RedisStore struct {
	Addrs        []string `yaml:"addrs"`
	MasterName   string   `yaml:"master_name"`
	Username     string   `yaml:"username"`
	Password     string   `yaml:"password"`
	PasswordFile string   `yaml:"password_file"`
	DB           int      `yaml:"db"`
	PoolSize     int      `yaml:"pool_size"`
	Timeout      Duration `yaml:"timeout"`
	TLS          TLS      `yaml:"tls"`
}

// TLS for the Redis connection.
type TLS struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Log selects the slog handler.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Policy says where Rego policies and data come from and what to query.
type Policy struct {
	// Paths are .rego/.json/.yaml files, directories, or OPA bundles
	// (.tar.gz). Empty means the embedded demo policy.
	Paths []string `yaml:"paths"`
	// Decision is the path of the ext_authz decision, e.g. "tollgate/decision"
	// or "envoy/authz/allow" for opa-envoy-plugin policies.
	Decision string `yaml:"decision"`
	// Watch reloads policies when their files change (default true).
	Watch *bool `yaml:"watch"`
}

// WatchEnabled reports whether files are watched (default true).
func (p Policy) WatchEnabled() bool { return p.Watch == nil || *p.Watch }

// Authz tunes the ext_authz service.
type Authz struct {
	// DenyStatus is the HTTP status sent when the decision is undefined,
	// invalid, or the policy failed at run time (default 403).
	DenyStatus int `yaml:"deny_status"`
}

// Duration is a time.Duration written as a Go duration string ("10s").
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: want a duration such as \"10s\" or \"500ms\", got %q", n.Line, n.Value)
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: want a non-negative duration such as \"10s\" or \"500ms\", got %q", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// Defaults for an empty or absent configuration file.
const (
	DefaultGRPCAddress     = "127.0.0.1:9191"
	DefaultAdminAddress    = "127.0.0.1:9192"
	DefaultDecision        = "tollgate/decision"
	DefaultDenyStatus      = 403
	DefaultShutdownTimeout = Duration(10 * time.Second)
)

// Default returns the configuration `tollgate serve` uses without --config:
// the embedded demo policy, loopback listeners.
func Default() *Config {
	c := &Config{}
	c.applyDefaults()
	return c
}

func (c *Config) applyDefaults() {
	if c.GRPC.Address == "" {
		c.GRPC.Address = DefaultGRPCAddress
	}
	if c.Admin.Address == "" {
		c.Admin.Address = DefaultAdminAddress
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	if c.Policy.Decision == "" {
		c.Policy.Decision = DefaultDecision
	}
	if c.Authz.DenyStatus == 0 {
		c.Authz.DenyStatus = DefaultDenyStatus
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Store.Kind == "" {
		c.Store.Kind = "memory"
	}
	if c.RateLimit.FailureMode == "" {
		c.RateLimit.FailureMode = "open"
	}
	if c.Store.Memory.MaxKeys == 0 {
		c.Store.Memory.MaxKeys = 1_000_000
	}
	if c.Store.Redis.Timeout == 0 {
		c.Store.Redis.Timeout = DefaultRedisTimeout
	}
}

// DefaultRedisTimeout bounds each Redis call, well under Envoy's 200 ms
// ext_authz timeout.
const DefaultRedisTimeout = Duration(50 * time.Millisecond)

// Load reads, strictly decodes and validates the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes and validates a configuration document. Unknown keys are
// errors naming the key and its line.
func Parse(b []byte) (*Config, error) {
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, cleanYAMLError(err)
	}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// cleanYAMLError turns yaml.v3's "field x not found in type config.Policy"
// into a message a user can act on.
func cleanYAMLError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, m := range te.Errors {
		if i := strings.Index(m, ": field "); i >= 0 && strings.Contains(m, " not found in type ") {
			field := m[i+len(": field ") : strings.Index(m, " not found in type ")]
			typ := m[strings.LastIndex(m, ".")+1:]
			m = fmt.Sprintf("%s: unknown key %q in %s (allowed: %s)", m[:i], field, sectionName(typ), strings.Join(allowedKeys(typ), ", "))
		}
		msgs = append(msgs, m)
	}
	return errors.New(strings.Join(msgs, "; "))
}

func sectionName(typ string) string {
	switch typ {
	case "Config":
		return "the top level"
	case "MemoryStore":
		return "store.memory"
	case "RedisStore":
		return "store.redis"
	case "TLS":
		return "store.redis.tls"
	case "RateLimit":
		return "ratelimit"
	case "XDS":
		return "xds"
	}
	return strings.ToLower(typ)
}

func allowedKeys(typ string) []string {
	switch typ {
	case "Config":
		return []string{"grpc", "admin", "log", "policy", "authz", "store", "ratelimit", "xds", "shutdown_timeout"}
	case "XDS":
		return []string{"address", "routes_file", "fleets", "watch"}
	case "RateLimit":
		return []string{"address", "config_paths", "watch", "decision", "failure_mode"}
	case "GRPC":
		return []string{"address", "reflection"}
	case "Admin":
		return []string{"address", "token", "token_file"}
	case "Store":
		return []string{"kind", "memory", "redis"}
	case "MemoryStore":
		return []string{"max_keys"}
	case "RedisStore":
		return []string{"addrs", "master_name", "username", "password", "password_file", "db", "pool_size", "timeout", "tls"}
	case "TLS":
		return []string{"enabled", "ca_file", "cert_file", "key_file", "server_name", "insecure_skip_verify"}
	case "Log":
		return []string{"level", "format"}
	case "Policy":
		return []string{"paths", "decision", "watch"}
	case "Authz":
		return []string{"deny_status"}
	}
	return nil
}

// Validate checks every field and reports all problems at once.
func (c *Config) Validate() error {
	var errs []error
	if err := validAddress(c.GRPC.Address); err != nil {
		errs = append(errs, fmt.Errorf("grpc.address: %w", err))
	}
	if err := validAddress(c.Admin.Address); err != nil {
		errs = append(errs, fmt.Errorf("admin.address: %w", err))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: %q is not a level (allowed: debug, info, warn, error)", c.Log.Level))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log.format: %q is not a format (allowed: text, json)", c.Log.Format))
	}
	if err := ValidDecisionPath(c.Policy.Decision); err != nil {
		errs = append(errs, fmt.Errorf("policy.decision: %w", err))
	}
	for i, p := range c.Policy.Paths {
		if strings.TrimSpace(p) == "" {
			errs = append(errs, fmt.Errorf("policy.paths[%d]: empty path (want a .rego/.json/.yaml file, a directory or a .tar.gz bundle)", i))
		}
	}
	if s := c.Authz.DenyStatus; s < 400 || s > 599 {
		errs = append(errs, fmt.Errorf("authz.deny_status: %d is not an error status (allowed: 400-599)", s))
	}
	if c.Admin.Token != "" && c.Admin.TokenFile != "" {
		errs = append(errs, errors.New("admin: set token or token_file, not both"))
	}
	errs = append(errs, c.Store.validate()...)
	for field, addr := range map[string]string{"ratelimit.address": c.RateLimit.Address, "xds.address": c.XDS.Address} {
		if addr != "" {
			if err := validAddress(addr); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", field, err))
			}
		}
	}
	switch c.RateLimit.FailureMode {
	case "open", "closed":
	default:
		errs = append(errs, fmt.Errorf("ratelimit.failure_mode: %q is not a failure mode (allowed: open, closed)", c.RateLimit.FailureMode))
	}
	if c.RateLimit.Decision != "" {
		if err := ValidDecisionPath(c.RateLimit.Decision); err != nil {
			errs = append(errs, fmt.Errorf("ratelimit.decision: %w", err))
		}
	}
	for fleet, f := range c.XDS.Fleets {
		if fleet == "" || strings.TrimSpace(f) == "" {
			errs = append(errs, fmt.Errorf("xds.fleets: %q: %q (want a node cluster name and a routes file)", fleet, f))
		}
	}
	for i, p := range c.RateLimit.ConfigPaths {
		if strings.TrimSpace(p) == "" {
			errs = append(errs, fmt.Errorf("ratelimit.config_paths[%d]: empty path (want a .yaml file or a directory of them)", i))
		}
	}
	return errors.Join(errs...)
}

// ValidDecisionPath checks a slash-separated decision path such as
// "tollgate/decision".
func ValidDecisionPath(p string) error {
	if p == "" {
		return errors.New(`empty (want a slash-separated rule path such as "tollgate/decision" or "envoy/authz/allow")`)
	}
	for _, seg := range strings.Split(strings.Trim(p, "/"), "/") {
		if seg == "" || !isIdent(seg) {
			return fmt.Errorf("%q is not a rule path (want identifiers separated by \"/\", such as \"tollgate/decision\")", p)
		}
	}
	return nil
}

func isIdent(s string) bool {
	for i, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

func validAddress(a string) error {
	_, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("%q is not host:port (for example %q)", a, DefaultGRPCAddress)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %q is not 0-65535", a, port)
	}
	return nil
}

func (s *Store) validate() []error {
	var errs []error
	switch s.Kind {
	case "memory":
		if s.Memory.MaxKeys < 1 {
			errs = append(errs, fmt.Errorf("store.memory.max_keys: %d must be positive", s.Memory.MaxKeys))
		}
	case "redis":
		r := &s.Redis
		if len(r.Addrs) == 0 {
			errs = append(errs, errors.New(`store.redis.addrs: empty (want at least one host:port, e.g. ["127.0.0.1:6379"])`))
		}
		for i, a := range r.Addrs {
			if err := validAddress(a); err != nil {
				errs = append(errs, fmt.Errorf("store.redis.addrs[%d]: %w", i, err))
			}
		}
		if r.Password != "" && r.PasswordFile != "" {
			errs = append(errs, errors.New("store.redis: set password or password_file, not both"))
		}
		if t := time.Duration(r.Timeout); t <= 0 || t > 10*time.Second {
			errs = append(errs, fmt.Errorf("store.redis.timeout: %s is not between 1ms and 10s (Envoy waits 200ms by default)", t))
		}
		if r.DB < 0 || r.PoolSize < 0 {
			errs = append(errs, errors.New("store.redis: db and pool_size must not be negative"))
		}
		if (r.TLS.CertFile == "") != (r.TLS.KeyFile == "") {
			errs = append(errs, errors.New("store.redis.tls: cert_file and key_file go together"))
		}
	default:
		errs = append(errs, fmt.Errorf("store.kind: %q is not a store (allowed: memory, redis)", s.Kind))
	}
	return errs
}
