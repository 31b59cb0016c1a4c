package ratelimit_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

// paidRequest charges account 1 credit and counts a monthly quota.
func paidRequest(account string) *ratelimit.Request {
	return &ratelimit.Request{
		Limits: []ratelimit.Limit{quota("monthly", account, 100, ratelimit.Month)},
		Charge: &ratelimit.Charge{Account: account, Credits: 1},
	}
}

// quotaUsed reads how much of the monthly quota of account is used.
func quotaUsed(t *testing.T, s ratelimit.Store, account string) int64 {
	t.Helper()
	a, err := s.Account(context.Background(), account)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range a.Quotas {
		if q.Name == "monthly" {
			return q.Used
		}
	}
	return 0
}

// TestPastDeadlineTakesNothing: a request whose deadline has passed when
// the store gets to it is refused with ErrDeadline and takes nothing, on
// both stores.
func TestPastDeadlineTakesNothing(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		credit(t, e.store, "acme", 10)
		req := paidRequest("acme")
		req.Deadline = e.now().Add(-2 * time.Second) // beyond the Redis store's clock skew allowance
		if rs, ok := e.store.(*ratelimit.RedisStore); ok {
			rs.SetClockSkew(time.Second)
		}
		if out, err := e.store.Take(context.Background(), req); !errors.Is(err, ratelimit.ErrDeadline) {
			t.Fatalf("Take past its deadline = %+v, %v; want ErrDeadline", out, err)
		}
		if b, used := balance(t, e.store, "acme"), quotaUsed(t, e.store, "acme"); b != 10 || used != 0 {
			t.Errorf("balance %d, quota used %d; want 10 and 0 (nothing taken)", b, used)
		}
		req = paidRequest("acme")
		req.Deadline = e.now().Add(time.Minute)
		if out := take(t, e.store, req); !out.Allowed || balance(t, e.store, "acme") != 9 {
			t.Errorf("within its deadline: %+v, balance %d; want allowed and charged", out, balance(t, e.store, "acme"))
		}
	})
}

// TestLateTakeInRedisTakesNothing: Redis pauses while a Take is on its way;
// the caller gives up (the store timeout); Redis resumes and runs the
// Take's script long after. The script refuses by Redis's clock, so the
// customer is not charged for a request Tollgate refused — even when no
// void reaches Redis (here: none is sent).
func TestLateTakeInRedisTakesNothing(t *testing.T) {
	srv := redistest.Start(t)
	client := ratelimit.NewRedisClient(ratelimit.RedisOptions{Addrs: []string{srv.Addr}, Timeout: 50 * time.Millisecond}, nil)
	t.Cleanup(func() { client.Close() })
	store := ratelimit.NewRedisStore(client, 50*time.Millisecond)
	store.SetClockSkew(100 * time.Millisecond)
	ctx := context.Background()
	if _, err := store.Credit(ctx, "acme", 10, "seed"); err != nil {
		t.Fatal(err)
	}
	take(t, store, paidRequest("acme")) // loads the script: the late call is an EVALSHA that runs
	calls := evalshaCalls(t, client)

	srv.Pause()
	_, err := store.Take(ctx, paidRequest("acme"))
	// Past timeout and skew by Redis's clock, but well before the store
	// would have taken it: the Take waits in Redis's socket meanwhile.
	time.Sleep(400 * time.Millisecond) //nolint:forbidigo // the pause being simulated, not a synchronisation
	srv.Resume()
	if err == nil {
		t.Fatal("Take during a Redis pause succeeded; want a timeout")
	}
	check := srv.Client()
	deadline := time.Now().Add(10 * time.Second)
	for evalshaCalls(t, check) < calls+1 {
		if time.Now().After(deadline) {
			t.Fatal("the delayed Take never ran in Redis")
		}
	}
	if b, used := balance(t, store, "acme"), quotaUsed(t, store, "acme"); b != 9 || used != 1 {
		t.Errorf("balance %d, quota used %d; want 9 and 1 (the late Take took nothing)", b, used)
	}
}

// evalshaCalls reads how many EVALSHA commands Redis has run.
func evalshaCalls(t *testing.T, c redis.UniversalClient) int {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_evalsha:calls="); ok {
			n, err := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	return 0
}

// TestGoneCallerRefunded: a Take that succeeds after its caller has gone
// (the context is done when the store answers) is refunded, so the answer
// that cannot be delivered costs nothing; Take reports the context's error.
func TestGoneCallerRefunded(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		eng, err := ratelimit.NewEngine(e.store, ratelimit.Options{})
		if err != nil {
			t.Fatal(err)
		}
		credit(t, e.store, "acme", 10)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if out, err := eng.Take(ctx, paidRequest("acme")); !errors.Is(err, context.Canceled) {
			t.Fatalf("Take for a gone caller = %+v, %v; want context.Canceled", out, err)
		}
		if b := balance(t, e.store, "acme"); b != 10 {
			t.Errorf("balance %d, want 10 (refunded or never charged)", b)
		}
	})
}

// TestAnswerMargin: a charged request taken with less than the answer
// margin left before its caller's deadline is refunded (Redis: voided by
// request id) and refused; with time to spare it is charged.
func TestAnswerMargin(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		eng, err := ratelimit.NewEngine(e.store, ratelimit.Options{AnswerMargin: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		credit(t, e.store, "acme", 10)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // under the margin
		defer cancel()
		if out, err := eng.Take(ctx, paidRequest("acme")); !errors.Is(err, ratelimit.ErrDeadline) {
			t.Fatalf("Take inside the margin = %+v, %v; want ErrDeadline", out, err)
		}
		// The credits come back (the Redis void gives back the quota it
		// counted too; the memory store's refund keeps it counted).
		if b := balance(t, e.store, "acme"); b != 10 {
			t.Errorf("balance %d; want 10 (refunded)", b)
		}
		ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel2()
		if out, err := eng.Take(ctx2, paidRequest("acme")); err != nil || !out.Allowed || balance(t, e.store, "acme") != 9 {
			t.Errorf("Take with time to spare = %+v, %v, balance %d; want allowed and charged", out, err, balance(t, e.store, "acme"))
		}
	})
}
