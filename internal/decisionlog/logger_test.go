package decisionlog_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/decisionlog"
	"github.com/tollgate-dev/tollgate/internal/decisionlog/decisionlogtest"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

// newLogger runs a Logger over sink until stop (or the test's end), its
// metrics on a registry of its own.
func newLogger(t *testing.T, sink decisionlog.Sink, opts decisionlog.Options) (*decisionlog.Logger, *prometheus.Registry, func()) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Sink, opts.Registerer = sink, reg
	l, stop := decisionlogtest.Run(t, opts)
	return l, reg, stop
}

func counter(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if reason == "" || len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s{reason=%q}", name, reason)
	return 0
}

const secret = "tg_live_3f9a1c0d5e7b4a2c"

func TestRecordJSON(t *testing.T) {
	bal := int64(2)
	for _, tt := range []struct {
		name string
		rec  decisionlog.Record
		want string
	}{{
		name: "allowed with limits and a charge",
		rec: decisionlog.Record{
			ID: "ab12cd34-1", Service: decisionlog.ServiceAuthz, RequestID: "req-1",
			Time: time.Date(2026, 12, 1, 7, 0, 0, 123000000, time.UTC), Latency: 231 * time.Microsecond, Revision: "r1",
			Method: "GET", Host: "api.example.com", Path: "/v1/invoices", Consumer: "acme", Plan: "pro",
			Allow: true, Status: 200,
			Limits:  []ratelimit.Limit{{Name: "per_second", Key: "acme-secret-key", Limit: 20, Window: time.Second, Cost: 1}, {Name: "monthly", Key: "acme", Limit: 100000, Period: ratelimit.Month, Cost: 1}},
			Outcome: &ratelimit.Outcome{Allowed: true, Denied: -1, Charged: 3, Balance: 97, Limits: []ratelimit.LimitState{{Remaining: 19, Reset: 50 * time.Millisecond}, {Remaining: 99999, Reset: time.Hour}}},
			Charge:  &ratelimit.Charge{Account: "acme", Credits: 3},
		},
		want: `{"decision_id":"ab12cd34-1","service":"authz","request_id":"req-1","time":"2026-12-01T07:00:00.123Z","latency_us":231,"revision":"r1","consumer":"acme","plan":"pro","request":{"method":"GET","host":"api.example.com","path":"/v1/invoices"},"decision":{"allow":true,"status":200,"limits":[{"name":"per_second","limit":20,"window":"1s","cost":1,"remaining":19,"reset_ms":50},{"name":"monthly","limit":100000,"period":"month","cost":1,"remaining":99999,"reset_ms":3600000}],"charge":{"account":"acme","credits":3,"charged":3,"balance":97}}}`,
	}, {
		name: "402 without an outcome",
		rec: decisionlog.Record{
			ID: "x-2", Service: decisionlog.ServiceAuthz, Time: time.Date(2026, 12, 1, 7, 0, 0, 0, time.UTC),
			Status: 402, Reason: "credits_exhausted", Charge: &ratelimit.Charge{Account: "acme", Credits: 3}, Balance: &bal,
		},
		want: `{"decision_id":"x-2","service":"authz","time":"2026-12-01T07:00:00Z","latency_us":0,"request":{},"decision":{"allow":false,"status":402,"reason":"credits_exhausted","charge":{"account":"acme","credits":3,"balance":2}}}`,
	}, {
		name: "rate limit service",
		rec: decisionlog.Record{
			ID: "x-3", Service: decisionlog.ServiceRateLimit, Time: time.Date(2026, 12, 1, 7, 0, 0, 0, time.UTC),
			Domain:      "edge",
			Descriptors: []*ratelimitv3.RateLimitDescriptor{{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "remote_address", Value: "10.0.0.1"}}}},
			Status:      429, Reason: "rate_limited", Limit: "per_ip",
		},
		want: `{"decision_id":"x-3","service":"ratelimit","time":"2026-12-01T07:00:00Z","latency_us":0,"request":{"domain":"edge","descriptors":[[{"key":"remote_address","value":"10.0.0.1"}]]},"decision":{"allow":false,"status":429,"reason":"rate_limited","limit":"per_ip"}}`,
	}} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.rec.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			if strings.Contains(string(got), "acme-secret-key") {
				t.Error("a limit's counter key was written")
			}
		})
	}
}

