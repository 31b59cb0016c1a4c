package pg_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"go.uber.org/goleak"

	"github.com/tollgate-dev/tollgate/internal/config"
	"github.com/tollgate-dev/tollgate/internal/pg"
	"github.com/tollgate-dev/tollgate/internal/pg/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	file := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(file, []byte("  "+db.DSN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []config.Postgres{
		{DSN: db.DSN, MaxConns: 3, ConnectTimeout: config.Duration(2 * time.Second)},
		{DSNFile: file, MaxConns: 3, ConnectTimeout: config.Duration(2 * time.Second)},
	} {
		pool, err := pg.Open(ctx, c)
		if err != nil {
			t.Fatalf("Open(%+v): %v", c, err)
		}
		var name string
		err = pool.QueryRow(ctx, "SELECT current_database()").Scan(&name)
		if got := pool.Config(); got.MaxConns != 3 || got.ConnConfig.ConnectTimeout != 2*time.Second {
			t.Errorf("pool: max_conns %d, connect_timeout %s; want 3 and 2s", got.MaxConns, got.ConnConfig.ConnectTimeout)
		}
		pool.Close()
		if err != nil || name != db.Name {
			t.Errorf("current_database() = %q, %v; want %q", name, err, db.Name)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("postgres://u:s3cr/etpw@db/x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		c    config.Postgres
		want string
	}{
		{"nothing configured", config.Postgres{}, "postgres.dsn: empty"},
		{"missing file", config.Postgres{DSNFile: filepath.Join(dir, "none")}, "postgres.dsn_file: open "},
		{"empty file", config.Postgres{DSNFile: empty}, "postgres.dsn_file: " + empty + " is empty"},
		{"bad DSN in the file", config.Postgres{DSNFile: bad}, "postgres.dsn_file: pgx cannot parse it: invalid port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, err := pg.Open(context.Background(), tt.c)
			if err == nil {
				pool.Close()
				t.Fatalf("Open succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "s3cr") {
				t.Errorf("got %q, want it to contain %q (and no password)", err, tt.want)
			}
		})
	}
}

var twoMigrations = fstest.MapFS{
	"001_accounts.sql": {Data: []byte("CREATE TABLE accounts (id text PRIMARY KEY);\nCREATE INDEX accounts_id ON accounts (id);\n")},
	"002_balance.sql":  {Data: []byte("ALTER TABLE accounts ADD COLUMN balance bigint NOT NULL DEFAULT 0;")},
}

// applied lists the recorded versions of component as "version name".
func applied(t *testing.T, db *pgtest.DB, component string) []string {
	t.Helper()
	pool := db.Pool()
	rows, err := pool.Query(context.Background(), `SELECT version || ' ' || name FROM tollgate_schema_migrations WHERE component = $1 ORDER BY version`, component)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestMigrateFreshThenNoOp(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	pool := db.Pool()
	if err := pg.Migrate(ctx, pool, "test", twoMigrations); err != nil {
		t.Fatalf("first Migrate: %v", err)
	}
	want := "1 001_accounts.sql,2 002_balance.sql"
	if got := strings.Join(applied(t, db, "test"), ","); got != want {
		t.Fatalf("recorded %q, want %q", got, want)
	}
	var at1 time.Time
	if err := pool.QueryRow(ctx, `SELECT max(applied_at) FROM tollgate_schema_migrations`).Scan(&at1); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO accounts (id, balance) VALUES ('a', 5)`); err != nil {
		t.Fatalf("the migrated schema: %v", err)
	}
	if err := pg.Migrate(ctx, pool, "test", twoMigrations); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	var at2 time.Time
	if err := pool.QueryRow(ctx, `SELECT max(applied_at) FROM tollgate_schema_migrations`).Scan(&at2); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(applied(t, db, "test"), ","); got != want || !at2.Equal(at1) {
		t.Errorf("after a second Migrate: recorded %q at %s, want %q at %s", got, at2, want, at1)
	}
	// A third version added later is applied alone; another component
	// has versions of its own.
	three := fstest.MapFS{"003_name.sql": {Data: []byte("ALTER TABLE accounts ADD COLUMN name text;")}}
	for k, v := range twoMigrations {
		three[k] = v
	}
	if err := pg.Migrate(ctx, pool, "test", three); err != nil {
		t.Fatalf("Migrate with a third version: %v", err)
	}
	if err := pg.Migrate(ctx, pool, "other", fstest.MapFS{"001_other.sql": {Data: []byte("CREATE TABLE other (x int);")}}); err != nil {
		t.Fatalf("Migrate another component: %v", err)
	}
	if got := len(applied(t, db, "test")) + len(applied(t, db, "other")); got != 4 {
		t.Errorf("recorded %d versions, want 4", got)
	}
}

// TestMigrateConcurrent: replicas starting at once apply each version
// once (a second CREATE TABLE accounts would fail).
func TestMigrateConcurrent(t *testing.T) {
	db := pgtest.New(t)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		pool := db.Pool() // a replica each
		wg.Go(func() { errs[i] = pg.Migrate(context.Background(), pool, "test", twoMigrations) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("replica %d: %v", i, err)
		}
	}
	if got := strings.Join(applied(t, db, "test"), ","); got != "1 001_accounts.sql,2 002_balance.sql" {
		t.Errorf("recorded %q, want each version once", got)
	}
}

// TestMigrateBrokenFile: a file that fails leaves nothing of itself (its
// first statement is rolled back with it) and is not recorded; the
// versions before it are.
func TestMigrateBrokenFile(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	pool := db.Pool()
	broken := fstest.MapFS{
		"001_accounts.sql": twoMigrations["001_accounts.sql"],
		"002_broken.sql":   {Data: []byte("CREATE TABLE half (x int);\nALTER TABLE accounts ADD COLUMN oops nosuchtype;")},
	}
	err := pg.Migrate(ctx, pool, "test", broken)
	if err == nil || !strings.Contains(err.Error(), "migrate test: 002_broken.sql:") || !strings.Contains(err.Error(), "nosuchtype") {
		t.Fatalf("got %v, want the broken file and its error named", err)
	}
	if got := strings.Join(applied(t, db, "test"), ","); got != "1 001_accounts.sql" {
		t.Errorf("recorded %q, want only version 1", got)
	}
	var half *string
	if err := pool.QueryRow(ctx, `SELECT to_regclass('half')::text`).Scan(&half); err != nil || half != nil {
		t.Errorf("table half of the failed version: %v, %v; want it rolled back", half, err)
	}
	// Fixed (never shipped, so it may change), it applies.
	if err := pg.Migrate(ctx, pool, "test", twoMigrations); err != nil {
		t.Fatalf("after the fix: %v", err)
	}
}

func TestMigrateChangedFile(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	pool := db.Pool()
	if err := pg.Migrate(ctx, pool, "test", twoMigrations); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		files fstest.MapFS
		want  []string
	}{
		{"edited", fstest.MapFS{
			"001_accounts.sql": twoMigrations["001_accounts.sql"],
			"002_balance.sql":  {Data: []byte("ALTER TABLE accounts ADD COLUMN balance numeric;")},
		}, []string{"version 2 is recorded as 002_balance.sql (sha256 ", "but the embedded file is 002_balance.sql (sha256 "}},
		{"renamed", fstest.MapFS{
			"001_accounts.sql": twoMigrations["001_accounts.sql"],
			"002_credits.sql":  twoMigrations["002_balance.sql"],
		}, []string{"version 2 is recorded as 002_balance.sql", "but the embedded file is 002_credits.sql"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := pg.Migrate(ctx, pool, "test", tt.files)
			for _, w := range tt.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("got %v, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestMigrateFileNames(t *testing.T) {
	tests := []struct {
		name  string
		files fstest.MapFS
		want  string
	}{
		{"no files", fstest.MapFS{}, "no migration files"},
		{"bad name", fstest.MapFS{"1_x.sql": {}}, `"1_x.sql" is not a migration file name`},
		{"gap", fstest.MapFS{"001_a.sql": {}, "003_c.sql": {}}, "003_c.sql: version 3, want 2"},
		{"same version", fstest.MapFS{"001_a.sql": {}, "001_b.sql": {}}, "001_a.sql and 001_b.sql have the same version"},
		{"not from 1", fstest.MapFS{"002_b.sql": {}}, "002_b.sql: version 2, want 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Refused before any connection is made: a nil pool is enough.
			err := pg.Migrate(context.Background(), nil, "test", tt.files)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
