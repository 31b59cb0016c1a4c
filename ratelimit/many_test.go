package ratelimit_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

// manyLimits is n limits of one consumer (one hash slot in a Cluster):
// rates of 2 a minute and, every third, a daily quota of 2.
func manyLimits(n int, key string) []ratelimit.Limit {
	ls := make([]ratelimit.Limit, n)
	for i := range ls {
		if i%3 == 2 {
			ls[i] = quota("q"+strconv.Itoa(i), key, 2, ratelimit.Day)
		} else {
			ls[i] = rate("r"+strconv.Itoa(i), key, 2, time.Minute, 0)
		}
	}
	return ls
}

// TestTakeMaxLimits: a request with ratelimit.MaxLimits limits is applied
// whole by every store, on a single Redis and on a Cluster. take.lua used to
// return its reply with unpack(), which failed past about 2,000 limits
// ("too many results to unpack"), and the request failed open as if Redis
// were down; the reply is now built in a loop. 2,100 limits (more than
// MaxLimits) are run on the store directly to prove it.
func TestTakeMaxLimits(t *testing.T) {
	run := func(t *testing.T, s ratelimit.Store) {
		for _, n := range []int{ratelimit.MaxLimits, 2100} {
			ls := manyLimits(n, "acme"+strconv.Itoa(n))
			for round, want := range []struct {
				allowed   bool
				remaining int64
			}{{true, 1}, {true, 0}, {false, 0}} {
				out, err := s.Take(context.Background(), &ratelimit.Request{Limits: ls})
				if err != nil {
					t.Fatalf("%d limits, take %d: %v", n, round+1, err)
				}
				if out.Allowed != want.allowed || len(out.Limits) != n {
					t.Fatalf("%d limits, take %d: allowed %v with %d states, want %v with %d", n, round+1, out.Allowed, len(out.Limits), want.allowed, n)
				}
				for i, st := range out.Limits {
					if st.Remaining != want.remaining || st.Exceeded != !want.allowed {
						t.Fatalf("%d limits, take %d, limit %d: remaining %d exceeded %v; want %d, %v", n, round+1, i, st.Remaining, st.Exceeded, want.remaining, !want.allowed)
					}
				}
			}
		}
	}
	t.Run("memory", func(t *testing.T) { run(t, ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})) })
	t.Run("redis", func(t *testing.T) { run(t, ratelimit.NewRedisStore(redistest.Start(t).Client(), 30*time.Second)) })
	t.Run("cluster", func(t *testing.T) {
		run(t, ratelimit.NewRedisStore(redistest.StartCluster(t, 3).Client(), 30*time.Second))
	})
}

// TestTakeTooManyLimits: the engine refuses a request with more than
// MaxLimits limits as invalid (nothing is taken, no failure mode applies).
func TestTakeTooManyLimits(t *testing.T) {
	e, err := ratelimit.NewEngine(ratelimit.NewMemoryStore(ratelimit.MemoryOptions{}), ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Take(context.Background(), &ratelimit.Request{Limits: manyLimits(ratelimit.MaxLimits+1, "acme")})
	if !errors.Is(err, ratelimit.ErrInvalidRequest) {
		t.Errorf("%d limits: %v, want ErrInvalidRequest", ratelimit.MaxLimits+1, err)
	}
}