func TestSetPath(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"/v1/invoices", "/v1/invoices"},
		{"/v1/invoices?api_key=" + secret, "/v1/invoices"},
		{"/v1/a#frag?x", "/v1/a"},
		{"", ""},
	} {
		var r decisionlog.Record
		r.SetPath(tt.in)
		if r.Path != tt.want {
			t.Errorf("SetPath(%q): got %q, want %q", tt.in, r.Path, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { var r decisionlog.Record; r.SetPath("/v1/invoices?api_key=x") }); n != 0 {
		t.Errorf("SetPath allocates %v times, want 0", n)
	}
}

func TestMask(t *testing.T) {
	sink := decisionlogtest.NewSink(10)
	l, _, _ := newLogger(t, sink, decisionlog.Options{Sample: 1, Mask: []string{"X-Session-Token", "user_key"}})
	headers := map[string]string{
		"x-api-key": secret, "Authorization": "Bearer " + secret, "cookie": "sid=" + secret,
		"x-session-token": secret, "user-agent": "curl/8", ":path": "/v1/a?api_key=" + secret,
	}
	descriptors := []*ratelimitv3.RateLimitDescriptor{
		{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "remote_address", Value: "10.0.0.1"}}},
		{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "user_key", Value: secret}, {Key: "api_key", Value: secret}}},
	}
	l.Log(&decisionlog.Record{Service: decisionlog.ServiceAuthz, Headers: headers})
	l.Log(&decisionlog.Record{Service: decisionlog.ServiceRateLimit, Domain: "edge", Descriptors: descriptors})
	out := <-sink.Lines + "\n" + <-sink.Lines
	if strings.Contains(out, secret) {
		t.Errorf("the credential appears in the output:\n%s", out)
	}
	for _, want := range []string{`"x-api-key":"[masked]"`, `"Authorization":"[masked]"`, `"cookie":"[masked]"`,
		`"x-session-token":"[masked]"`, `"user-agent":"curl/8"`, `":path":"/v1/a"`, `{"key":"remote_address","value":"10.0.0.1"}`,
		`{"key":"user_key","value":"[masked]"}`, `{"key":"api_key","value":"[masked]"}`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}
	// The request's own values are untouched.
	if headers["x-api-key"] != secret || descriptors[1].Entries[0].Value != secret {
		t.Error("masking changed the request")
	}
}

func TestSampling(t *testing.T) {
	draws := []float64{0.05, 0.5, 0.09, 0.95}
	i := 0
	rnd := func() float64 { v := draws[i%len(draws)]; i++; return v }
	sink := decisionlogtest.NewSink(10)
	l, _, stop := newLogger(t, sink, decisionlog.Options{Sample: 0.1, Rand: rnd})
	for n := range 4 {
		l.Log(&decisionlog.Record{Allow: true, Status: 200, RequestID: "allowed-" + string(rune('a'+n))})
	}
	l.Log(&decisionlog.Record{Status: 429, Reason: "rate_limited", RequestID: "denied"})
	l.Log(&decisionlog.Record{Reason: "unavailable", RequestID: "failed"})
	stop() // flushes the buffer
	var got []string
	for _, line := range sink.Drain() {
		var doc struct {
			RequestID string `json:"request_id"`
		}
		if err := json.Unmarshal([]byte(line), &doc); err != nil {
			t.Fatal(err)
		}
		got = append(got, doc.RequestID)
	}
	want := []string{"allowed-a", "allowed-c", "denied", "failed"} // draws under 0.1, and every denial
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("got %v, want %v", got, want)
	}
	if i != 4 {
		t.Errorf("drew %d random numbers, want one per allowed decision (4)", i)
	}
}

func TestFullBufferDropsWithoutBlocking(t *testing.T) {
	sink := decisionlogtest.NewSink(10)
	sink.Block, sink.Entered = make(chan struct{}), make(chan struct{}, 10)
	l, reg, stop := newLogger(t, sink, decisionlog.Options{Sample: 1, Buffer: 2})
	// The runner takes the first record and blocks in the sink; two more
	// fill the buffer; the next three are dropped, each Log returning at once.
	l.Log(&decisionlog.Record{RequestID: "taken"})
	<-sink.Entered
	for n := range 5 {
		start := time.Now()
		l.Log(&decisionlog.Record{Status: 403})
		if d := time.Since(start); d > 50*time.Millisecond {
			t.Fatalf("Log %d took %v with the sink blocked", n, d)
		}
	}
	if got := counter(t, reg, "tollgate_decision_logs_dropped_total", "buffer_full"); got != 3 {
		t.Errorf("dropped{buffer_full} = %v, want 3", got)
	}
	close(sink.Block)
	stop()
	if got, written := len(sink.Drain()), counter(t, reg, "tollgate_decision_logs_written_total", ""); got != 3 || written != 3 {
		t.Errorf("wrote %d records, counted %v; want the taken one and the two buffered (3)", got, written)
	}
}

