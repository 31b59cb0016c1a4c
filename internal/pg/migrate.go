package pg

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrationLock is the advisory lock key every Migrate takes in each of
// its transactions ("tollgate" in ASCII): replicas starting at once
// migrate one after the other, and a transaction's lock is released by
// its commit or rollback, whatever happens to the connection.
const migrationLock int64 = 0x746f6c6c67617465

// migration is one embedded SQL file.
type migration struct {
	version  int
	name     string // the file name, such as 001_ledger.sql
	sql      string
	checksum string // hex SHA-256 of the file
}

var migrationName = regexp.MustCompile(`^([0-9]{3,})_[a-z0-9_]+\.sql$`)

// Migrate applies the migrations of component that the database has not
// recorded yet. migrations holds files named NNN_name.sql at its root,
// numbered from 001 without gaps; each is applied in a transaction of its
// own (so it must not use statements that refuse one, such as CREATE INDEX
// CONCURRENTLY) that also records it in tollgate_schema_migrations. Every
// transaction first takes one advisory lock, so replicas starting together
// apply each version once. A recorded version whose file name or checksum
// differs from the embedded file is an error naming both: a migration is
// never edited once shipped. Versions recorded beyond the embedded ones (a
// newer release migrated already) are left alone.
func Migrate(ctx context.Context, pool *pgxpool.Pool, component string, migrations fs.FS) error {
	ms, err := readMigrations(migrations)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	var missing []migration
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := lock(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS tollgate_schema_migrations (
	component  text        NOT NULL,
	version    integer     NOT NULL,
	name       text        NOT NULL,
	checksum   text        NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (component, version)
)`); err != nil {
			return fmt.Errorf("create tollgate_schema_migrations: %w", err)
		}
		for _, m := range ms {
			applied, err := recorded(ctx, tx, component, m)
			if err != nil {
				return err
			}
			if !applied {
				missing = append(missing, m)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	for _, m := range missing {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if err := lock(ctx, tx); err != nil {
				return err
			}
			// Another replica may have applied it while this one waited.
			if applied, err := recorded(ctx, tx, component, m); err != nil || applied {
				return err
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO tollgate_schema_migrations (component, version, name, checksum) VALUES ($1, $2, $3, $4)`,
				component, m.version, m.name, m.checksum)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate %s: %s: %w", component, m.name, err)
		}
	}
	return nil
}

// MigrateDir is Migrate with the migrations in directory dir of fsys (an
// embed.FS holding migrations/*.sql, say).
func MigrateDir(ctx context.Context, pool *pgxpool.Pool, component string, fsys fs.FS, dir string) error {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	return Migrate(ctx, pool, component, sub)
}

func lock(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
		return fmt.Errorf("advisory lock: %w", err)
	}
	return nil
}

// recorded reports whether m's version is recorded for component, and
// refuses a record that is not m's.
func recorded(ctx context.Context, tx pgx.Tx, component string, m migration) (bool, error) {
	var name, checksum string
	err := tx.QueryRow(ctx, `SELECT name, checksum FROM tollgate_schema_migrations WHERE component = $1 AND version = $2`,
		component, m.version).Scan(&name, &checksum)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if name != m.name || checksum != m.checksum {
		return false, fmt.Errorf("version %d is recorded as %s (sha256 %s) but the embedded file is %s (sha256 %s): a shipped migration must not change; add a new one",
			m.version, name, short(checksum), m.name, short(m.checksum))
	}
	return true, nil
}

func short(checksum string) string { return checksum[:min(len(checksum), 12)] }

// readMigrations reads the NNN_name.sql files at the root of fsys, in
// version order, and checks that they are numbered 1, 2, 3...
func readMigrations(fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		sub := migrationName.FindStringSubmatch(e.Name())
		if sub == nil {
			return nil, fmt.Errorf("%q is not a migration file name (allowed: NNN_name.sql, such as 001_ledger.sql; lower case, digits and _)", e.Name())
		}
		v, err := strconv.Atoi(sub[1])
		if err != nil {
			return nil, fmt.Errorf("%s: version %s: %w", e.Name(), sub[1], err)
		}
		b, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b)
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b), checksum: hex.EncodeToString(sum[:])})
	}
	if len(ms) == 0 {
		return nil, errors.New("no migration files (NNN_name.sql)")
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })
	for i, m := range ms {
		if m.version != i+1 {
			if i > 0 && m.version == ms[i-1].version {
				return nil, fmt.Errorf("%s and %s have the same version", ms[i-1].name, m.name)
			}
			return nil, fmt.Errorf("%s: version %d, want %d (versions start at 1, without gaps)", m.name, m.version, i+1)
		}
	}
	return ms, nil
}
