package decisionlog_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/tollgate-dev/tollgate/internal/decisionlog"
)

// printSink prints what a sink is given: records already masked.
type printSink struct{}

func (printSink) Write(_ context.Context, rs []*decisionlog.Record) error {
	for _, r := range rs {
		fmt.Println(r.RequestID, r.Status, r.Reason, r.Path, r.Headers["x-api-key"])
	}
	return nil
}

func (printSink) Close() error { return nil }

func Example() {
	l, err := decisionlog.New(decisionlog.Options{Sink: printSink{}, Sample: 1})
	if err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()

	// On the request path: values and references only, then Log, which
	// never blocks.
	r := &decisionlog.Record{Service: decisionlog.ServiceAuthz, RequestID: "req-1", Time: time.Now(),
		Headers: map[string]string{"x-api-key": "tg_live_3f9a1c0d5e7b4a2c"}, Status: 401, Reason: "unknown_api_key"}
	r.SetPath("/v1/invoices?api_key=tg_live_3f9a1c0d5e7b4a2c")
	l.Log(r)

	stop() // at shutdown, what is buffered is written
	<-done
	_ = l.Close()
	// Output:
	// req-1 401 unknown_api_key /v1/invoices [masked]
}

func ExampleRecord_MarshalJSON() {
	r := &decisionlog.Record{ID: "9f86d081-42", Service: decisionlog.ServiceAuthz, RequestID: "req-1",
		Time: time.Date(2026, 12, 1, 7, 0, 0, 0, time.UTC), Latency: 180 * time.Microsecond,
		Method: "GET", Host: "api.example.com", Path: "/v1/invoices", Status: 401, Reason: "unknown_api_key"}
	b, _ := r.MarshalJSON()
	os.Stdout.Write(append(b, '\n'))
	// Output:
	// {"decision_id":"9f86d081-42","service":"authz","request_id":"req-1","time":"2026-12-01T07:00:00Z","latency_us":180,"request":{"method":"GET","host":"api.example.com","path":"/v1/invoices"},"decision":{"allow":false,"status":401,"reason":"unknown_api_key"}}
}