func TestFlushOnShutdown(t *testing.T) {
	sink := decisionlogtest.NewSink(1000)
	sink.Block = make(chan struct{})
	l, reg, stop := newLogger(t, sink, decisionlog.Options{Sample: 1})
	for range 1000 { // more than one batch, held up by the sink
		l.Log(&decisionlog.Record{Allow: true, Status: 200})
	}
	stopped := make(chan struct{})
	go func() { defer close(stopped); stop() }()
	close(sink.Block)
	<-stopped // Run has returned: everything buffered was written
	lines := sink.Drain()
	if got := len(lines); got != 1000 {
		t.Errorf("wrote %d records at shutdown, want 1000", got)
	}
	if got := counter(t, reg, "tollgate_decision_logs_written_total", ""); got != 1000 {
		t.Errorf("written_total = %v, want 1000", got)
	}
	ids := map[string]bool{}
	for _, line := range lines {
		var doc struct {
			ID string `json:"decision_id"`
		}
		_ = json.Unmarshal([]byte(line), &doc)
		if doc.ID == "" || ids[doc.ID] {
			t.Fatalf("decision_id %q empty or repeated", doc.ID)
		}
		ids[doc.ID] = true
	}
	if err := l.Close(); err != nil || !sink.Closed() {
		t.Errorf("Close: %v, sink closed %v", err, sink.Closed())
	}
}

func TestFlushTimeoutBoundsABlockedSink(t *testing.T) {
	sink := decisionlogtest.NewSink(10)
	sink.Block = make(chan struct{}) // never unblocked
	l, reg, stop := newLogger(t, sink, decisionlog.Options{Sample: 1, FlushTimeout: 10 * time.Millisecond})
	for range 3 {
		l.Log(&decisionlog.Record{Status: 401})
	}
	stop() // returns: the flush gives up after its timeout
	if got := counter(t, reg, "tollgate_decision_logs_dropped_total", "sink_error"); got != 3 {
		t.Errorf("dropped{sink_error} = %v, want 3", got)
	}
}

type failingSink struct{ decisionlogtest.Sink }

func (*failingSink) Write(context.Context, []*decisionlog.Record) error {
	return errors.New("disk full")
}

func TestSinkErrorCounted(t *testing.T) {
	l, reg, stop := newLogger(t, &failingSink{}, decisionlog.Options{Sample: 1, Logger: discardLogger()})
	l.Log(&decisionlog.Record{Status: 403})
	stop()
	if got := counter(t, reg, "tollgate_decision_logs_dropped_total", "sink_error"); got != 1 {
		t.Errorf("dropped{sink_error} = %v, want 1", got)
	}
}

func TestFileSink(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	if err := os.WriteFile(path, []byte("{\"earlier\":true}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sink, err := decisionlog.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	l, _, stop := newLogger(t, sink, decisionlog.Options{Sample: 1})
	l.Log(&decisionlog.Record{Allow: true, Status: 200, RequestID: "one"})
	l.Log(&decisionlog.Record{Status: 401, RequestID: "two"})
	stop()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 3 || lines[0] != `{"earlier":true}` || !strings.Contains(lines[1], `"request_id":"one"`) || !strings.Contains(lines[2], `"request_id":"two"`) {
		t.Errorf("file holds:\n%s\nwant the earlier line, then the two records, one per line", b)
	}
	if _, err := decisionlog.OpenFile(filepath.Join(t.TempDir(), "no", "such", "dir", "f")); err == nil {
		t.Error("OpenFile in a missing directory succeeded")
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts decisionlog.Options
		want string
	}{
		{"no sink", decisionlog.Options{}, "no sink"},
		{"sample", decisionlog.Options{Sink: decisionlogtest.NewSink(1), Sample: 2}, "sample 2 is out of range"},
		{"buffer", decisionlog.Options{Sink: decisionlogtest.NewSink(1), Buffer: -1}, "buffer -1 is negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decisionlog.New(tt.opts); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
