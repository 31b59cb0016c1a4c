// Package config reads and validates Tollgate's YAML configuration file.
//
// Decoding is strict (internal/yamlstrict): an unknown key is an error that
// names it and its line. Validation runs completely before anything starts,
// so a server is never built from a half-valid file, and its errors name
// the line of the value they refuse too.
package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-dev/tollgate/internal/yamlstrict"
)

// Config is the whole Tollgate configuration file.
type Config struct {
	GRPC   GRPC   `yaml:"grpc"`
	Admin  Admin  `yaml:"admin"`
	Log    Log    `yaml:"log"`
	Policy Policy `yaml:"policy"`
	Authz  Authz  `yaml:"authz"`
	Store  Store  `yaml:"store"`
	// Postgres holds what must last and be audited (the ledger); empty:
	// no PostgreSQL.
	Postgres Postgres `yaml:"postgres"`
	// RateLimit is the rate limit service (RLS) for Envoy's ratelimit filter.
	RateLimit RateLimit `yaml:"ratelimit"`
	// XDS is the control plane pushing routes files to Envoys.
	XDS XDS `yaml:"xds"`
	// DecisionLogs writes one record per Check and per ShouldRateLimit.
	DecisionLogs DecisionLogs `yaml:"decision_logs"`
	// Settle tunes charges settled on delivery (reserved at Check,
	// captured or released from Envoy's access log).
	Settle Settle `yaml:"settle"`
	// Directory is the key directory: consumers and API keys resolved
	// before the policy runs (input.tollgate.consumer).
	Directory Directory `yaml:"directory"`
	// ShutdownDelay is how long Tollgate keeps serving after SIGTERM
	// while reporting itself not ready (/readyz 503, gRPC health
	// NOT_SERVING), so load balancers, Kubernetes endpoints and Envoy's
	// health checks stop sending before the listeners close. Unset: 5s
	// (`tollgate serve` without a config file sets none); 0s: none.
	ShutdownDelay *Duration `yaml:"shutdown_delay"`
	// ShutdownTimeout bounds how long in-flight calls may drain after the
	// delay.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
}

// GRPC is the listener that serves ext_authz (and, later, the rate limit
// service and xDS) plus the gRPC health service.
type GRPC struct {
	Address string `yaml:"address"`
	// Reflection is gRPC server reflection (grpcurl without .proto
	// files). Unset: on for a listener on a loopback address only.
	Reflection *bool `yaml:"reflection"`
	// TLS serves every gRPC listener (grpc, ratelimit and xds addresses)
	// over TLS; with a client CA, mutual TLS.
	TLS ServerTLS `yaml:"tls"`
}

