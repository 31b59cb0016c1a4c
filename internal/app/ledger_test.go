package app_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tollgate-dev/tollgate/internal/pg/pgtest"
	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger/pgsink"
)

// getJSON GETs url with a bearer token and decodes a 200 answer into v.
func getJSON(t *testing.T, url, token string, v any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	doJSON(t, req, token, v)
}

// doJSON sends req with a bearer token and decodes a 200 answer into v.
func doJSON(t *testing.T, req *http.Request, token string, v any) {
	t.Helper()
	url := req.URL.String()
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s", req.Method, url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// TestLedgerShippedToPostgres: with a Redis store and PostgreSQL
// configured, every charge of a served Check and every top-up reaches the
// ledger table, once, and the ledger sums to the balance; what is shipped
// leaves Redis.
func TestLedgerShippedToPostgres(t *testing.T) {
	db := pgtest.New(t)
	srv := redistest.Start(t)
	cfg := testConfig()
	cfg.Policy.Paths = []string{"testdata/charge.rego"}
	cfg.Store.Kind = "redis"
	cfg.Store.Redis.Addrs = []string{srv.Addr}
	cfg.Postgres.DSN = db.DSN
	cfg.Admin.Token = "s3cret"
	r := start(t, cfg)
	ctx := context.Background()
	store := ratelimit.NewRedisStore(srv.Client(), time.Second)
	if _, err := store.Credit(ctx, "acme", 100, "invoice-1"); err != nil {
		t.Fatal(err)
	}
	client := authv3.NewAuthorizationClient(r.conn)
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/v1/x", Headers: map[string]string{"x-request-id": "r1"}},
	}}}
	const checks = 7
	for range checks {
		resp, err := client.Check(ctx, req)
		if err != nil || resp.GetOkResponse() == nil {
			t.Fatalf("Check: %v %v", resp, err)
		}
	}
	sink := pgsink.New(db.Pool())
	deadline := time.Now().Add(20 * time.Second)
	for {
		sum, n, err := sink.Sum(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		if n == checks+1 {
			if sum != 100-checks {
				t.Errorf("ledger sum %d, want %d", sum, 100-checks)
			}
			break
		}
		if n > checks+1 || time.Now().After(deadline) {
			t.Fatalf("%d ledger entries in PostgreSQL, want %d", n, checks+1)
		}
		time.Sleep(20 * time.Millisecond)
	}
	a, err := store.Account(ctx, "acme")
	if err != nil || a.Balance != 100-checks {
		t.Errorf("balance %v %v, want %d", a, err, 100-checks)
	}
	entries, _, err := sink.Entries(ctx, "acme", pgsink.Cursor{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	charges := 0
	for _, e := range entries {
		if e.Kind == "charge" {
			charges++
			if e.Consumer != "acme" || e.PolicyRevision == "" || e.Amount != -1 {
				t.Errorf("charge entry %+v: want consumer acme, a policy revision, amount -1", e)
			}
		}
	}
	if charges != checks {
		t.Errorf("%d charge entries, want %d", charges, checks)
	}

	// The admin API pages through the ledger and verifies it.
	var all []ledger.Entry
	next := ""
	for pages := 0; ; pages++ {
		url := "http://" + r.app.AdminAddr() + "/v1/accounts/acme/ledger?limit=3"
		if next != "" {
			url += "&after=" + next
		}
		var page struct {
			Entries []ledger.Entry `json:"entries"`
			Next    string         `json:"next"`
		}
		getJSON(t, url, "s3cret", &page)
		all = append(all, page.Entries...)
		if next = page.Next; next == "" || pages > 10 {
			break
		}
	}
	if len(all) != checks+1 {
		t.Errorf("the ledger API listed %d entries, want %d", len(all), checks+1)
	}
	var v struct {
		Balance   int64 `json:"balance"`
		LedgerSum int64 `json:"ledger_sum"`
		Drift     int64 `json:"drift"`
	}
	getJSON(t, "http://"+r.app.AdminAddr()+"/v1/accounts/acme/ledger/verify", "s3cret", &v)
	if v.Balance != 100-checks || v.LedgerSum != v.Balance || v.Drift != 0 {
		t.Errorf("verify: %+v, want balance %d and no drift", v, 100-checks)
	}

	// Shipped entries stay in Redis for the trim lag, where voids look
	// (trimming past it is tested in ratelimit).
	if n, err := srv.Client().XLen(ctx, "tollgate:{ledger}:ledger").Result(); err != nil || n != int64(checks+1) {
		t.Errorf("Redis holds %d ledger entries (%v), want %d", n, err, checks+1)
	}
}
