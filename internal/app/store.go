package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/admin"
	"github.com/tollgate-dev/tollgate/internal/config"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
)

// store is the configured limit store with its background work (nil:
// none) and what releases it.
type store struct {
	ratelimit.Store
	run   func(context.Context) error
	close func() error
	// ledger is where the store records balance changes.
	ledger ledger.Source
	// metrics are the store's own collectors.
	metrics []prometheus.Collector
}

// sweepInterval is how often the memory store reclaims expired counters.
const sweepInterval = 10 * time.Second

// newStore builds the configured limit store. A Redis store that cannot be
// reached at start-up is logged, not fatal: limits follow their failure
// modes until it answers.
// With shipped set, a ledger shipper makes the entries durable and trims
// them; otherwise the store keeps a bounded recent history.
func newStore(ctx context.Context, c config.Store, settle config.Settle, shipped bool, log *slog.Logger) (*store, error) {
	if c.Kind == "memory" {
		m := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{MaxKeys: c.Memory.MaxKeys, SettleTimeout: time.Duration(settle.Timeout), Logger: log})
		dropped := prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tollgate_ledger_dropped_total",
			Help: "Ledger entries the memory store's bounded ring dropped before they were shipped (raise nothing: ship more often, or use Redis).",
		}, func() float64 { return float64(m.LedgerDropped()) })
		return &store{Store: m, ledger: m, metrics: append(m.Collectors(), dropped), close: func() error { return nil }, run: func(ctx context.Context) error {
			m.Run(ctx, sweepInterval)
			return nil
		}}, nil
	}
	r := c.Redis
	password := r.Password
	if r.PasswordFile != "" {
		b, err := os.ReadFile(r.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("store.redis.password_file: %w", err)
		}
		password = strings.TrimSpace(string(b))
	}
	tlsConfig, err := redisTLS(r.TLS)
	if err != nil {
		return nil, err
	}
	opts := ratelimit.RedisOptions{
		Addrs: r.Addrs, MasterName: r.MasterName, Username: r.Username, Password: password,
		DB: r.DB, PoolSize: r.PoolSize, Timeout: time.Duration(r.Timeout),
	}
	client := ratelimit.NewRedisClient(opts, tlsConfig)
	// Voids get a pool of their own, so they get through when request
	// traffic saturates the main pool (which is when Takes time out).
	opts.PoolSize, opts.Timeout = voidPoolSize, max(opts.Timeout, time.Second)
	voidClient := ratelimit.NewRedisClient(opts, tlsConfig)
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	pingErr := client.Ping(pctx).Err()
	if pingErr != nil {
		log.Warn("redis is not reachable yet; limits follow their failure mode until it is", "addrs", r.Addrs, "error", pingErr)
	}
	rs := ratelimit.NewRedisStore(client, time.Duration(r.Timeout))
	if pingErr == nil {
		for _, w := range rs.DurabilityWarnings(ctx) {
			log.Warn(w, "addrs", r.Addrs)
		}
	}
	rs.SetClockSkew(time.Duration(r.ClockSkew))
	rs.SetVoidClient(voidClient)
	rs.SetSettleTimeout(time.Duration(settle.Timeout))
	if shipped {
		rs.SetLedgerMaxLen(0) // the shipper trims what is durable
	}
	return &store{Store: rs, ledger: rs, close: func() error { return errors.Join(rs.Close(), voidClient.Close()) }}, nil
}

// voidPoolSize is the connections of the voids' own pool.
const voidPoolSize = 4

func redisTLS(t config.TLS) (*tls.Config, error) {
	if !t.Enabled {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // opt-in, documented
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("store.redis.tls.ca_file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, errors.New("store.redis.tls.ca_file: no PEM certificate found in " + t.CAFile)
		}
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("store.redis.tls: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// adminTokens reads the admin API's tokens: admin.token (or token_file),
// granting every scope, and admin.tokens, each its own scopes. nil: none,
// the API is off.
func adminTokens(a config.Admin) (*admin.Tokens, error) {
	if !a.APIOn() {
		return nil, nil
	}
	var ts []admin.Token
	tok, err := tokenOrFile(a.Token, a.TokenFile, "admin.token_file")
	if err != nil {
		return nil, err
	}
	if tok != "" {
		ts = append(ts, admin.AllScopes(tok))
	}
	for i, t := range a.Tokens {
		tok, err := tokenOrFile(t.Token, t.TokenFile, fmt.Sprintf("admin.tokens[%d].token_file", i))
		if err != nil {
			return nil, err
		}
		scopes := make([]admin.Scope, len(t.Scopes))
		for j, s := range t.Scopes {
			scopes[j] = admin.Scope(s)
		}
		ts = append(ts, admin.Token{Secret: tok, Scopes: scopes})
	}
	k, err := admin.NewTokens(ts...)
	if err != nil {
		// A token file holding the same token as another entry.
		return nil, fmt.Errorf("admin.tokens: %w", err)
	}
	return k, nil
}

// tokenOrFile is token, or the trimmed content of file (field names it).
func tokenOrFile(token, file, field string) (string, error) {
	if file == "" {
		return token, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", errors.New(field + ": " + file + " is empty")
	}
	return tok, nil
}