// ReflectionOn reports whether gRPC server reflection is on for a
// listener bound to addr: as set, or, when unset, only on loopback (the
// banner's grpcurl commands use it; elsewhere it lists every service to
// whoever reaches the port).
func (g GRPC) ReflectionOn(addr string) bool {
	if g.Reflection != nil {
		return *g.Reflection
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ServerTLS is a listener's certificate, reloaded when its files change.
type ServerTLS struct {
	// CertFile and KeyFile (PEM): both set, the listener serves TLS only.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile (PEM): clients must present a certificate one of these
	// CAs signed (mutual TLS); on the admin listener, every path but
	// /healthz and /readyz needs one.
	ClientCAFile string `yaml:"client_ca_file"`
}

// Enabled reports whether the listener serves TLS.
func (t ServerTLS) Enabled() bool { return t.CertFile != "" }

// validate: certificate and key together; a client CA needs them.
func (t ServerTLS) validate(k *checker, at string) {
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		k.errorf(at+".key_file", "empty, with cert_file set (allowed: the PEM key of cert_file)")
	case t.CertFile == "" && t.KeyFile != "":
		k.errorf(at+".cert_file", "empty, with key_file set (allowed: the PEM certificate of key_file)")
	case t.CertFile == "" && t.ClientCAFile != "":
		k.errorf(at+".client_ca_file", "set without cert_file and key_file (mutual TLS needs the listener's own certificate)")
	}
}

// Admin is the HTTP listener for /metrics, /healthz, /readyz and /status,
// and the admin API (accounts and credits) when a token is set.
type Admin struct {
	Address string `yaml:"address"`
	// Token is the admin API's bearer token granting every scope;
	// TokenFile reads it from a file (a Kubernetes secret). Neither set,
	// and no Tokens: the admin API is off.
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
	// Tokens are more bearer tokens, each granting only its scopes.
	Tokens []AdminToken `yaml:"tokens"`
	// MaxConnections caps the listener's open connections; more wait to
	// be accepted (default DefaultAdminMaxConnections).
	MaxConnections int `yaml:"max_connections"`
	// TLS serves the admin listener over HTTPS.
	TLS ServerTLS `yaml:"tls"`
	// AllowedIdentities, with tls.client_ca_file: the client certificate
	// identities (URI or DNS SANs) allowed on every path but /healthz and
	// /readyz. Empty: any certificate the client CA signed.
	AllowedIdentities []string `yaml:"allowed_identities"`
}

// AdminToken is an admin API bearer token limited to its scopes.
type AdminToken struct {
	// Token, or TokenFile to read it from a file (one of them).
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
	// Scopes: read (every GET), credits (top-ups), keys (the API key
	// directory's writes).
	Scopes []string `yaml:"scopes"`
}

// AdminScopes are the scopes an admin token may grant.
var AdminScopes = []string{"read", "credits", "keys"}

// DefaultAdminMaxConnections caps the admin listener's connections by
// default: Prometheus, probes and operators need a handful.
const DefaultAdminMaxConnections = 256

// MaxAdminConnections is the highest admin.max_connections.
const MaxAdminConnections = 65536

// APIOn reports whether the admin API is served: a token is configured.
func (a Admin) APIOn() bool { return a.Token != "" || a.TokenFile != "" || len(a.Tokens) > 0 }

// validate checks the tokens: each set once (token or token_file), with
// known scopes; the same literal token never twice. Messages never quote
// a token.
func (a Admin) validate(k *checker) {
	if a.Token != "" && a.TokenFile != "" {
		k.errorf("admin.token_file", "set token or token_file, not both")
	}
	if m := a.MaxConnections; m < 1 || m > MaxAdminConnections {
		k.errorf("admin.max_connections", "%d is out of range (allowed: 1 to %d)", m, MaxAdminConnections)
	}
	seen := map[string]string{}
	if a.Token != "" {
		seen[a.Token] = "admin.token"
	}
	for i, t := range a.Tokens {
		at := fmt.Sprintf("admin.tokens[%d]", i)
		switch {
		case t.Token == "" && t.TokenFile == "":
			k.errorf(at, "no token: set token or token_file")
		case t.Token != "" && t.TokenFile != "":
			k.errorf(at+".token_file", "set token or token_file, not both")
		case t.Token != "":
			if prev, ok := seen[t.Token]; ok {
				k.errorf(at+".token", "the same token as %s (each token must be distinct)", prev)
			}
			seen[t.Token] = at
		}
		if len(t.Scopes) == 0 {
			k.errorf(at+".scopes", "empty (allowed: one or more of read, credits, keys)")
		}
		for j, sc := range t.Scopes {
			if !slices.Contains(AdminScopes, sc) {
				k.errorf(fmt.Sprintf("%s.scopes[%d]", at, j), "%q is not a scope (allowed: read, credits, keys)", sc)
			} else if slices.Index(t.Scopes, sc) < j {
				k.errorf(fmt.Sprintf("%s.scopes[%d]", at, j), "%q is listed twice", sc)
			}
		}
	}
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
	// AllowedIdentities, with grpc.tls.client_ca_file: the client
	// certificate identities allowed to call ShouldRateLimit. Empty: any
	// certificate the client CA signed.
	AllowedIdentities []string `yaml:"allowed_identities"`
	// MaxDescriptors, MaxEntries and MaxEntryBytes bound one
	// ShouldRateLimit request: descriptors, entries per descriptor, and
	// the bytes of an entry's key or value (and of the domain). A request
	// past any is answered INVALID_ARGUMENT, never let through.
	MaxDescriptors int `yaml:"max_descriptors"`
	MaxEntries     int `yaml:"max_entries"`
	MaxEntryBytes  int `yaml:"max_entry_bytes"`
}

// Defaults and ceilings of the rate limit service's request bounds.
const (
	DefaultMaxDescriptors = 64
	DefaultMaxEntries     = 16
	DefaultMaxEntryBytes  = 1024
	// MaxDescriptors is ratelimit.MaxLimits: a request's limits are
	// applied in one step of the store.
	MaxDescriptors = 1024
	MaxEntries     = 256
	MaxEntryBytes  = 64 << 10
)

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
	// AllowedIdentities, with grpc.tls.client_ca_file: the client
	// certificate identities allowed to fetch configuration. Empty: any
	// certificate the client CA signed.
	AllowedIdentities []string `yaml:"allowed_identities"`
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

// Settle tunes reservations: charges with settle "delivery" or "success".
type Settle struct {
	// Timeout is how long a reservation waits for its access log entry
	// before it is released (the request is then not charged). It must be
	// longer than the longest route or stream timeout of the Envoys in
	// front: Envoy logs a request when it ends.
	Timeout Duration `yaml:"timeout"`
	// SweepInterval is how often each replica releases the reservations
	// past their timeout.
	SweepInterval Duration `yaml:"sweep_interval"`
}

// Store is where counters and balances live.
type Store struct {
	// Kind is memory (one replica, not durable; the default) or redis.
	Kind string `yaml:"kind"`
	// AnswerMargin: a charged request taken with less than this left
	// before its caller's deadline is refunded and refused, since its
	// answer would likely reach the caller too late.
	AnswerMargin Duration    `yaml:"answer_margin"`
	Memory       MemoryStore `yaml:"memory"`
	Redis        RedisStore  `yaml:"redis"`
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
	// ClockSkew is how far Tollgate's and Redis's clocks may disagree: a
	// Take reaching Redis later than its deadline plus this much is
	// refused and takes nothing.
	ClockSkew Duration `yaml:"clock_skew"`
	TLS       TLS      `yaml:"tls"`
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

// Postgres is the PostgreSQL server. With neither DSN nor DSNFile set,
// Tollgate uses no PostgreSQL. TLS is the DSN's: sslmode, sslrootcert,
// sslcert and sslkey, as libpq reads them.
type Postgres struct {
	// DSN is a connection string: a URL (postgres://user@host:5432/db?
	// sslmode=verify-full) or key=value pairs.
	DSN string `yaml:"dsn"`
	// DSNFile reads the DSN from a file (a mounted secret), trimmed.
	DSNFile string `yaml:"dsn_file"`
	// MaxConns is the size of the connection pool; it overrides the
	// DSN's pool_max_conns.
	MaxConns int `yaml:"max_conns"`
	// ConnectTimeout bounds each new connection, TLS included; it
	// overrides the DSN's connect_timeout.
	ConnectTimeout Duration `yaml:"connect_timeout"`
}

// Enabled reports whether a PostgreSQL server is configured.
func (p Postgres) Enabled() bool { return p.DSN != "" || p.DSNFile != "" }

// Defaults of the PostgreSQL connection pool.
const (
	DefaultPostgresMaxConns       = 10
	DefaultPostgresConnectTimeout = Duration(5 * time.Second)
)

// ParsePostgresDSN parses a PostgreSQL connection string as pgxpool does
// (environment variables such as PGHOST fill what it leaves out). Its
// error never quotes the string, which may hold a password: pgx's own
// messages redact passwords only on a best-effort basis.
func ParsePostgresDSN(dsn string) (*pgxpool.Config, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err == nil {
		return pc, nil
	}
	reason := "not a connection string"
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		// pgx's message without the string, and without the cause (a
		// URL parse error quotes the URL) but for TLS settings.
		bare := *pe
		bare.ConnString = ""
		msg := strings.TrimPrefix(bare.Error(), "cannot parse ``: ")
		if cause := pe.Unwrap(); cause != nil {
			msg = strings.TrimSuffix(msg, " ("+cause.Error()+")")
			if msg == "failed to configure TLS" {
				msg += ": " + strings.ReplaceAll(cause.Error(), "(", "")
			}
		}
		if !strings.Contains(msg, "`") && !strings.Contains(msg, "(") {
			reason = msg
		}
	}
	return nil, fmt.Errorf("pgx cannot parse it: %s (the value is not shown, it may hold a password; "+
		"allowed: a URL such as postgres://tollgate@db:5432/tollgate?sslmode=verify-full, or key=value pairs such as \"host=db dbname=tollgate\")", reason)
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
	// AllowedIdentities, with grpc.tls.client_ca_file: the client
	// certificate identities (SPIFFE IDs or DNS names, from URI and DNS
	// SANs) allowed to call Check and StreamAccessLogs. Empty: any
	// certificate the client CA signed.
	AllowedIdentities []string `yaml:"allowed_identities"`
	// Credentials says where a request presents its API key and whether
	// the upstream gets it.
	Credentials Credentials `yaml:"credentials"`
}

// Credentials says where Tollgate reads the credential a request presents
// (the first present of: Headers in their order, Authorization: Bearer,
// QueryParam) and whether it is removed from the request before Envoy
// forwards it.
type Credentials struct {
	// Headers are the header names an API key is read from, in order
	// (case-insensitive). Unset: [x-api-key]; []: none.
	Headers *[]string `yaml:"headers"`
	// Bearer reads Authorization: Bearer <token> (default false: in an
	// Envoy or Istio mesh that header is often a JWT the upstream reads
	// itself, and hide would strip it).
	Bearer *bool `yaml:"bearer"`
	// QueryParam is a query parameter an API key is read from, matched
	// exactly as sent (case-sensitive, not percent-decoded, as Envoy
	// removes it); empty: none.
	QueryParam string `yaml:"query_param"`
	// Hide removes the presented credential from an allowed request
	// before Envoy forwards it upstream (default true).
	Hide *bool `yaml:"hide"`
}

// DefaultCredentialHeaders are the headers read when none are configured.
var DefaultCredentialHeaders = []string{"x-api-key"}

// HeaderNames returns the configured header names in lower case (as
// Envoy sends them), in order.
func (c Credentials) HeaderNames() []string {
	if c.Headers == nil {
		return slices.Clone(DefaultCredentialHeaders)
	}
	out := make([]string, len(*c.Headers))
	for i, h := range *c.Headers {
		out[i] = strings.ToLower(h)
	}
	return out
}

// BearerOn reports whether Authorization: Bearer is read (default false).
func (c Credentials) BearerOn() bool { return c.Bearer != nil && *c.Bearer }

// HideOn reports whether the credential is removed upstream (default true).
func (c Credentials) HideOn() bool { return c.Hide == nil || *c.Hide }

// validate: header names are HTTP field names, each once, neither
// authorization (bearer reads it) nor Tollgate's own x-tollgate-*; the
// query parameter is a plain name.
func (c Credentials) validate(k *checker) {
	if c.Headers != nil {
		for i, h := range *c.Headers {
			at := fmt.Sprintf("authz.credentials.headers[%d]", i)
			lower := strings.ToLower(h)
			switch {
			case !isToken(h):
				k.errorf(at, "%q is not a header name (allowed: letters, digits and !#$%%&'*+-.^_`|~, such as x-api-key)", h)
			case lower == "authorization":
				k.errorf(at, "%q: the Authorization header is read with bearer: true (allowed: another header name, such as x-api-key)", h)
			case strings.HasPrefix(lower, "x-tollgate-"):
				k.errorf(at, "%q: x-tollgate-* headers are Tollgate's own, removed from every request (allowed: another header name, such as x-api-key)", h)
			case slices.IndexFunc(*c.Headers, func(o string) bool { return strings.EqualFold(o, h) }) < i:
				k.errorf(at, "%q is listed twice (header names are case-insensitive)", h)
			}
		}
	}
	if p := c.QueryParam; p != "" && !isQueryName(p) {
		k.errorf("authz.credentials.query_param", "%q is not a query parameter name (allowed: empty for none, or letters, digits and -._~, such as api_key)", p)
	}
}

// isToken reports whether s is an RFC 9110 token (a field name).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// isQueryName reports whether s is made of RFC 3986 unreserved characters
// only: a name a client sends as is, never percent-encoded.
func isQueryName(s string) bool {
	for i := range len(s) {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '.', c == '_', c == '~':
		default:
			return false
		}
	}
	return s != ""
}

