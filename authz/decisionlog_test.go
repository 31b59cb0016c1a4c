package authz_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/internal/decisionlog"
	"github.com/tollgate-dev/tollgate/internal/decisionlog/decisionlogtest"
	"github.com/tollgate-dev/tollgate/policies"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

// runLogger runs a decision logger for the test's lifetime, its metrics
// on a registry of its own, the policy revision "rev-1".
func runLogger(t testing.TB, sink decisionlog.Sink, opts decisionlog.Options) (*decisionlog.Logger, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	opts.Sink, opts.Registerer = sink, reg
	if opts.Revision == nil {
		opts.Revision = func() string { return "rev-1" }
	}
	l, _ := decisionlogtest.Run(t, opts)
	return l, reg
}

// TestDecisionLogRecords: one record per Check, for an allow, each kind of
// denial and a policy failure, over real gRPC, with the credential masked
// and the query cut.
func TestDecisionLogRecords(t *testing.T) {
	const key = "tg_live_3f9a1c0d5e7b4a2c" // acme's demo key, in the 200 fixture
	sink := decisionlogtest.NewSink(16)
	dl, _ := runLogger(t, sink, decisionlog.Options{Sample: 1})
	clients := map[string]authv3.AuthorizationClient{}
	client := func(policy string) authv3.AuthorizationClient {
		if clients[policy] == nil {
			clients[policy] = startServerWith(t, policy, "tollgate/decision", authz.Options{DecisionLog: dl, DenyStatus: 403})
		}
		return clients[policy]
	}
	withKey := fixture(t, "demo_200_api_key")
	h := withKey.Attributes.Request.Http
	h.Path += "&api_key=" + key
	h.Headers[":path"] = h.Path
	h.Headers["authorization"] = "Bearer " + key
	h.Headers["cookie"] = "session=" + key

	for _, tt := range []struct {
		name, policy string
		req          *authv3.CheckRequest
		repeat       int
		check        func(t *testing.T, r decisionlog.Document)
	}{{
		name: "allow", policy: "demo", req: withKey,
		check: func(t *testing.T, r decisionlog.Document) {
			if !r.Decision.Allow || r.Decision.Status != 200 || r.Consumer != "acme" || r.Plan != "pro" {
				t.Errorf("got %+v, want allowed 200 for acme on pro", r)
			}
			if r.Request.Method != "GET" || r.Request.Host != "api.example.com" || r.Request.Path != "/v1/invoices" {
				t.Errorf("request %+v, want GET api.example.com /v1/invoices (no query)", r.Request)
			}
			if r.Request.Headers["x-api-key"] != decisionlog.Masked || r.Request.Headers[":path"] != "/v1/invoices" {
				t.Errorf("headers %v, want x-api-key masked and :path without its query", r.Request.Headers)
			}
		},
	}, {
		name: "401", policy: "demo", req: fixture(t, "demo_401_unknown_key"),
		check: func(t *testing.T, r decisionlog.Document) {
			if r.Decision.Allow || r.Decision.Status != 401 || r.Decision.Reason != "invalid_credential" {
				t.Errorf("decision %+v, want 401 invalid_credential", r.Decision)
			}
		},
	}, {
		name: "403", policy: "demo", req: fixture(t, "demo_403_route_not_in_plan"),
		check: func(t *testing.T, r decisionlog.Document) {
			if r.Decision.Status != 403 || r.Consumer == "" {
				t.Errorf("got %+v, want 403 with its consumer", r)
			}
		},
	}, {
		name: "402 past due", policy: "demo", req: fixture(t, "demo_402_past_due"),
		check: func(t *testing.T, r decisionlog.Document) {
			if r.Decision.Status != 402 || r.Decision.Reason == "" {
				t.Errorf("decision %+v, want 402 with a reason", r.Decision)
			}
		},
	}, {
		name: "402 credits", policy: "limits", req: fixture(t, "limits_credits"),
		check: func(t *testing.T, r decisionlog.Document) {
			c := r.Decision.Charge
			if r.Decision.Status != 402 || r.Decision.Reason != "credits_exhausted" || c == nil || c.Credits != 5 || c.Balance == nil || *c.Balance != 0 {
				t.Errorf("decision %+v (charge %+v), want 402 credits_exhausted, 5 credits, balance 0", r.Decision, c)
			}
		},
	}, {
		name: "429", policy: "limits", req: fixture(t, "limits_rate"), repeat: 3,
		check: func(t *testing.T, r decisionlog.Document) {
			d := r.Decision
			if d.Status != 429 || d.Reason != "rate_limited" || d.Limit != "per_second" || len(d.Limits) != 2 ||
				!d.Limits[0].Exceeded || d.Limits[0].Remaining == nil || r.RequestID != "req-rate" {
				t.Errorf("got %+v, want 429 rate_limited by per_second with both limits' states, request id req-rate", r)
			}
		},
	}, {
		name: "policy failure", policy: "faulty", req: &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Path: "/conflict"}},
		}},
		check: func(t *testing.T, r decisionlog.Document) {
			if r.Decision.Status != 403 || r.Decision.Reason != "policy_error" || r.Request.Path != "/conflict" {
				t.Errorf("got %+v, want 403 policy_error on /conflict", r)
			}
		},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			c := client(tt.policy)
			var line string
			for range max(tt.repeat, 1) {
				if _, err := c.Check(context.Background(), tt.req); err != nil {
					t.Fatal(err)
				}
				line = <-sink.Lines // one record per Check
			}
			if strings.Contains(line, key) {
				t.Errorf("the API key appears in the record: %s", line)
			}
			var r decisionlog.Document
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("%v: %s", err, line)
			}
			if r.ID == "" || r.Service != "authz" || r.Revision != "rev-1" || r.Time == "" {
				t.Errorf("record %s lacks its id, service, revision or time", line)
			}
			tt.check(t, r)
		})
	}
}

