package redistest_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/tollgate-dev/tollgate/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestSentinel: a write to the primary found through the Sentinels is
// there after a failover, on the new primary, which the client follows.
func TestSentinel(t *testing.T) {
	g := redistest.StartSentinel(t, 1)
	c := g.Client()
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	old := g.Primary()
	primary := g.Failover()
	if primary == old {
		t.Fatalf("the primary is still %s after a failover", old.Addr)
	}
	got, err := c.Get(ctx, "k").Result()
	for i := 0; err != nil && i < 100; i++ { // the client may hold a connection to the old primary once
		got, err = c.Get(ctx, "k").Result()
	}
	if err != nil || got != "v" {
		t.Errorf("after the failover: got %q, %v; want v", got, err)
	}
	if err := c.Set(ctx, "k", "w", 0).Err(); err != nil {
		t.Errorf("write after the failover: %v", err)
	}
}
