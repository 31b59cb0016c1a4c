package pgtest_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/tollgate-dev/tollgate/internal/pg/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestNewDropsTheDatabase: the test's database exists during the test,
// is its own, and is gone after it, even with a connection left open.
func TestNewDropsTheDatabase(t *testing.T) {
	ctx := context.Background()
	var name string
	t.Run("owner", func(t *testing.T) {
		// Closed after the drop (cleanups run last first): a connection
		// someone forgot, which the drop terminates.
		var leftover *pgx.Conn
		t.Cleanup(func() {
			if leftover != nil {
				leftover.Close(ctx)
			}
		})
		db := pgtest.New(t)
		name = db.Name
		conn, err := pgx.Connect(ctx, db.DSN)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(ctx) })
		var got string
		if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != db.Name {
			t.Errorf("current_database() = %q, want %q", got, db.Name)
		}
		if leftover, err = pgx.Connect(ctx, db.DSN); err != nil {
			t.Fatal(err)
		}
	})
	if t.Skipped() || name == "" {
		return
	}
	conn, err := pgx.Connect(ctx, pgtest.New(t).DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("database %s still exists after its test", name)
	}
}

// TestProxyCut: a cut proxy fails queries and refuses connections; after
// Restore, new connections work.
func TestProxyCut(t *testing.T) {
	ctx := context.Background()
	p := pgtest.New(t).Proxy()
	pool := p.Pool()
	if err := pool.Ping(ctx); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	p.Cut()
	if err := pool.Ping(ctx); err == nil {
		t.Fatal("Ping succeeded through a cut proxy")
	}
	if _, err := pgx.Connect(ctx, p.DSN); err == nil {
		t.Fatal("connected through a cut proxy")
	}
	p.Restore()
	if err := pool.Ping(ctx); err != nil {
		t.Fatalf("after Restore: %v", err)
	}
}
