// Package pg opens Tollgate's PostgreSQL connection pool and applies the
// versioned schema migrations each component embeds. PostgreSQL holds
// what must last and be audited: the ledger, the key directory, decision
// logs.
package pg

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-dev/tollgate/internal/config"
)

// Open builds a connection pool from the configuration: the DSN (from
// postgres.dsn, or postgres.dsn_file trimmed), pool size and connect
// timeout. TLS is the DSN's (sslmode, sslrootcert, sslcert, sslkey). The
// pool connects lazily: Open fails only on a configuration it cannot use,
// and the first query (Migrate at start-up) says whether the server
// answers. Close the pool when done: it owns background goroutines.
func Open(ctx context.Context, c config.Postgres) (*pgxpool.Pool, error) {
	dsn, field, err := readDSN(c)
	if err != nil {
		return nil, err
	}
	pc, err := config.ParsePostgresDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	if c.MaxConns > 0 {
		pc.MaxConns = int32(min(c.MaxConns, math.MaxInt32))
	}
	if c.ConnectTimeout > 0 {
		pc.ConnConfig.ConnectTimeout = time.Duration(c.ConnectTimeout)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return pool, nil
}

// readDSN returns the configured DSN and the setting it came from.
func readDSN(c config.Postgres) (dsn, field string, err error) {
	if c.DSNFile == "" {
		if c.DSN == "" {
			return "", "postgres.dsn", errors.New("postgres.dsn: empty (no PostgreSQL is configured)")
		}
		return c.DSN, "postgres.dsn", nil
	}
	b, err := os.ReadFile(c.DSNFile)
	if err != nil {
		return "", "", fmt.Errorf("postgres.dsn_file: %w", err)
	}
	dsn = strings.TrimSpace(string(b))
	if dsn == "" {
		return "", "", errors.New("postgres.dsn_file: " + c.DSNFile + " is empty")
	}
	return dsn, "postgres.dsn_file", nil
}
