//go:build faulttest

// The money fault test: `go test -tags faulttest -run TestFault ./internal/app/`
// (its own .ci/run step, without -race). Two Tollgate replicas share one
// redis-server; a client plays Envoy (Check with a 200 ms deadline) against
// both; every allowed request costs 1 credit. After each phase the credits
// charged (top-ups minus the final balance) are compared with the requests
// the client saw allowed, and the ledger with the balance.
package app_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tollgate-dev/tollgate/internal/app"
	"github.com/tollgate-dev/tollgate/internal/config"
	"github.com/tollgate-dev/tollgate/internal/pg/pgtest"
	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger/pgsink"
)

// replica is one running Tollgate of the fault test.
type replica struct {
	app    *app.App
	client authv3.AuthorizationClient
	als    alsv3.AccessLogServiceClient
}

func startReplica(t *testing.T, redisAddr string, edit ...func(*config.Config)) *replica {
	t.Helper()
	cfg := testConfig()
	cfg.Policy.Paths = []string{"testdata/charge.rego"}
	for _, e := range edit {
		e(cfg)
	}
	cfg.Store.Kind = "redis"
	cfg.Store.Redis.Addrs = []string{redisAddr}
	cfg.Store.Redis.PoolSize = 64
	a, err := app.New(context.Background(), cfg, slog.New(slog.DiscardHandler), "fault")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	conn, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("replica Run: %v", err)
		}
	})
	return &replica{app: a, client: authv3.NewAuthorizationClient(conn), als: alsv3.NewAccessLogServiceClient(conn)}
}

