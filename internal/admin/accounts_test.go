package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tollgate-dev/tollgate/internal/admin"
	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/internal/wire"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "s3cret-admin-token"

var discard = slog.New(slog.DiscardHandler)

// allScopes is tok as the all-scopes token (admin.token); "": no token.
func allScopes(t testing.TB, tok string) *admin.Tokens {
	t.Helper()
	if tok == "" {
		return nil
	}
	k, err := admin.NewTokens(admin.AllScopes(tok))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func memoryEngine(t testing.TB) *ratelimit.Engine {
	t.Helper()
	e, err := ratelimit.NewEngine(ratelimit.NewMemoryStore(ratelimit.MemoryOptions{}), ratelimit.Options{Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func redisEngine(t testing.TB, srv *redistest.Server, timeout time.Duration) *ratelimit.Engine {
	t.Helper()
	e, err := ratelimit.NewEngine(ratelimit.NewRedisStore(srv.Client(), timeout), ratelimit.Options{Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// serve runs the accounts API over accounts on a real HTTP server.
func serve(t testing.TB, accounts admin.Accounts, tok string) string {
	t.Helper()
	srv := httptest.NewServer(admin.AccountsHandler(accounts, allScopes(t, tok), discard, nil))
	t.Cleanup(srv.Close)
	return srv.URL
}

type call struct {
	method, path string
	auth         string // Authorization header; "-" for none, "" for the right token
	key          string // Idempotency-Key; none when ""
	body         string
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func do(t testing.TB, base string, c call) reply {
	t.Helper()
	r, err := send(base, c)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// send is do for goroutines other than the test's.
func send(base string, c call) (reply, error) {
	req, err := http.NewRequest(c.method, base+c.path, strings.NewReader(c.body))
	if err != nil {
		return reply{}, err
	}
	switch c.auth {
	case "":
		req.Header.Set("Authorization", "Bearer "+token)
	case "-":
	default:
		req.Header.Set("Authorization", c.auth)
	}
	if c.key != "" {
		req.Header.Set("Idempotency-Key", c.key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: body}, err
}

func topUp(account, key string, amount any) call {
	return call{method: "POST", path: "/v1/accounts/" + account + "/credits", key: key, body: fmt.Sprintf(`{"amount": %v}`, amount)}
}

type problem = wire.Problem

// wantProblem checks that r is a problem+json document with status.
func wantProblem(t testing.TB, r reply, status int) problem {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json", ct)
	}
	var p problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, r.body)
	}
	if p.Title == "" || p.Status != status || p.Detail == "" {
		t.Errorf("problem = %+v, want type, title, status %d and detail", p, status)
	}
	// One type-URI scheme for every problem Tollgate answers.
	if p.Type != "about:blank" && p.Type != wire.ProblemTypeBase+p.Reason {
		t.Errorf("problem type %q, want about:blank or %s<reason> (reason %q)", p.Type, wire.ProblemTypeBase, p.Reason)
	}
	return p
}

type credit struct {
	Account string `json:"account"`
	Balance int64  `json:"balance"`
	Applied bool   `json:"applied"`
}

func wantCredit(t testing.TB, r reply) credit {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status = %d, want 200; body %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var c credit
	dec := json.NewDecoder(strings.NewReader(string(r.body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("body: %v\n%s", err, r.body)
	}
	return c
}

func balance(t testing.TB, base, account string) int64 {
	t.Helper()
	r := do(t, base, call{method: "GET", path: "/v1/accounts/" + account})
	if r.status != http.StatusOK {
		t.Fatalf("GET account: status %d, body %s", r.status, r.body)
	}
	var a ratelimit.Account
	if err := json.Unmarshal(r.body, &a); err != nil {
		t.Fatal(err)
	}
	return a.Balance
}

// TestCredit runs a sequence of top-ups of one account, each step seeing
// the previous ones.
func TestCredit(t *testing.T) {
	base := serve(t, memoryEngine(t), token)
	steps := []struct {
		name string
		call call
		want credit
	}{
		{"first top-up", topUp("acme", "k1", 100), credit{"acme", 100, true}},
		{"replay with the same key is not applied", topUp("acme", "k1", 100), credit{"acme", 100, false}},
		{"a new key is applied", topUp("acme", "k2", 50), credit{"acme", 150, true}},
		{"integer exponent form", topUp("acme", "k3", "1e3"), credit{"acme", 1150, true}},
		{"integer fraction form", topUp("acme", "k4", "2.50e1"), credit{"acme", 1175, true}},
		{"longest key", topUp("acme", strings.Repeat("k", admin.MaxIdempotencyKeyLen), 1), credit{"acme", 1176, true}},
		{"another account", topUp("globex", "k1", admin.MaxIdempotencyKeyLen), credit{"globex", admin.MaxIdempotencyKeyLen, true}},
		{"escaped slash in the id", topUp("team%2Fa%20b", "k1", 7), credit{"team/a b", 7, true}},
		{"longest id", topUp(strings.Repeat("a", admin.MaxAccountIDLen), "k1", 1), credit{strings.Repeat("a", admin.MaxAccountIDLen), 1, true}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if got := wantCredit(t, do(t, base, s.call)); got != s.want {
				t.Errorf("got %+v, want %+v", got, s.want)
			}
		})
	}
}

func TestCreditConflicts(t *testing.T) {
	base := serve(t, memoryEngine(t), token)
	wantCredit(t, do(t, base, topUp("acme", "k1", 100)))

	t.Run("same key with another amount", func(t *testing.T) {
		p := wantProblem(t, do(t, base, topUp("acme", "k1", 99)), http.StatusConflict)
		if !strings.Contains(p.Detail, `"k1"`) || !strings.Contains(p.Detail, "different amount") {
			t.Errorf("detail = %q, want it to name the key and the reuse", p.Detail)
		}
		if got := balance(t, base, "acme"); got != 100 {
			t.Errorf("balance = %d, want 100 (unchanged)", got)
		}
	})
	t.Run("the original amount still replays", func(t *testing.T) {
		if got := wantCredit(t, do(t, base, topUp("acme", "k1", 100))); got != (credit{"acme", 100, false}) {
			t.Errorf("got %+v, want balance 100 not applied", got)
		}
	})
	t.Run("balance overflow", func(t *testing.T) {
		p := wantProblem(t, do(t, base, topUp("acme", "k2", int64(ratelimit.MaxCredits))), http.StatusConflict)
		if !strings.Contains(p.Detail, "9007199254740991") {
			t.Errorf("detail = %q, want it to name the maximum", p.Detail)
		}
		if got := balance(t, base, "acme"); got != 100 {
			t.Errorf("balance = %d, want 100 (unchanged)", got)
		}
	})
	t.Run("up to the maximum", func(t *testing.T) {
		got := wantCredit(t, do(t, base, topUp("acme", "k3", int64(ratelimit.MaxCredits)-100)))
		if got.Balance != ratelimit.MaxCredits || !got.Applied {
			t.Errorf("got %+v, want balance %d applied", got, int64(ratelimit.MaxCredits))
		}
	})
}

func TestCreditBadAmount(t *testing.T) {
	base := serve(t, memoryEngine(t), token)
	tests := []struct {
		name   string
		amount string
		got    string // what the detail quotes; amount when ""
	}{
		{name: "negative", amount: "-5"},
		{name: "zero", amount: "0"},
		{name: "negative zero", amount: "-0"},
		{name: "zero with exponent", amount: "0e5"},
		{name: "string", amount: `"10"`},
		{name: "fraction", amount: "1.5"},
		{name: "small fraction", amount: "0.0000001"},
		{name: "fractional exponent form", amount: "15e-1"},
		{name: "negative exponent", amount: "1e-1"},
		{name: "one above the maximum", amount: "9007199254740992"},
		{name: "maximum with exponent above", amount: "9.007199254740992e15"},
		{name: "beyond int64 in exponent form", amount: "1e30"},
		{name: "beyond int64", amount: "99999999999999999999"},
		{name: "beyond float64", amount: "1e400"},
		{name: "huge exponent", amount: "1e99999999999999999999"},
		{name: "tiny exponent", amount: "1e-99999999999999999999"},
		{name: "null", amount: "null"},
		{name: "boolean", amount: "true"},
		{name: "object", amount: `{"value": 1}`, got: `{"value":1}`},
		{name: "array", amount: "[1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := wantProblem(t, do(t, base, topUp("acme", "key-"+tt.name, tt.amount)), http.StatusBadRequest)
			quoted := tt.got
			if quoted == "" {
				quoted = tt.amount
			}
			want := "amount must be a positive integer no larger than 9007199254740991, got " + quoted
			if p.Detail != want {
				t.Errorf("detail = %q, want %q", p.Detail, want)
			}
		})
	}
	if got := balance(t, base, "acme"); got != 0 {
		t.Errorf("balance = %d after refused top-ups, want 0", got)
	}
}

func TestCreditBadRequest(t *testing.T) {
	base := serve(t, memoryEngine(t), token)
	ok := topUp("acme", "k1", 10)
	with := func(f func(*call)) call { c := ok; f(&c); return c }
	tests := []struct {
		name   string
		call   call
		header http.Header // added to the request
		status int
		detail string // a part of the problem's detail
	}{
		{name: "missing Idempotency-Key", call: with(func(c *call) { c.key = "" }), status: 400, detail: "Idempotency-Key header is required"},
		{name: "Idempotency-Key too long", call: with(func(c *call) { c.key = strings.Repeat("k", admin.MaxIdempotencyKeyLen+1) }), status: 400, detail: "256 bytes long; the maximum is 255"},
		{name: "two Idempotency-Keys", call: ok, header: http.Header{"Idempotency-Key": {"k2"}}, status: 400, detail: "send exactly one"},
		{name: "unknown field", call: with(func(c *call) { c.body = `{"amount": 10, "currency": "usd"}` }), status: 400, detail: `unknown field "currency"`},
		{name: "field name case differs", call: with(func(c *call) { c.body = `{"Amount": 10}` }), status: 400, detail: `unknown field "Amount"`},
		{name: "amount twice", call: with(func(c *call) { c.body = `{"amount": 10, "amount": 20}` }), status: 400, detail: `"amount" appears more than once`},
		{name: "amount missing", call: with(func(c *call) { c.body = `{}` }), status: 400, detail: `field "amount" is required`},
		{name: "empty body", call: with(func(c *call) { c.body = "" }), status: 400, detail: "request body is empty"},
		{name: "not an object", call: with(func(c *call) { c.body = `[10]` }), status: 400, detail: "not a JSON object"},
		{name: "bare number", call: with(func(c *call) { c.body = `10` }), status: 400, detail: "not a JSON object"},
		{name: "invalid JSON", call: with(func(c *call) { c.body = `{"amount": 10,}` }), status: 400, detail: "not valid JSON"},
		{name: "truncated JSON", call: with(func(c *call) { c.body = `{"amount": 10` }), status: 400, detail: "not valid JSON"},
		{name: "data after the object", call: with(func(c *call) { c.body = `{"amount": 10} {"amount": 10}` }), status: 400, detail: "data after the JSON object"},
		{name: "garbage after the object", call: with(func(c *call) { c.body = `{"amount": 10} x` }), status: 400, detail: "data after the JSON object"},
		{name: "body too large", call: with(func(c *call) { c.body = `{"amount": 10` + strings.Repeat(" ", admin.MaxCreditBodyLen) + `}` }), status: 413, detail: "larger than 4096 bytes"},
		{name: "control character in the id", call: with(func(c *call) { c.path = "/v1/accounts/a%00b/credits" }), status: 400, detail: `"a\x00b" contains a control character`},
		{name: "DEL in the id", call: with(func(c *call) { c.path = "/v1/accounts/a%7Fb/credits" }), status: 400, detail: "control character"},
		{name: "id not UTF-8", call: with(func(c *call) { c.path = "/v1/accounts/a%FFb/credits" }), status: 400, detail: "not valid UTF-8"},
		{name: "id too long", call: with(func(c *call) { c.path = "/v1/accounts/" + strings.Repeat("a", admin.MaxAccountIDLen+1) + "/credits" }), status: 400, detail: "257 bytes long; the maximum is 256"},
		{name: "GET with a control character in the id", call: call{method: "GET", path: "/v1/accounts/%0A"}, status: 400, detail: "control character"},
		{name: "empty id", call: call{method: "GET", path: "/v1/accounts/"}, status: 400, detail: "account id is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.call.method, base+tt.call.path, strings.NewReader(tt.call.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+token)
			if tt.call.key != "" {
				req.Header.Set("Idempotency-Key", tt.call.key)
			}
			for k, vs := range tt.header {
				for _, v := range vs {
					req.Header.Add(k, v)
				}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			p := wantProblem(t, reply{status: resp.StatusCode, header: resp.Header, body: body}, tt.status)
			if !strings.Contains(p.Detail, tt.detail) {
				t.Errorf("detail = %q, want it to contain %q", p.Detail, tt.detail)
			}
		})
	}
	if got := balance(t, base, "acme"); got != 0 {
		t.Errorf("balance = %d after refused top-ups, want 0", got)
	}
}

func TestAuth(t *testing.T) {
	base := serve(t, memoryEngine(t), token)
	tests := []struct {
		name   string
		auth   string
		detail string
	}{
		{"no Authorization", "-", "missing bearer token"},
		{"empty bearer token", "Bearer ", "missing bearer token"},
		{"basic scheme", "Basic " + token, "missing bearer token"},
		{"no scheme", token, "missing bearer token"},
		{"wrong token", "Bearer wrong", "not one of this server's admin tokens"},
		{"token prefix", "Bearer " + token[:len(token)-1], "not one of this server's admin tokens"},
		{"token with a suffix", "Bearer " + token + "x", "not one of this server's admin tokens"},
	}
	routes := []call{
		topUp("acme", "k1", 10),
		{method: "GET", path: "/v1/accounts/acme"},
		{method: "GET", path: "/nowhere"},
	}
	for _, tt := range tests {
		for _, c := range routes {
			t.Run(tt.name+"/"+c.method+" "+c.path, func(t *testing.T) {
				c.auth = tt.auth
				r := do(t, base, c)
				p := wantProblem(t, r, http.StatusUnauthorized)
				if got, want := r.header.Get("WWW-Authenticate"), `Bearer realm="tollgate-admin"`; got != want {
					t.Errorf("WWW-Authenticate = %q, want %q", got, want)
				}
				if !strings.Contains(p.Detail, tt.detail) {
					t.Errorf("detail = %q, want it to contain %q", p.Detail, tt.detail)
				}
				if strings.Contains(string(r.body), token) {
					t.Errorf("the body reveals the token: %s", r.body)
				}
			})
		}
	}
	t.Run("the scheme is case-insensitive", func(t *testing.T) {
		c := topUp("acme", "k1", 10)
		c.auth = "bearer " + token
		wantCredit(t, do(t, base, c))
	})
	if got := balance(t, base, "acme"); got != 10 {
		t.Errorf("balance = %d, want 10 (only the authorized top-up)", got)
	}
}

func TestCreditLog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	srv := httptest.NewServer(admin.AccountsHandler(memoryEngine(t), allScopes(t, token), log, nil))
	defer srv.Close()
	wantCredit(t, do(t, srv.URL, topUp("acme", "k1", 100)))
	wantCredit(t, do(t, srv.URL, topUp("acme", "k1", 100)))

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{
		"level=INFO msg=\"credits added\" account=acme amount=100 applied=true balance=100 idempotency_key=k1",
		"level=INFO msg=\"credits added\" account=acme amount=100 applied=false balance=100 idempotency_key=k1",
	}
	if len(lines) != len(want) {
		t.Fatalf("log has %d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i := range want {
		if _, rest, _ := strings.Cut(lines[i], " "); rest != want[i] { // cut the time
			t.Errorf("log line %d = %q, want %q", i, rest, want[i])
		}
	}
	if strings.Contains(buf.String(), token) {
		t.Errorf("the log reveals the token:\n%s", buf.String())
	}
}

func TestDisabled(t *testing.T) {
	base := serve(t, memoryEngine(t), "")
	for _, auth := range []string{"-", "Bearer ", "Bearer anything"} {
		c := topUp("acme", "k1", 10)
		c.auth = auth
		p := wantProblem(t, do(t, base, c), http.StatusForbidden)
		if p.Detail != "admin API disabled: set admin.token or admin.tokens" {
			t.Errorf("Authorization %q: detail = %q", auth, p.Detail)
		}
	}
}

func TestShow(t *testing.T) {
	e := memoryEngine(t)
	base := serve(t, e, token)
	wantCredit(t, do(t, base, topUp("acme", "k1", 500)))
	quota := ratelimit.Limit{Name: "monthly", Key: "acme", Limit: 1000, Period: ratelimit.Month, Cost: 3, OnExceed: 402}
	charge := &ratelimit.Charge{Account: "acme", Credits: 2}
	if out, err := e.Take(context.Background(), &ratelimit.Request{Limits: []ratelimit.Limit{quota}, Charge: charge}); err != nil || !out.Allowed {
		t.Fatalf("Take = %+v, %v", out, err)
	}

	tests := []struct {
		name    string
		account string
		balance int64
		quotas  []string // name:key=used
	}{
		{"topped up and charged", "acme", 498, []string{"monthly:acme=3"}},
		{"unknown account", "nobody", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, base, call{method: "GET", path: "/v1/accounts/" + tt.account})
			if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/json" {
				t.Fatalf("status %d, Content-Type %q, body %s", r.status, r.header.Get("Content-Type"), r.body)
			}
			var a ratelimit.Account
			if err := json.Unmarshal(r.body, &a); err != nil {
				t.Fatal(err)
			}
			if a.Account != tt.account || a.Balance != tt.balance {
				t.Errorf("got account %q balance %d, want %q %d", a.Account, a.Balance, tt.account, tt.balance)
			}
			var quotas []string
			for _, q := range a.Quotas {
				quotas = append(quotas, fmt.Sprintf("%s:%s=%d", q.Name, q.Key, q.Used))
			}
			if fmt.Sprint(quotas) != fmt.Sprint(tt.quotas) {
				t.Errorf("quotas = %v, want %v", quotas, tt.quotas)
			}
			if !strings.Contains(string(r.body), `"quotas":[`) {
				t.Errorf("quotas is not a JSON array: %s", r.body)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	base := serve(t, memoryEngine(t), token)
	tests := []struct {
		name   string
		call   call
		status int
		allow  string
	}{
		{"unknown path", call{method: "GET", path: "/v1/other"}, 404, ""},
		{"unescaped slash in an id", call{method: "GET", path: "/v1/accounts/a/b"}, 404, ""},
		{"DELETE an account", call{method: "DELETE", path: "/v1/accounts/acme"}, 405, "GET, HEAD"},
		{"GET credits", call{method: "GET", path: "/v1/accounts/acme/credits"}, 405, "POST"},
		{"PUT credits", call{method: "PUT", path: "/v1/accounts/acme/credits", key: "k1", body: `{"amount": 1}`}, 405, "POST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, base, tt.call)
			wantProblem(t, r, tt.status)
			if got := r.header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow = %q, want %q", got, tt.allow)
			}
		})
	}
}

// TestCreditRedisReplicas tops up one account with one key from two
// replicas (two handlers, two Redis clients) at once: Redis applies it once.
func TestCreditRedisReplicas(t *testing.T) {
	srv := redistest.Start(t)
	replicas := []string{
		serve(t, redisEngine(t, srv, 2*time.Second), token),
		serve(t, redisEngine(t, srv, 2*time.Second), token),
	}
	const perReplica, amount = 20, 750
	var (
		wg              sync.WaitGroup
		mu              sync.Mutex
		applied, others int
		errs            []string
	)
	start := make(chan struct{})
	for _, base := range replicas {
		for range perReplica {
			wg.Go(func() {
				<-start
				r, err := send(base, topUp("acme", "same-key", amount))
				mu.Lock()
				defer mu.Unlock()
				var c credit
				if err != nil {
					errs = append(errs, err.Error())
					return
				}
				if r.status != http.StatusOK || json.Unmarshal(r.body, &c) != nil || c.Balance != amount {
					errs = append(errs, fmt.Sprintf("status %d, body %s", r.status, r.body))
					return
				}
				if c.Applied {
					applied++
				} else {
					others++
				}
			})
		}
	}
	close(start)
	wg.Wait()
	for _, e := range errs {
		t.Errorf("want 200 with balance %d, got %s", amount, e)
	}
	if applied != 1 || others != 2*perReplica-1 {
		t.Errorf("applied %d times and replayed %d times, want 1 and %d", applied, others, 2*perReplica-1)
	}
	for i, base := range replicas {
		if got := balance(t, base, "acme"); got != amount {
			t.Errorf("replica %d: balance = %d, want %d", i, got, amount)
		}
	}
}

// TestCreditRedisOutage: while Redis is down top-ups and reads answer 503;
// once it is back, the same handler serves again.
func TestCreditRedisOutage(t *testing.T) {
	srv := redistest.Start(t)
	base := serve(t, redisEngine(t, srv, 0), token)
	wantCredit(t, do(t, base, topUp("acme", "k1", 10)))

	srv.Stop()
	p := wantProblem(t, do(t, base, topUp("acme", "k2", 10)), http.StatusServiceUnavailable)
	if !strings.Contains(p.Detail, "retry with the same Idempotency-Key") {
		t.Errorf("detail = %q, want it to advise a retry with the same key", p.Detail)
	}
	wantProblem(t, do(t, base, call{method: "GET", path: "/v1/accounts/acme"}), http.StatusServiceUnavailable)

	srv.Restart() // empty: nothing is persisted
	if got := wantCredit(t, do(t, base, topUp("acme", "k2", 10))); got != (credit{"acme", 10, true}) {
		t.Errorf("after restart: got %+v, want balance 10 applied", got)
	}
	if got := balance(t, base, "acme"); got != 10 {
		t.Errorf("after restart: balance = %d, want 10", got)
	}
}

// FuzzCreditAmount posts {"amount": <input>} and checks the answer against
// math/big: 200 exactly when the input is a JSON number whose value is an
// integer from 1 to MaxCredits, crediting that value.
func FuzzCreditAmount(f *testing.F) {
	for _, s := range []string{
		"1", "100", "-5", "0", "-0", "1.5", "1.0", "1e3", "1E+3", "15e-1", "100e-2", "0.5e1",
		"9007199254740991", "9007199254740992", "9.007199254740991e15", "1e30",
		"99999999999999999999", "1e99999999999999999999", "1e-99999999999999999999",
		`"10"`, "null", "true", "[1]", `{}`, " 7 ", "1, \"amount\": 2", "1} {", "01", "1.", ".5", "+1", "NaN",
	} {
		f.Add(s)
	}
	maxCredits := big.NewRat(ratelimit.MaxCredits, 1)
	h := admin.AccountsHandler(memoryEngine(f), allScopes(f, token), discard, nil)
	var n atomic.Int64 // one account per input, so its balance is the amount
	f.Fuzz(func(t *testing.T, lit string) {
		body := `{"amount": ` + lit + `}`
		req := httptest.NewRequest("POST", fmt.Sprintf("/v1/accounts/a%d/credits", n.Add(1)), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Idempotency-Key", "k")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		want := int64(-1) // refused
		if n := strings.Trim(lit, " \t\r\n"); json.Valid([]byte(body)) && n != "" && (n[0] == '-' || n[0] >= '0' && n[0] <= '9') {
			mant, exp, _ := strings.Cut(strings.ToLower(n), "e")
			e, err := strconv.Atoi(exp)
			if exp == "" || err == nil && e > -10000 && e < 10000 {
				if r, ok := new(big.Rat).SetString(mant + "e" + strconv.Itoa(e)); ok && r.IsInt() && r.Sign() > 0 && r.Cmp(maxCredits) <= 0 {
					want = r.Num().Int64()
				}
			}
			// else |exponent| ≥ 10000 with at most 4 KiB of digits: zero,
			// a fraction or far above the maximum.
		}
		switch {
		case len(body) > admin.MaxCreditBodyLen:
			if rec.Code != http.StatusBadRequest && rec.Code != http.StatusRequestEntityTooLarge {
				t.Fatalf("body of %d bytes: status %d, want 400 or 413", len(body), rec.Code)
			}
		case want >= 0:
			if rec.Code != http.StatusOK {
				t.Fatalf("body %s: status %d (%s), want 200 crediting %d", body, rec.Code, rec.Body, want)
			}
			var c credit
			if err := json.Unmarshal(rec.Body.Bytes(), &c); err != nil || c.Balance != want || !c.Applied {
				t.Fatalf("body %s: got %s, want balance %d applied", body, rec.Body, want)
			}
		default:
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("body %s: status %d (%s), want 400", body, rec.Code, rec.Body)
			}
		}
	})
}

func ExampleAccountsHandler() {
	engine, _ := ratelimit.NewEngine(ratelimit.NewMemoryStore(ratelimit.MemoryOptions{}), ratelimit.Options{})
	tokens, _ := admin.NewTokens(admin.AllScopes("s3cret"))
	srv := httptest.NewServer(admin.AccountsHandler(engine, tokens, slog.New(slog.DiscardHandler), nil))
	defer srv.Close()

	for range 2 { // a retry with the same key is not applied twice
		req, _ := http.NewRequest("POST", srv.URL+"/v1/accounts/acme/credits", strings.NewReader(`{"amount": 100}`))
		req.Header.Set("Authorization", "Bearer s3cret")
		req.Header.Set("Idempotency-Key", "order-1234")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Print(resp.StatusCode, " ", string(body))
	}
	// Output:
	// 200 {"account":"acme","balance":100,"applied":true}
	// 200 {"account":"acme","balance":100,"applied":false}
}

// TestLedgerOff: without a durable ledger, the ledger routes answer 404
// ledger_off saying what to configure.
func TestLedgerOff(t *testing.T) {
	base := serve(t, memoryEngine(t), token)
	for _, path := range []string{"/v1/accounts", "/v1/accounts?limit=5", "/v1/accounts/acme/ledger", "/v1/accounts/acme/ledger/verify"} {
		p := wantProblem(t, do(t, base, call{method: "GET", path: path}), http.StatusNotFound)
		if p.Reason != "ledger_off" || !strings.Contains(p.Detail, "postgres.dsn") {
			t.Errorf("%s: %+v, want ledger_off naming postgres.dsn", path, p)
		}
	}
}