// DecisionLogs configures the decision logs: one JSON record per ext_authz
// Check and rate limit service call, written by a background runner.
type DecisionLogs struct {
	Enabled bool `yaml:"enabled"`
	// Sink is stdout (JSON lines, the default), file (JSON lines
	// appended to Path) or postgres (the tollgate_decisions table of the
	// postgres section's database).
	Sink string `yaml:"sink"`
	Path string `yaml:"path"`
	// Retention is how long the postgres sink keeps a record (default
	// 720h, 30 days); older rows are deleted in bounded batches.
	Retention Duration `yaml:"retention"`
	// Buffer is how many records may wait for the sink; more are dropped
	// and counted, never waited for.
	Buffer int `yaml:"buffer"`
	// Sample is the fraction of allowed requests logged (default 1);
	// denials are always logged.
	Sample *float64 `yaml:"sample"`
	// Mask lists more header names (and rate limit descriptor keys) whose
	// values are masked, beyond Authorization, cookies and API keys.
	Mask []string `yaml:"mask"`
}

// Directory configures the key directory. With postgres configured its
// store of record is PostgreSQL (tables migrated at start); otherwise it
// is in memory, seeded from SeedFile, and its changes are lost on restart.
type Directory struct {
	// Enabled resolves each request's credential before the policy runs
	// and mounts the directory's admin API (off: policies keep consumers
	// in their data files, as before).
	Enabled bool `yaml:"enabled"`
	// SeedFile is the JSON file the in-memory directory starts from
	// (without postgres only; empty: an empty directory).
	SeedFile string `yaml:"seed_file"`
	// KeyPrefix starts every generated key.
	KeyPrefix string `yaml:"key_prefix"`
	// CacheSize bounds the resolved keys each replica keeps.
	CacheSize int `yaml:"cache_size"`
	// NegativeCacheSize bounds the unknown, expired or revoked keys kept
	// apart, so asking again does not query the store.
	NegativeCacheSize int `yaml:"negative_cache_size"`
	// FilterCapacity is the fewest keys the membership filter of every
	// key hash is sized for.
	FilterCapacity int `yaml:"filter_capacity"`
	// PollInterval: the change log is read at least this often even
	// without a notification.
	PollInterval Duration `yaml:"poll_interval"`
	// LookupTimeout bounds one store lookup of a key not cached.
	LookupTimeout Duration `yaml:"lookup_timeout"`
}

