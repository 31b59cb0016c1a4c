package ratelimit_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

// TestDurabilityWarnings: Tollgate warns about a Redis that would lose
// balances on a restart or evict them, and says nothing when CONFIG is
// refused (as managed Redis does).
func TestDurabilityWarnings(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{name: "no persistence", args: nil, want: []string{"appendonly no"}},
		{name: "evicting", args: []string{"--appendonly", "yes", "--maxmemory-policy", "volatile-lru"}, want: []string{"maxmemory-policy volatile-lru"}},
		{name: "neither", args: []string{"--appendonly", "no", "--maxmemory-policy", "allkeys-lru"}, want: []string{"appendonly no", "maxmemory-policy allkeys-lru"}},
		{name: "durable", args: []string{"--appendonly", "yes", "--maxmemory-policy", "noeviction"}},
		{name: "CONFIG refused", args: []string{"--rename-command", "CONFIG", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.StartWith(t, tc.args...)
			got := ratelimit.NewRedisStore(srv.Client(), time.Second).DurabilityWarnings(context.Background())
			if len(got) != len(tc.want) {
				t.Fatalf("got %d warnings %q, want %d mentioning %q", len(got), got, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("warning %d: got %q, want it to mention %q", i, got[i], w)
				}
			}
		})
	}
}
