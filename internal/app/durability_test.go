package app_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/app"
	"github.com/tollgate-dev/tollgate/internal/redistest"
)

// syncBuffer is a bytes.Buffer that several goroutines may log to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRedisDurabilityWarning: at start, Tollgate warns that the Redis it
// keeps balances in has no append-only file, and says nothing of one that
// persists and never evicts.
func TestRedisDurabilityWarning(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		warn bool
	}{
		{name: "no persistence", warn: true},
		{name: "durable", args: []string{"--appendonly", "yes", "--maxmemory-policy", "noeviction"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.StartWith(t, tc.args...)
			cfg := testConfig()
			cfg.Store.Kind = "redis"
			cfg.Store.Redis.Addrs = []string{srv.Addr}
			var logs syncBuffer
			a, err := app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(&logs, nil)), "test")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := a.Run(ctx); err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(logs.String(), "appendonly no"); got != tc.warn {
				t.Errorf("warned about appendonly: %v, want %v; logs:\n%s", got, tc.warn, logs.String())
			}
		})
	}
}