// Defaults of the directory section.
const (
	DefaultDirectoryKeyPrefix         = "tg_"
	DefaultDirectoryCacheSize         = 100_000
	DefaultDirectoryNegativeCacheSize = 10_000
	DefaultDirectoryFilterCapacity    = 100_000
	DefaultDirectoryPollInterval      = Duration(30 * time.Second)
	DefaultDirectoryLookupTimeout     = Duration(time.Second)
)

// validate checks the directory's settings, enabled or not, so that
// turning it on later cannot fail; withPostgres says whether its store
// is PostgreSQL.
func (d *Directory) validate(k *checker, withPostgres bool) {
	if d.SeedFile != "" && withPostgres {
		k.errorf("directory.seed_file", "%q is set with postgres configured (allowed: a seed file for the in-memory directory only; with postgres the directory is in the database: create consumers and keys with the admin API)", d.SeedFile)
	}
	if d.SeedFile != "" && strings.TrimSpace(d.SeedFile) == "" {
		k.errorf("directory.seed_file", "blank path (allowed: the path of a JSON seed file, or empty for none)")
	}
	if p := d.KeyPrefix; len(p) > 32 || strings.IndexFunc(p, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-')
	}) >= 0 {
		k.errorf("directory.key_prefix", "%q is not a key prefix (allowed: 1 to 32 letters, digits, _ and -, such as tg_live_)", p)
	}
	for _, b := range []struct {
		at       string
		v, limit int
	}{
		{"directory.cache_size", d.CacheSize, 100_000_000},
		{"directory.negative_cache_size", d.NegativeCacheSize, 100_000_000},
		{"directory.filter_capacity", d.FilterCapacity, 1_000_000_000},
	} {
		if b.v < 1 || b.v > b.limit {
			k.errorf(b.at, "%d is out of range (allowed: 1 to %d)", b.v, b.limit)
		}
	}
	if p := time.Duration(d.PollInterval); p < 100*time.Millisecond || p > time.Hour {
		k.errorf("directory.poll_interval", "%s is out of range (allowed: 100ms to 1h)", p)
	}
	if l := time.Duration(d.LookupTimeout); l < time.Millisecond || l > 30*time.Second {
		k.errorf("directory.lookup_timeout", "%s is out of range (allowed: 1ms to 30s)", l)
	}
}