// TestDecisionLogGRPCErrors: a Check answered with a gRPC error (the store
// down under fail-closed limits; the deadline passed) has its record too,
// without a status, the reason saying which.
func TestDecisionLogGRPCErrors(t *testing.T) {
	sink := decisionlogtest.NewSink(4)
	dl, _ := runLogger(t, sink, decisionlog.Options{Sample: 0}) // denials only: failures are always logged
	for _, tt := range []struct {
		name    string
		limiter authz.Limiter
		reason  string
	}{
		{"unavailable", failing{ratelimit.ErrStoreUnavailable}, "unavailable"},
		{"expired", failing{ratelimit.ErrDeadline}, "expired"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := limitsServer(t, authz.Options{Limiter: tt.limiter, DecisionLog: dl, Logger: slog.New(slog.DiscardHandler)})
			if _, err := c.Check(context.Background(), rateRequest()); err == nil {
				t.Fatal("Check succeeded, want a gRPC error")
			}
			var r decisionlog.Document
			if err := json.Unmarshal([]byte(<-sink.Lines), &r); err != nil {
				t.Fatal(err)
			}
			if d := r.Decision; d.Allow || d.Status != 0 || d.Reason != tt.reason || r.Consumer != "c1" || len(d.Limits) != 2 {
				t.Errorf("record %+v, want not allowed, no status, reason %q, consumer c1 and its two limits", r, tt.reason)
			}
		})
	}
}

