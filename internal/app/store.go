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

	"github.com/tollgate-dev/tollgate/internal/config"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

// newStore builds the configured limit store. A Redis store that cannot be
// reached at start-up is logged, not fatal: limits follow their failure
// modes until it answers.
func newStore(ctx context.Context, c config.Store, log *slog.Logger) (ratelimit.Store, func() error, error) {
	if c.Kind == "memory" {
		return ratelimit.NewMemoryStore(ratelimit.MemoryOptions{MaxKeys: c.Memory.MaxKeys}), func() error { return nil }, nil
	}
	r := c.Redis
	password := r.Password
	if r.PasswordFile != "" {
		b, err := os.ReadFile(r.PasswordFile)
		if err != nil {
			return nil, nil, fmt.Errorf("store.redis.password_file: %w", err)
		}
		password = strings.TrimSpace(string(b))
	}
	tlsConfig, err := redisTLS(r.TLS)
	if err != nil {
		return nil, nil, err
	}
	client := ratelimit.NewRedisClient(ratelimit.RedisOptions{
		Addrs: r.Addrs, MasterName: r.MasterName, Username: r.Username, Password: password,
		DB: r.DB, PoolSize: r.PoolSize, Timeout: time.Duration(r.Timeout),
	}, tlsConfig)
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := client.Ping(pctx).Err(); err != nil {
		log.Warn("redis is not reachable yet; limits follow their failure mode until it is", "addrs", r.Addrs, "error", err)
	}
	store := ratelimit.NewRedisStore(client, time.Duration(r.Timeout))
	return store, store.Close, nil
}

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

// adminToken reads the admin API token; "" means the API is off.
func adminToken(a config.Admin) (string, error) {
	if a.TokenFile == "" {
		return a.Token, nil
	}
	b, err := os.ReadFile(a.TokenFile)
	if err != nil {
		return "", fmt.Errorf("admin.token_file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", errors.New("admin.token_file: " + a.TokenFile + " is empty")
	}
	return tok, nil
}