// Defaults of the decision logs.
const (
	DefaultDecisionLogBuffer = 10000
	DefaultDecisionLogSample = 1.0
	// DefaultDecisionLogRetention is 30 days.
	DefaultDecisionLogRetention = Duration(30 * 24 * time.Hour)
)

// Duration is a time.Duration written as a Go duration string ("10s"), 0
// for the default.
type Duration = yamlstrict.Duration

// Defaults for an empty or absent configuration file.
const (
	DefaultGRPCAddress     = "127.0.0.1:9191"
	DefaultAdminAddress    = "127.0.0.1:9192"
	DefaultDecision        = "tollgate/decision"
	DefaultDenyStatus      = 403
	DefaultShutdownTimeout = Duration(10 * time.Second)
	DefaultShutdownDelay   = Duration(5 * time.Second)
)

// Default returns the configuration `tollgate serve` uses without --config:
// the embedded demo policy, loopback listeners.
func Default() *Config {
	c := &Config{}
	c.applyDefaults()
	return c
}

// orDefault sets *p to def when it is the zero value (unset).
func orDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

func (c *Config) applyDefaults() {
	on := func(b **bool) {
		if *b == nil {
			t := true
			*b = &t
		}
	}
	on(&c.Policy.Watch)
	on(&c.RateLimit.Watch)
	on(&c.XDS.Watch)
	orDefault(&c.GRPC.Address, DefaultGRPCAddress)
	orDefault(&c.Admin.Address, DefaultAdminAddress)
	orDefault(&c.Admin.MaxConnections, DefaultAdminMaxConnections)
	orDefault(&c.Log.Level, "info")
	orDefault(&c.Log.Format, "text")
	orDefault(&c.Policy.Decision, DefaultDecision)
	orDefault(&c.Authz.DenyStatus, DefaultDenyStatus)
	if c.Authz.Credentials.Headers == nil {
		h := slices.Clone(DefaultCredentialHeaders)
		c.Authz.Credentials.Headers = &h
	}
	if c.Authz.Credentials.Bearer == nil {
		c.Authz.Credentials.Bearer = new(bool)
	}
	on(&c.Authz.Credentials.Hide)
	orDefault(&c.ShutdownTimeout, DefaultShutdownTimeout)
	if c.ShutdownDelay == nil {
		d := DefaultShutdownDelay
		c.ShutdownDelay = &d
	}
	orDefault(&c.Store.Kind, "memory")
	orDefault(&c.RateLimit.FailureMode, "open")
	orDefault(&c.RateLimit.MaxDescriptors, DefaultMaxDescriptors)
	orDefault(&c.RateLimit.MaxEntries, DefaultMaxEntries)
	orDefault(&c.RateLimit.MaxEntryBytes, DefaultMaxEntryBytes)
	orDefault(&c.Store.Memory.MaxKeys, 1_000_000)
	orDefault(&c.Store.Redis.Timeout, DefaultRedisTimeout)
	orDefault(&c.Store.Redis.ClockSkew, DefaultClockSkew)
	orDefault(&c.Store.AnswerMargin, DefaultAnswerMargin)
	orDefault(&c.Postgres.MaxConns, DefaultPostgresMaxConns)
	orDefault(&c.Postgres.ConnectTimeout, DefaultPostgresConnectTimeout)
	orDefault(&c.DecisionLogs.Sink, "stdout")
	orDefault(&c.DecisionLogs.Buffer, DefaultDecisionLogBuffer)
	orDefault(&c.DecisionLogs.Retention, DefaultDecisionLogRetention)
	if c.DecisionLogs.Sample == nil {
		f := DefaultDecisionLogSample
		c.DecisionLogs.Sample = &f
	}
	orDefault(&c.Settle.Timeout, DefaultSettleTimeout)
	orDefault(&c.Directory.KeyPrefix, DefaultDirectoryKeyPrefix)
	orDefault(&c.Directory.CacheSize, DefaultDirectoryCacheSize)
	orDefault(&c.Directory.NegativeCacheSize, DefaultDirectoryNegativeCacheSize)
	orDefault(&c.Directory.FilterCapacity, DefaultDirectoryFilterCapacity)
	orDefault(&c.Directory.PollInterval, DefaultDirectoryPollInterval)
	orDefault(&c.Directory.LookupTimeout, DefaultDirectoryLookupTimeout)
	orDefault(&c.Settle.SweepInterval, DefaultSweepInterval)
}