// loadDelivered plays Envoy with settle-on-delivery: each Check (with its
// own x-request-id) that the client sees allowed is forwarded, and an
// access log entry saying so — carrying the reservation from the Check's
// dynamic metadata — goes to either replica; a Check the client did not see
// allowed is never forwarded and its reservation, if any, expires. It
// returns how many were forwarded.
func loadDelivered(t *testing.T, replicas []*replica, n, concurrency int) int64 {
	var forwarded, next atomic.Int64
	var wg sync.WaitGroup
	for w := range concurrency {
		wg.Go(func() {
			streams := make([]alsv3.AccessLogService_StreamAccessLogsClient, len(replicas))
			defer func() {
				for _, s := range streams {
					if s != nil {
						_, _ = s.CloseAndRecv()
					}
				}
			}()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
					Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/v1/x", Host: "api.example.com",
						Id: fmt.Sprintf("w%d-r%d", w, i)},
				}}}
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				resp, err := replicas[i%int64(len(replicas))].client.Check(ctx, req)
				cancel()
				if err != nil || resp.GetOkResponse() == nil {
					continue // not forwarded: Envoy answers the client itself
				}
				forwarded.Add(1)
				entry := &accesslogdatav3.HTTPAccessLogEntry{
					CommonProperties: &accesslogdatav3.AccessLogCommon{
						UpstreamRequestAttemptCount: 1,
						Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
							"envoy.filters.http.ext_authz": resp.GetDynamicMetadata(),
						}},
					},
					Response: &accesslogdatav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(200)},
				}
				k := int(i/7) % len(replicas) // not the replica that answered the Check, often
				if streams[k] == nil {
					if streams[k], err = replicas[k].als.StreamAccessLogs(context.Background()); err != nil {
						t.Errorf("access log stream: %v", err)
						return
					}
				}
				if err := streams[k].Send(&alsv3.StreamAccessLogsMessage{
					Identifier: &alsv3.StreamAccessLogsMessage_Identifier{LogName: "tollgate"},
					LogEntries: &alsv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: &alsv3.StreamAccessLogsMessage_HTTPAccessLogEntries{
						LogEntry: []*accesslogdatav3.HTTPAccessLogEntry{entry},
					}},
				}); err != nil {
					t.Errorf("access log send: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	return forwarded.Load()
}

// load sends n Checks at the given concurrency, alternating replicas, each
// with Envoy's 200 ms deadline, and returns how many were allowed.
func load(replicas []*replica, n, concurrency int) int64 {
	var allowed, next atomic.Int64
	var wg sync.WaitGroup
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/v1/x", Host: "api.example.com"},
	}}}
	for range concurrency {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				resp, err := replicas[i%int64(len(replicas))].client.Check(ctx, req)
				cancel()
				if err == nil && resp.GetOkResponse() != nil {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return allowed.Load()
}

// TestFault: charged never less than allowed, and equal to it under Redis
// pauses and restarts at moderate concurrency; under overload charged
// equals what the server answered OK in time, and the requests whose
// answers still reached the client late (the server cannot know) are
// logged. A PostgreSQL outage changes nothing but the
// shipping lag; a top-up sent to both replicas during a Redis pause with one
// Idempotency-Key is applied once; the ledger the replicas shipped to
// PostgreSQL sums to the balance.
func TestFault(t *testing.T) {
	srv := redistest.StartWith(t, "--appendonly", "yes", "--appendfsync", "always")
	db := pgtest.New(t)
	pgProxy := db.Proxy() // the replicas reach PostgreSQL through it, so it can be cut
	withLedger := func(c *config.Config) {
		c.Postgres.DSN = pgProxy.DSN
		c.Admin.Token = faultToken
	}
	replicas := []*replica{startReplica(t, srv.Addr, withLedger), startReplica(t, srv.Addr, withLedger)}
	store := ratelimit.NewRedisStore(srv.Client(), time.Second)
	ctx := context.Background()
	const seed = 10_000_000
	if _, err := store.Credit(ctx, "acme", seed, "fault-seed"); err != nil {
		t.Fatal(err)
	}
	balance := func() int64 { return acmeBalance(store) }
	var totalAllowed, servedBefore int64
	settle := func() {
		// A Check the client gave up on may still be running on a
		// replica, about to register the void of a Take whose reply it
		// lost; pending voids are retried until Redis acknowledges them.
		// Wait until no replica answers a Check and none has a void left.
		deadline := time.Now().Add(30 * time.Second)
		for _, r := range replicas {
			for inFlight(t, r) != 0 || pendingVoids(t, r) != 0 {
				if time.Now().After(deadline) {
					t.Fatal("Checks in flight or voids still pending after 30 s")
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	phase := func(name string, n, concurrency int, fault func(stop <-chan struct{}), maxOver float64) {
		t.Helper()
		before := balance()
		stop := make(chan struct{})
		faulted := make(chan struct{})
		go func() { defer close(faulted); fault(stop) }()
		allowed := load(replicas, n, concurrency)
		close(stop)
		<-faulted
		settle()
		charged := before - balance()
		totalAllowed += allowed
		over := charged - allowed
		served := 0.0
		for _, r := range replicas {
			served += metric(t, r, `tollgate_authz_decisions_total{status="200"} `)
		}
		answered := int64(served) - servedBefore
		servedBefore = int64(served)
		t.Logf("%-28s requests %6d  allowed %6d  charged %6d  charged for refused %d (answered OK by the server %d: %d reached the client late)",
			name, n, allowed, charged, over, answered, answered-allowed)
		voids := map[string]float64{}
		for _, r := range replicas {
			for _, res := range []string{"refunded", "nothing_taken", "unresolved", "dropped"} {
				voids[res] += metric(t, r, `tollgate_voids_total{result="`+res+`"} `)
			}
		}
		t.Logf("%-28s voids so far: %v", "", voids)
		if charged < allowed {
			t.Errorf("%s: %d allowed but only %d charged", name, allowed, charged)
		}
		// What the server controls is exact: it charged exactly the
		// requests it answered OK in time.
		if charged != answered {
			t.Errorf("%s: %d charged, but the server answered %d OK", name, charged, answered)
			diagnose(t, srv.Client())
		}
		if maxOver >= 0 && float64(over) > maxOver*float64(allowed) {
			t.Errorf("%s: %d charged for refused requests (%d allowed), more than %.1f%%", name, over, allowed, 100*maxOver)
		}
	}
	none := func(<-chan struct{}) {}
	pauses := redisPauses(srv)
	restarts := func(stop <-chan struct{}) {
		for range 3 {
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
			srv.Restart() // kill -9, then start on the same AOF
		}
	}
	phase("no fault, concurrency 64", 20_000, 64, none, 0)
	phase("Redis pauses, concurrency 64", 10_000, 64, pauses, 0)
	phase("Redis kill/restart, conc. 64", 10_000, 64, restarts, 0)
	// Under overload, an answer the server sent in time (with at least
	// store.answer_margin left) can still reach the client after its
	// deadline: the server cannot know. On this machine the client, both
	// replicas and Redis share two cores, so that residue measures how
	// starved the client is, not Tollgate: 0.4-1.7 % in most runs, 13 % in
	// one run on an otherwise idle machine. It is logged, not asserted
	// (-1); what the server controls is asserted exactly above (charged ==
	// answered OK in time), and settle on delivery (TestFaultDelivery) is
	// exact under the same overload.
	phase("overload, concurrency 1,000", 20_000, 1000, none, -1)
	phase("PostgreSQL outage, conc. 64", 10_000, 64, func(stop <-chan struct{}) {
		pgProxy.Cut()
		<-stop
		pgProxy.Restore()
	}, 0)

	// A top-up POSTed to both replicas at once, with one Idempotency-Key,
	// while Redis is paused: applied once.
	before := balance()
	srv.Pause()
	var posts sync.WaitGroup
	for _, r := range replicas {
		posts.Go(func() { topUp(r, "fault-topup-1", 500) })
	}
	time.Sleep(300 * time.Millisecond) // the pause being simulated
	srv.Resume()
	posts.Wait()
	for _, r := range replicas { // retried until each answers: the same key again
		deadline := time.Now().Add(10 * time.Second)
		for topUp(r, "fault-topup-1", 500) != http.StatusOK {
			if time.Now().After(deadline) {
				t.Fatal("the top-up never succeeded")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if got := balance() - before; got != 500 {
		t.Errorf("one top-up of 500 sent 4 times during a pause changed the balance by %d", got)
	}

	// The ledger in PostgreSQL (shipped by the replicas through the
	// outage): one entry per balance change, summing to the balance.
	sink := pgsink.New(db.Pool())
	final := balance()
	deadline := time.Now().Add(60 * time.Second)
	for {
		sum, n, err := sink.Sum(ctx, "acme")
		if err == nil && sum == final {
			t.Logf("ledger in PostgreSQL: %d entries summing to the balance %d; %d allowed in all", n, final, totalAllowed)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ledger in PostgreSQL sums to %d (%v), the balance is %d", sum, err, final)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

const faultToken = "fault-token"

// redisPauses is a fault: Redis paused for 30 ms to 1.5 s every 200 ms
// until stop.
func redisPauses(srv *redistest.Server) func(stop <-chan struct{}) {
	return func(stop <-chan struct{}) {
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			srv.Pause()
			time.Sleep(time.Duration(30+rand.IntN(1470)) * time.Millisecond) // the pause being simulated
			srv.Resume()
		}
	}
}

// acmeBalance reads acme's balance, waiting out a Redis restart.
// diagnose lists what the ledger stream says of a phase that was not
// exact: requests charged twice, and charges no refund follows whose
// entry was added long after its script began (a Take stopped mid-script,
// which a void once missed).
func diagnose(t *testing.T, c redis.UniversalClient) {
	entries, err := c.XRange(context.Background(), "tollgate:{ledger}:ledger", "-", "+").Result()
	if err != nil {
		t.Logf("diagnose: %v", err)
		return
	}
	charges, refunded := map[string]redis.XMessage{}, map[string]bool{}
	for _, e := range entries {
		id, _ := e.Values["r"].(string)
		switch e.Values["k"] {
		case "charge":
			if _, twice := charges[id]; twice {
				t.Logf("diagnose: request %s charged twice (%s)", id, e.ID)
			}
			charges[id] = e
		case "refund":
			refunded[id] = true
		}
	}
	for id, e := range charges {
		began, _ := strconv.ParseInt(fmt.Sprint(e.Values["t"]), 10, 64)
		ms, _, _ := strings.Cut(e.ID, "-")
		added, _ := strconv.ParseInt(ms, 10, 64)
		if !refunded[id] && added-began/1000 > 100 {
			t.Logf("diagnose: request %s charged, not refunded, its entry %s added %d ms after its script began", id, e.ID, added-began/1000)
		}
	}
}

func acmeBalance(store *ratelimit.RedisStore) int64 {
	for {
		a, err := store.Account(context.Background(), "acme")
		if err == nil {
			return a.Balance
		}
		time.Sleep(50 * time.Millisecond) // Redis restarting
	}
}

// topUp POSTs a top-up to a replica's admin API and returns the status (0
// when the request failed).
func topUp(r *replica, key string, amount int) int {
	req, err := http.NewRequest(http.MethodPost, "http://"+r.app.AdminAddr()+"/v1/accounts/acme/credits",
		strings.NewReader(fmt.Sprintf(`{"amount": %d}`, amount)))
	if err != nil {
		return 0
	}
	req.Header.Set("Authorization", "Bearer "+faultToken)
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// pendingVoids reads tollgate_voids_pending from a replica's /metrics.
func pendingVoids(t *testing.T, r *replica) float64 {
	t.Helper()
	return metric(t, r, "tollgate_voids_pending ")
}

func inFlight(t *testing.T, r *replica) float64 {
	t.Helper()
	return metric(t, r, "tollgate_authz_checks_in_flight ")
}

// metric reads one sample from a replica's /metrics; prefix is the
// sample's name and labels, up to the value.
func metric(t *testing.T, r *replica, prefix string) float64 {
	t.Helper()
	_, body := get(t, "http://"+r.app.AdminAddr()+"/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %q in /metrics", prefix)
	return 0
}

// TestFaultDelivery: with settle on delivery, the credits charged equal the
// requests forwarded, exactly, under overload and Redis pauses: each
// forwarded request's access log entry captures its reservation, every
// other reservation expires uncharged.
func TestFaultDelivery(t *testing.T) {
	// Well above the engine's longest retry backoff (5 s), as in production
	// (5 min): a settle that failed during a pause is retried in time.
	const settleTimeout = 10 * time.Second
	srv := redistest.StartWith(t, "--appendonly", "yes", "--appendfsync", "always")
	delivery := func(c *config.Config) {
		c.Policy.Paths = []string{"testdata/charge-delivery.rego"}
		c.Settle.Timeout = config.Duration(settleTimeout)
		c.Settle.SweepInterval = config.Duration(100 * time.Millisecond)
	}
	replicas := []*replica{startReplica(t, srv.Addr, delivery), startReplica(t, srv.Addr, delivery)}
	store := ratelimit.NewRedisStore(srv.Client(), time.Second)
	ctx := context.Background()
	if _, err := store.Credit(ctx, "acme", 10_000_000, "fault-seed"); err != nil {
		t.Fatal(err)
	}
	balance := func() int64 { return acmeBalance(store) }
	pending := func() int64 {
		n, err := srv.Client().HLen(ctx, "tollgate:{acme}:res").Result()
		if err != nil {
			return -1
		}
		return n
	}
	phase := func(name string, n, concurrency int, fault func(stop <-chan struct{})) {
		t.Helper()
		before := balance()
		stop := make(chan struct{})
		faulted := make(chan struct{})
		go func() { defer close(faulted); fault(stop) }()
		forwarded := loadDelivered(t, replicas, n, concurrency)
		close(stop)
		<-faulted
		// Every reservation is settled (captured) or expires (released);
		// settled ones are remembered for a while: wait until the balance
		// no longer moves and no reservation is open.
		deadline := time.Now().Add(60 * time.Second)
		last := balance()
		for {
			for _, r := range replicas { // failed settles are retried until acknowledged
				for pendingVoids(t, r) != 0 {
					if time.Now().After(deadline) {
						t.Fatalf("%s: settles still pending", name)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			// Longer than settle.timeout: a reservation still open now has
			// expired by then (released, not charged).
			time.Sleep(settleTimeout + 500*time.Millisecond)
			b := balance()
			if b == last {
				break
			}
			last = b
			if time.Now().After(deadline) {
				t.Fatalf("%s: the balance never settled", name)
			}
		}
		charged := before - last
		t.Logf("%-28s requests %6d  forwarded %6d  charged %6d  (reservations remembered: %d)", name, n, forwarded, charged, pending())
		if charged != forwarded {
			t.Errorf("%s: %d forwarded but %d charged", name, forwarded, charged)
		}
	}
	pauses := redisPauses(srv)
	phase("delivery, concurrency 64", 10_000, 64, func(<-chan struct{}) {})
	phase("delivery, Redis pauses", 5_000, 64, pauses)
	phase("delivery, overload 1,000", 10_000, 1000, func(<-chan struct{}) {})
}
