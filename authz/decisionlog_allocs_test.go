//go:build !race

// Under the race detector sync.Pool drops items at random, so allocation
// counts vary: this test runs without it.

package authz_test

import (
	"context"
	"math"
	"testing"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/internal/decisionlog"
	"github.com/tollgate-dev/tollgate/policies"
)

// dropLogger takes records and keeps none.
type dropLogger struct{}

func (dropLogger) Log(*decisionlog.Record) {}

// TestDecisionLogHotPathAllocs: on the request's goroutine a record costs
// one allocation (itself): nothing is copied or encoded there.
func TestDecisionLogHotPathAllocs(t *testing.T) {
	engine, err := policies.New(context.Background(), policies.Options{Queries: []string{"tollgate/decision"}})
	if err != nil {
		t.Fatal(err)
	}
	q, _ := engine.Query("tollgate/decision")
	req := fixture(t, "demo_200_api_key")
	allocs := func(dl authz.DecisionLogger) float64 {
		srv, err := authz.New(q, authz.Options{DecisionLog: dl})
		if err != nil {
			t.Fatal(err)
		}
		return testing.AllocsPerRun(200, func() {
			if _, err := srv.Check(context.Background(), req); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Compare the least of a few runs of each, in case a Check's own
	// count varies.
	off, on := math.Inf(1), math.Inf(1)
	for range 5 {
		off, on = min(off, allocs(nil)), min(on, allocs(dropLogger{}))
	}
	if on-off > 1 {
		t.Errorf("Check allocates %v times with decision logs, %v without: want one more at most", on, off)
	}
}