// DefaultAnswerMargin is the least time left before a caller's deadline
// for a charged request to be answered.
const DefaultAnswerMargin = Duration(20 * time.Millisecond)

// Defaults of the settle section.
const (
	DefaultSettleTimeout = Duration(5 * time.Minute)
	DefaultSweepInterval = Duration(10 * time.Second)
)

// DefaultClockSkew is how far Tollgate's and Redis's clocks may disagree.
const DefaultClockSkew = Duration(500 * time.Millisecond)

// DefaultRedisTimeout bounds each Redis call, well under Envoy's 200 ms
// ext_authz timeout.
const DefaultRedisTimeout = Duration(50 * time.Millisecond)

// Load reads, strictly decodes and validates the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, b)
}

// Parse decodes and validates a configuration document; name is the file
// name in messages. Every problem is reported (yamlstrict.Errors), each
// with its line: unknown keys and values of the wrong kind, and the
// settings that validation refuses.
func Parse(name string, b []byte) (*Config, error) {
	d := yamlstrict.NewDecoder(name)
	d.YAML11Bools = true // as yaml.v3 reads booleans: reflection: off
	c := &Config{}
	pos := d.DecodeDocument(b, c)
	c.applyDefaults()
	c.validate(&checker{d: d, pos: pos})
	if err := d.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

// checker records validation errors at the line of the setting they are
// about (or of its nearest enclosing section in the file).
type checker struct {
	d   *yamlstrict.Decoder
	pos yamlstrict.Positions
}

func (k *checker) errorf(path, format string, args ...any) {
	k.d.Errorf(k.pos.Of(path), "%s: %s", path, fmt.Sprintf(format, args...))
}

// check records err, if any, for path.
func (k *checker) check(path string, err error) {
	if err != nil {
		k.errorf(path, "%v", err)
	}
}

// validate checks every setting and reports all problems at once.
func (c *Config) validate(k *checker) {
	k.check("grpc.address", validAddress(c.GRPC.Address, DefaultGRPCAddress))
	k.check("admin.address", validAddress(c.Admin.Address, DefaultAdminAddress))
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		k.errorf("log.level", "%q is not a level (allowed: debug, info, warn, error)", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		k.errorf("log.format", "%q is not a format (allowed: text, json)", c.Log.Format)
	}
	k.check("policy.decision", validDecisionPath(c.Policy.Decision))
	k.paths("policy.paths", c.Policy.Paths, "a .rego/.json/.yaml file, a directory or a .tar.gz bundle")
	if s := c.Authz.DenyStatus; s < 400 || s > 599 {
		k.errorf("authz.deny_status", "%d is not an error status (allowed: 400-599)", s)
	}
	c.Authz.Credentials.validate(k)
	c.GRPC.TLS.validate(k, "grpc.tls")
	c.Admin.TLS.validate(k, "admin.tls")
	k.identities("authz.allowed_identities", c.Authz.AllowedIdentities, c.GRPC.TLS.ClientCAFile, "grpc.tls.client_ca_file")
	k.identities("ratelimit.allowed_identities", c.RateLimit.AllowedIdentities, c.GRPC.TLS.ClientCAFile, "grpc.tls.client_ca_file")
	k.identities("xds.allowed_identities", c.XDS.AllowedIdentities, c.GRPC.TLS.ClientCAFile, "grpc.tls.client_ca_file")
	k.identities("admin.allowed_identities", c.Admin.AllowedIdentities, c.Admin.TLS.ClientCAFile, "admin.tls.client_ca_file")
	c.Admin.validate(k)
	c.Store.validate(k)
	c.Postgres.validate(k)
	if c.RateLimit.Address != "" {
		k.check("ratelimit.address", validAddress(c.RateLimit.Address, "0.0.0.0:8081"))
	}
	if c.XDS.Address != "" {
		k.check("xds.address", validAddress(c.XDS.Address, "0.0.0.0:18000"))
	}
	switch c.RateLimit.FailureMode {
	case "open", "closed":
	default:
		k.errorf("ratelimit.failure_mode", "%q is not a failure mode (allowed: open, closed)", c.RateLimit.FailureMode)
	}
	if c.RateLimit.Decision != "" {
		k.check("ratelimit.decision", validDecisionPath(c.RateLimit.Decision))
	}
	for _, b := range []struct {
		at       string
		v, limit int
	}{
		{"ratelimit.max_descriptors", c.RateLimit.MaxDescriptors, MaxDescriptors},
		{"ratelimit.max_entries", c.RateLimit.MaxEntries, MaxEntries},
		{"ratelimit.max_entry_bytes", c.RateLimit.MaxEntryBytes, MaxEntryBytes},
	} {
		if b.v < 1 || b.v > b.limit {
			k.errorf(b.at, "%d is out of range (allowed: 1 to %d)", b.v, b.limit)
		}
	}
	for _, fleet := range slices.Sorted(maps.Keys(c.XDS.Fleets)) { // sorted: the same errors past the cap
		k.path("xds.fleets."+fleet, c.XDS.Fleets[fleet], fmt.Sprintf("empty routes file for fleet %q", fleet), "the path of a routes file")
	}
	k.paths("ratelimit.config_paths", c.RateLimit.ConfigPaths, "a .yaml file or a directory of them")
	c.DecisionLogs.validate(k)
	if t := time.Duration(c.Settle.Timeout); t < time.Second || t > 24*time.Hour {
		k.errorf("settle.timeout", "%s is out of range (allowed: 1s to 24h, longer than the longest route or stream timeout)", t)
	}
	if i := time.Duration(c.Settle.SweepInterval); i < 100*time.Millisecond || i > time.Duration(c.Settle.Timeout) {
		k.errorf("settle.sweep_interval", "%s is out of range (allowed: 100ms to settle.timeout, %s)", i, time.Duration(c.Settle.Timeout))
	}
	if c.DecisionLogs.Sink == "postgres" && !c.Postgres.Enabled() {
		k.errorf("decision_logs.sink", "postgres needs a database: set postgres.dsn (or postgres.dsn_file)")
	}
	c.Directory.validate(k, c.Postgres.Enabled())
}

// identities checks a list of allowed client identities: they can only be
// verified with a client CA, and each is a SPIFFE ID or a DNS name.
func (k *checker) identities(at string, ids []string, ca, caField string) {
	if len(ids) > 0 && ca == "" {
		k.errorf(at, "set without %s (identities come from verified client certificates)", caField)
	}
	for i, id := range ids {
		if strings.TrimSpace(id) == "" || strings.ContainsAny(id, " \t*") {
			k.errorf(fmt.Sprintf("%s[%d]", at, i), "%q is not an identity (allowed: a SPIFFE ID such as spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account, or a DNS name such as envoy.internal, matched exactly)", id)
		}
	}
}

// validate checks the decision logs' settings, enabled or not, so that
// turning them on later cannot fail.
func (l *DecisionLogs) validate(k *checker) {
	switch l.Sink {
	case "stdout":
		if l.Path != "" {
			k.errorf("decision_logs.path", "%q is set with sink stdout (allowed: a path with sink: file only)", l.Path)
		}
	case "postgres":
		if l.Path != "" {
			k.errorf("decision_logs.path", "%q is set with sink postgres (allowed: a path with sink: file only)", l.Path)
		}
	case "file":
		if strings.TrimSpace(l.Path) == "" {
			at := "decision_logs.path"
			if k.pos[at] == nil {
				at = "decision_logs.sink" // no path written: point at the sink that needs one
			}
			k.d.Errorf(k.pos.Of(at), "decision_logs.path: empty path with sink: file (allowed: the path of a file to append JSON lines to)")
		}
	default:
		k.errorf("decision_logs.sink", "%q is not a sink (allowed: stdout, file, postgres)", l.Sink)
	}
	if r := time.Duration(l.Retention); r < time.Hour || r > 10*366*24*time.Hour {
		k.errorf("decision_logs.retention", "%s is out of range (allowed: 1h to 87840h, ten years; 720h is 30 days)", r)
	}
	if l.Buffer < 1 || l.Buffer > 10_000_000 {
		k.errorf("decision_logs.buffer", "%d is out of range (allowed: 1 to 10000000 records)", l.Buffer)
	}
	if f := *l.Sample; !(f >= 0 && f <= 1) { // NaN too
		k.errorf("decision_logs.sample", "%v is out of range (allowed: 0 to 1; 0 logs denials only)", f)
	}
	for i, m := range l.Mask {
		if strings.TrimSpace(m) == "" {
			k.errorf(fmt.Sprintf("decision_logs.mask[%d]", i), "empty name (allowed: a header name or a descriptor key, such as x-session-token)")
		}
	}
}

// path checks that the file path p set at is not blank; empty says what
// is wrong when it is.
func (k *checker) path(at, p, empty, allowed string) {
	if strings.TrimSpace(p) == "" {
		k.errorf(at, "%s (allowed: %s)", empty, allowed)
	}
}

// paths checks each path of a list with path.
func (k *checker) paths(at string, ps []string, allowed string) {
	for i, p := range ps {
		k.path(fmt.Sprintf("%s[%d]", at, i), p, "empty path", allowed)
	}
}

// validDecisionPath checks a slash-separated decision path such as
// "tollgate/decision".
func validDecisionPath(p string) error {
	if p == "" {
		return errors.New(`empty (allowed: a slash-separated rule path such as "tollgate/decision" or "envoy/authz/allow")`)
	}
	for _, seg := range strings.Split(strings.Trim(p, "/"), "/") {
		if seg == "" || !isIdent(seg) {
			return fmt.Errorf("%q is not a rule path (allowed: identifiers separated by \"/\", such as \"tollgate/decision\")", p)
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

// validAddress checks host:port; example is one for the message.
func validAddress(a, example string) error {
	_, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("%q is not host:port (allowed: host:port such as %q)", a, example)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %s is out of range (allowed: 0-65535)", a, port)
	}
	return nil
}

func (s *Store) validate(k *checker) {
	if t := time.Duration(s.AnswerMargin); t < time.Millisecond || t > time.Second {
		k.errorf("store.answer_margin", "%s is out of range (allowed: 1ms to 1s; Envoy waits 200ms by default)", t)
	}
	switch s.Kind {
	case "memory":
		if s.Memory.MaxKeys < 1 {
			k.errorf("store.memory.max_keys", "%d is not positive (allowed: a whole number from 1)", s.Memory.MaxKeys)
		}
	case "redis":
		r := &s.Redis
		if len(r.Addrs) == 0 {
			k.errorf("store.redis.addrs", `empty (allowed: at least one host:port, e.g. ["127.0.0.1:6379"])`)
		}
		for i, a := range r.Addrs {
			k.check(fmt.Sprintf("store.redis.addrs[%d]", i), validAddress(a, "127.0.0.1:6379"))
		}
		if r.Password != "" && r.PasswordFile != "" {
			k.errorf("store.redis.password_file", "set password or password_file, not both")
		}
		if t := time.Duration(r.Timeout); t < time.Millisecond || t > 10*time.Second {
			k.errorf("store.redis.timeout", "%s is out of range (allowed: 1ms to 10s; Envoy waits 200ms by default)", t)
		}
		if t := time.Duration(r.ClockSkew); t < time.Millisecond || t > time.Minute {
			k.errorf("store.redis.clock_skew", "%s is out of range (allowed: 1ms to 1m)", t)
		}
		if r.DB < 0 {
			k.errorf("store.redis.db", "%d is negative (allowed: 0 or more)", r.DB)
		}
		if r.PoolSize < 0 {
			k.errorf("store.redis.pool_size", "%d is negative (allowed: 0 or more; 0 is go-redis's default)", r.PoolSize)
		}
		if (r.TLS.CertFile == "") != (r.TLS.KeyFile == "") {
			k.errorf("store.redis.tls", "cert_file and key_file go together (allowed: both, or neither)")
		}
	default:
		k.errorf("store.kind", "%q is not a store (allowed: memory, redis)", s.Kind)
	}
}

func (p *Postgres) validate(k *checker) {
	switch {
	case p.DSN != "" && p.DSNFile != "":
		k.errorf("postgres.dsn_file", "set dsn or dsn_file, not both")
	case p.DSN != "":
		if _, err := ParsePostgresDSN(p.DSN); err != nil {
			k.check("postgres.dsn", err)
		}
	case p.DSNFile != "":
		k.path("postgres.dsn_file", p.DSNFile, "empty path", "the path of a file holding the DSN")
	}
	if p.MaxConns < 1 || p.MaxConns > 1000 {
		k.errorf("postgres.max_conns", "%d is out of range (allowed: 1 to 1000)", p.MaxConns)
	}
	if t := time.Duration(p.ConnectTimeout); t < 10*time.Millisecond || t > 5*time.Minute {
		k.errorf("postgres.connect_timeout", "%s is out of range (allowed: 10ms to 5m)", t)
	}
}
