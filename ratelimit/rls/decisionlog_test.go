package rls_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/metadata"

	"github.com/tollgate-dev/tollgate/internal/decisionlog"
	"github.com/tollgate-dev/tollgate/internal/decisionlog/decisionlogtest"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/rls"
)

// TestDecisionLogRecords: one record per ShouldRateLimit, OK and
// OVER_LIMIT and an invalid request, over real gRPC, the descriptor entry
// holding a key masked, the request id from the gRPC metadata.
func TestDecisionLogRecords(t *testing.T) {
	const key = "tg_live_3f9a1c0d5e7b4a2c"
	sink := decisionlogtest.NewSink(8)
	dl, _ := decisionlogtest.Run(t, decisionlog.Options{Sink: sink, Sample: 1})

	clock := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	eng, err := ratelimit.NewEngine(ratelimit.NewMemoryStore(ratelimit.MemoryOptions{Now: func() time.Time { return clock }}), ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := rls.New(eng, rls.Options{DecisionLog: dl})
	srv.SetConfig(loadRLSConfig(t, "testdata/rls/config.yaml"))
	client := serveRLS(t, srv)
	req := &rlsv3.RateLimitRequest{Domain: "golden", Descriptors: []*commonv3.RateLimitDescriptor{
		{Entries: []*commonv3.RateLimitDescriptor_Entry{{Key: "generic_key", Value: "api"}}},
		{Entries: []*commonv3.RateLimitDescriptor_Entry{{Key: "api_key", Value: key}}},
	}}
	for i, want := range []struct {
		status        int
		reason, limit string
		remaining     int64
	}{{200, "", "", 1}, {200, "", "", 0}, {429, "rate_limited", "golden.generic_key_api", 0}} {
		mctx := metadata.AppendToOutgoingContext(context.Background(), "x-request-id", "rls-req")
		if _, err := client.ShouldRateLimit(mctx, req); err != nil {
			t.Fatal(err)
		}
		line := <-sink.Lines
		if strings.Contains(line, key) {
			t.Errorf("call %d: the key appears in the record: %s", i, line)
		}
		var r decisionlog.Document
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		d := r.Decision
		if r.Service != "ratelimit" || r.RequestID != "rls-req" || r.Request.Domain != "golden" || len(r.Request.Descriptors) != 2 ||
			r.Request.Descriptors[1][0].Value != decisionlog.Masked {
			t.Errorf("call %d: record %s: want service ratelimit, request id rls-req, domain golden, the api_key masked", i, line)
		}
		if d.Allow != (want.status == 200) || d.Status != want.status || d.Reason != want.reason ||
			d.Limit != want.limit || len(d.Limits) != 1 || d.Limits[0].Remaining == nil || *d.Limits[0].Remaining != want.remaining {
			t.Errorf("call %d: decision %s, want status %d reason %q limit %q, one limit with %d remaining", i, line, want.status, want.reason, want.limit, want.remaining)
		}
	}
	if _, err := client.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "golden"}); err == nil {
		t.Fatal("a request without descriptors was accepted")
	}
	if line := <-sink.Lines; !strings.Contains(line, `"decision":{"allow":false,"reason":"invalid_request"}`) {
		t.Errorf("invalid request logged as %s", line)
	}
	// A request past the bounds is logged without its descriptors.
	if _, err := client.ShouldRateLimit(context.Background(), addresses(700, "x")); err == nil {
		t.Fatal("700 descriptors were accepted")
	}
	if line := <-sink.Lines; !strings.Contains(line, `"decision":{"allow":false,"reason":"invalid_request"}`) ||
		strings.Contains(line, "remote_address") || len(line) > 2048 {
		t.Errorf("a request past the bounds logged as %s, want invalid_request without its descriptors", line)
	}
}
