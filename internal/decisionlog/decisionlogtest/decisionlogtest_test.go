package decisionlogtest_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/tollgate-dev/tollgate/internal/decisionlog"
	"github.com/tollgate-dev/tollgate/internal/decisionlog/decisionlogtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSinkAndRun(t *testing.T) {
	sink := decisionlogtest.NewSink(2)
	l, stop := decisionlogtest.Run(t, decisionlog.Options{Sink: sink, Sample: 1})
	l.Log(&decisionlog.Record{Service: decisionlog.ServiceAuthz, RequestID: "a"})
	l.Log(&decisionlog.Record{Service: decisionlog.ServiceAuthz, RequestID: "b"})
	stop()
	if got := sink.Drain(); len(got) != 2 {
		t.Errorf("got %d lines, want 2: %q", len(got), got)
	}
	if err := l.Close(); err != nil || !sink.Closed() {
		t.Errorf("Close: %v, closed %v", err, sink.Closed())
	}
}