// TestDecisionLogBlockedSink: with the sink stuck, Checks go on at their
// usual pace; the records that do not fit are dropped and counted.
func TestDecisionLogBlockedSink(t *testing.T) {
	sink := decisionlogtest.NewSink(64)
	sink.Block, sink.Entered = make(chan struct{}), make(chan struct{}, 1)
	dl, reg := runLogger(t, sink, decisionlog.Options{Sample: 1, Buffer: 4})
	t.Cleanup(func() { close(sink.Block) }) // before the logger stops (cleanups run last first)
	c := startServerWith(t, "demo", "tollgate/decision", authz.Options{DecisionLog: dl})
	req := fixture(t, "demo_401_unknown_key")
	if _, err := c.Check(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	<-sink.Entered // the runner holds the first record, stuck in the sink
	const n = 20
	for i := range n {
		start := time.Now()
		if _, err := c.Check(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		// A Check takes well under a millisecond here; waiting for the
		// sink would take forever. A second bounds it on a busy machine.
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Check %d took %v with the sink blocked", i, d)
		}
	}
	if got := gatherCounter(t, reg, "tollgate_decision_logs_dropped_total", "buffer_full"); got != n-4 {
		t.Errorf("dropped{buffer_full} = %v, want %d (the buffer holds 4)", got, n-4)
	}
}

func gatherCounter(t *testing.T, reg prometheus.Gatherer, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == name && (label == "" || len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() == label) {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{%s}", name, label)
	return 0
}

// TestDenialDebugLog: without decision logs, a denial is logged at debug
// level with its status, reason, consumer and request id; nothing at info,
// and nothing when decision logs are on.
func TestDenialDebugLog(t *testing.T) {
	engine, err := policies.New(context.Background(), policies.Options{Queries: []string{"tollgate/decision"}})
	if err != nil {
		t.Fatal(err)
	}
	q, _ := engine.Query("tollgate/decision")
	sink := decisionlogtest.NewSink(4)
	dl, _ := runLogger(t, sink, decisionlog.Options{Sample: 1})
	for _, tt := range []struct {
		name  string
		level slog.Level
		dl    authz.DecisionLogger
		want  string
	}{
		{name: "debug", level: slog.LevelDebug, want: `"level":"DEBUG","msg":"denied","component":"authz","status":403,"reason":"route_not_in_plan","consumer":"`},
		{name: "info", level: slog.LevelInfo},
		{name: "decision logs on", level: slog.LevelDebug, dl: dl},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: tt.level})).With("component", "authz")
			srv, err := authz.New(q, authz.Options{Logger: log, DecisionLog: tt.dl})
			if err != nil {
				t.Fatal(err)
			}
			req := fixture(t, "demo_403_route_not_in_plan")
			req.Attributes.Request.Http.Headers["x-request-id"] = "req-403"
			if _, err := serve(t, srv).Check(context.Background(), req); err != nil {
				t.Fatal(err)
			}
			got := buf.String()
			switch {
			case tt.want == "" && got != "":
				t.Errorf("logged %s, want nothing", got)
			case tt.want != "" && (!strings.Contains(got, tt.want) || !strings.Contains(got, `"request_id":"req-403"`)):
				t.Errorf("logged %s, want it to contain %s and the request id", got, tt.want)
			}
			if tt.dl != nil {
				<-sink.Lines
			}
		})
	}
}

// BenchmarkCheckDecisionLog is BenchmarkCheck with decision logs on and a
// sink that discards the records (masked by the writer, not encoded): the
// request path's cost, plus the writer's masking on the other core.
func BenchmarkCheckDecisionLog(b *testing.B) {
	dl, _ := runLogger(b, nopSink{}, decisionlog.Options{Sample: 1})
	client, req := allowingServer(b, authz.Options{DecisionLog: dl}), fixture(b, "demo_200_api_key")
	benchCheck(b, client, req)
	stillAllowed(b, client, req)
}

// BenchmarkCheckDecisionLogJSON is BenchmarkCheck with every record also
// encoded as a JSON line (to io.Discard) by the writer.
func BenchmarkCheckDecisionLogJSON(b *testing.B) {
	dl, _ := runLogger(b, decisionlog.NewWriter(discard{}), decisionlog.Options{Sample: 1})
	client, req := allowingServer(b, authz.Options{DecisionLog: dl}), fixture(b, "demo_200_api_key")
	benchCheck(b, client, req)
	stillAllowed(b, client, req)
}

type nopSink struct{}

func (nopSink) Write(context.Context, []*decisionlog.Record) error { return nil }
func (nopSink) Close() error                                       { return nil }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
