package accesslog_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/authz/accesslog"
	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/internal/wire"
	"github.com/tollgate-dev/tollgate/policies"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger/ledgertest"
)

// TestMain fails the package's tests when any goroutine outlives them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is ext_authz and the access log service on one gRPC server (as
// internal/app serves them), over a limit store.
type env struct {
	store   ratelimit.Store
	src     ledger.Source
	eng     *ratelimit.Engine
	reg     *prometheus.Registry
	authz   authv3.AuthorizationClient
	als     alsv3.AccessLogServiceClient
	advance func(time.Duration)
	timeout time.Duration // the store's settle timeout
}

// eachStore runs f with the memory store, one Redis and a 3-master
// Cluster, each with a short settle timeout (ratelimit's tests drive the
// memory store's expiry with a fake clock).
func eachStore(t *testing.T, f func(t *testing.T, e *env)) {
	const timeout = 300 * time.Millisecond
	t.Run("memory", func(t *testing.T) {
		m := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{SettleTimeout: timeout})
		f(t, start(t, m, m, time.Sleep, timeout))
	})
	t.Run("redis", func(t *testing.T) {
		r := ratelimit.NewRedisStore(redistest.Start(t).Client(), time.Second)
		r.SetLedgerMaxLen(0)
		r.SetSettleTimeout(timeout)
		f(t, start(t, r, r, time.Sleep, timeout))
	})
	t.Run("cluster", func(t *testing.T) {
		r := ratelimit.NewRedisStore(redistest.StartCluster(t, 3).Client(), time.Second)
		r.SetLedgerMaxLen(0)
		r.SetSettleTimeout(timeout)
		f(t, start(t, r, r, time.Sleep, timeout))
	})
}

func start(t *testing.T, store ratelimit.Store, src ledger.Source, advance func(time.Duration), timeout time.Duration) *env {
	t.Helper()
	reg := prometheus.NewRegistry()
	eng, err := ratelimit.NewEngine(store, ratelimit.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	pe, err := policies.New(context.Background(), policies.Options{Paths: []string{"testdata/policy"}, Queries: []string{"tollgate/decision"}})
	if err != nil {
		t.Fatal(err)
	}
	q, err := pe.Query("tollgate/decision")
	if err != nil {
		t.Fatal(err)
	}
	az, err := authz.New(q, authz.Options{Limiter: eng})
	if err != nil {
		t.Fatal(err)
	}
	als, err := accesslog.New(eng, accesslog.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ln := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, az)
	alsv3.RegisterAccessLogServiceServer(gs, als)
	go func() { _ = gs.Serve(ln) }()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
	})
	return &env{store: store, src: src, eng: eng, reg: reg, authz: authv3.NewAuthorizationClient(conn),
		als: alsv3.NewAccessLogServiceClient(conn), advance: advance, timeout: timeout}
}

// check sends a Check for account with settle mode and request id (none
// when empty).
func (e *env) check(t *testing.T, account, settle, id string) *authv3.CheckResponse {
	t.Helper()
	h := map[string]string{"x-account": account, "x-settle": settle}
	if id != "" {
		h["x-request-id"] = id
	}
	return e.checkHeaders(t, h)
}

// checkHeaders sends a Check with headers (and Envoy's id, from
// x-request-id).
func (e *env) checkHeaders(t *testing.T, h map[string]string) *authv3.CheckResponse {
	t.Helper()
	resp, err := e.authz.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: h["x-request-id"], Method: "POST", Path: "/v1/chat/completions", Host: "api.example.com", Headers: h,
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// logs streams one message of entries and waits for the server to have
// handled it (its answer comes once the stream is read to the end).
func (e *env) logs(t *testing.T, entries ...*accesslogv3.HTTPAccessLogEntry) {
	t.Helper()
	stream, err := e.als.StreamAccessLogs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&alsv3.StreamAccessLogsMessage{
		Identifier: &alsv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: "envoy-1"}, LogName: "tollgate"},
		LogEntries: &alsv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: &alsv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: entries}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
}

// entry is the access log entry of a request Envoy logged with the
// metadata ext_authz answered, after attempts upstream and status code.
func entry(md *structpb.Struct, attempts, code uint32) *accesslogv3.HTTPAccessLogEntry {
	e := &accesslogv3.HTTPAccessLogEntry{
		CommonProperties: &accesslogv3.AccessLogCommon{UpstreamRequestAttemptCount: attempts},
		Response:         &accesslogv3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(code)},
	}
	if md != nil {
		e.CommonProperties.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{wire.MetadataNamespace: md}}
	}
	return e
}

func (e *env) balance(t *testing.T, account string) int64 {
	t.Helper()
	a, err := e.eng.Account(context.Background(), account)
	if err != nil {
		t.Fatal(err)
	}
	return a.Balance
}

func (e *env) credit(t *testing.T, account string, amount int64) {
	t.Helper()
	if _, err := e.eng.Credit(context.Background(), account, amount, "seed-"+account); err != nil {
		t.Fatal(err)
	}
}

// counter reads a counter of the registry with one label value (0 when
// absent).
func (e *env) counter(t *testing.T, name, label string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 0 && label == "" || len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func allowed(t *testing.T, resp *authv3.CheckResponse) {
	t.Helper()
	if codes.Code(resp.GetStatus().GetCode()) != codes.OK {
		t.Fatalf("Check denied: %v %s", resp.GetStatus(), resp.GetDeniedResponse().GetBody())
	}
}

func denied(t *testing.T, resp *authv3.CheckResponse, status int, reason string) {
	t.Helper()
	if int(resp.GetDeniedResponse().GetStatus().GetCode()) != status || resp.GetStatus().GetMessage() != reason {
		t.Errorf("Check = %v, %v; want %d %s", resp.GetStatus(), resp.GetDeniedResponse().GetStatus(), status, reason)
	}
}

// TestSettleOnDelivery: Check reserves, and the access log settles: a
// request that went upstream is captured; one Envoy answered itself
// (no upstream attempt) is released; with "success", a 503 is released
// and a 200 captured; malformed entries and entries without a reservation
// are skipped; a reservation no entry settles expires. Shipped, each
// account's ledger sums to its balance.
func TestSettleOnDelivery(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		accounts := []string{"acme", "globex", "initech", "umbrella", "hooli", "stark"}
		for _, a := range accounts {
			e.credit(t, a, 10)
		}
		cases := []struct {
			name, account, settle, id string
			attempts, code            uint32
			balance                   int64 // after the access log
		}{
			{"went upstream: captured", "acme", "delivery", "r-1", 1, 200, 7},
			{"local reply, no upstream attempt: released", "globex", "delivery", "r-2", 0, 503, 10},
			{"delivered, upstream 500: captured", "initech", "delivery", "r-3", 1, 500, 7},
			{"success, upstream 503: released", "umbrella", "success", "r-4", 1, 503, 10},
			{"success, upstream 200: captured", "hooli", "success", "r-5", 2, 200, 7},
			{"success, no upstream attempt: released", "stark", "success", "r-6", 0, 200, 10},
		}
		var entries []*accesslogv3.HTTPAccessLogEntry
		for _, c := range cases {
			resp := e.check(t, c.account, c.settle, c.id)
			allowed(t, resp)
			md := resp.GetDynamicMetadata()
			tg := md.GetFields()[wire.MetadataKey].GetStructValue().GetFields()
			if tg[wire.MetadataAccount].GetStringValue() != c.account || tg[wire.MetadataReservation].GetStringValue() != c.id ||
				tg[wire.MetadataSettle].GetStringValue() != c.settle || md.GetFields()["route"].GetStringValue() != "chat" {
				t.Fatalf("%s: dynamic metadata %v; want the reservation merged with the policy's", c.name, md)
			}
			if b := e.balance(t, c.account); b != 7 {
				t.Fatalf("%s: balance after Check %d, want 7 (3 reserved)", c.name, b)
			}
			entries = append(entries, entry(md, c.attempts, c.code))
		}
		// Skipped: no metadata, another filter's metadata, malformed.
		bad := structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"account": structpb.NewStringValue("acme")}})
		entries = append(entries,
			entry(nil, 1, 200),
			entry(&structpb.Struct{Fields: map[string]*structpb.Value{"route": structpb.NewStringValue("chat")}}, 1, 200),
			entry(&structpb.Struct{Fields: map[string]*structpb.Value{wire.MetadataKey: structpb.NewStringValue("x")}}, 1, 200),
			entry(&structpb.Struct{Fields: map[string]*structpb.Value{wire.MetadataKey: bad}}, 1, 200),
			&accesslogv3.HTTPAccessLogEntry{})
		e.logs(t, entries...)
		for _, c := range cases {
			if b := e.balance(t, c.account); b != c.balance {
				t.Errorf("%s: balance %d, want %d", c.name, b, c.balance)
			}
		}
		// Envoy sends the same entries again (a retried stream): nothing changes.
		e.logs(t, entries[:len(cases)]...)
		for _, c := range cases {
			if b := e.balance(t, c.account); b != c.balance {
				t.Errorf("%s, logged twice: balance %d, want %d", c.name, b, c.balance)
			}
		}
		for label, want := range map[string]float64{"captured": 3, "released": 3, "already_settled": 6, "unknown": 0} {
			if got := e.counter(t, "tollgate_settle_total", label); got != want {
				t.Errorf("tollgate_settle_total{result=%q} = %v, want %v", label, got, want)
			}
		}
		for label, want := range map[string]float64{"settled": 12, "no_reservation": 3, "malformed": 2} {
			if got := e.counter(t, "tollgate_accesslog_entries_total", label); got != want {
				t.Errorf("tollgate_accesslog_entries_total{result=%q} = %v, want %v", label, got, want)
			}
		}

		// Settled at Check: charged now, nothing reserved, no metadata.
		resp := e.check(t, "acme", "check", "r-7")
		allowed(t, resp)
		if _, ok := resp.GetDynamicMetadata().GetFields()[wire.MetadataKey]; ok {
			t.Errorf("a charge settled at Check names a reservation: %v", resp.GetDynamicMetadata())
		}
		// Settled on delivery without a request id: refused, nothing taken.
		denied(t, e.check(t, "acme", "delivery", ""), 400, "request_id_required")
		// A repeated id while its reservation is pending: refused.
		allowed(t, e.check(t, "acme", "delivery", "r-8"))
		denied(t, e.check(t, "acme", "delivery", "r-8"), 409, "duplicate_request_id")
		if b := e.balance(t, "acme"); b != 1 {
			t.Errorf("acme: balance %d, want 1 (captured 3, charged 3, reserved 3)", b)
		}
		// r-8's entry never arrives: released when it expires.
		e.advance(e.timeout + e.timeout/2)
		if n, err := e.eng.ExpireReservations(context.Background()); err != nil || n != 1 {
			t.Errorf("ExpireReservations = %d, %v; want 1", n, err)
		}
		if got := e.counter(t, "tollgate_settle_expired_total", ""); got != 1 {
			t.Errorf("tollgate_settle_expired_total = %v, want 1", got)
		}
		if b := e.balance(t, "acme"); b != 4 {
			t.Errorf("acme: balance %d after expiry, want 4", b)
		}

		book := ledgertest.NewBook()
		ledgertest.ShipAll(t, e.src, book, 0)
		sums, _ := book.Sums()
		for _, a := range accounts {
			if b := e.balance(t, a); sums[a] != b {
				t.Errorf("%s: ledger sums to %d, balance is %d", a, sums[a], b)
			}
		}
	})
}

// TestForgedReservationDropped: a "tollgate" key the policy puts in the
// dynamic metadata never reaches Envoy as a reservation: dropped when the
// request reserved nothing, replaced by Tollgate's own when it did; the
// policy's other metadata stays.
func TestForgedReservationDropped(t *testing.T) {
	m := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})
	e := start(t, m, m, time.Sleep, ratelimit.DefaultSettleTimeout)
	e.credit(t, "acme", 10)
	for _, settle := range []string{"check", "delivery"} {
		resp := e.checkHeaders(t, map[string]string{"x-account": "acme", "x-settle": settle, "x-request-id": "own-" + settle, "x-forge": "1"})
		allowed(t, resp)
		md := resp.GetDynamicMetadata()
		tg, ok := md.GetFields()[wire.MetadataKey]
		switch {
		case settle == "check" && ok:
			t.Errorf("settle check: the policy's reservation %v reached Envoy", tg)
		case settle == "delivery" && (tg.GetStructValue().GetFields()[wire.MetadataAccount].GetStringValue() != "acme" ||
			tg.GetStructValue().GetFields()[wire.MetadataReservation].GetStringValue() != "own-delivery"):
			t.Errorf("settle delivery: reservation %v, want acme's own-delivery", tg)
		}
		if md.GetFields()["route"].GetStringValue() != "chat" {
			t.Errorf("settle %s: the policy's metadata was lost: %v", settle, md)
		}
	}
	if b := e.balance(t, "acme"); b != 4 {
		t.Errorf("balance %d, want 4 (3 charged, 3 reserved)", b)
	}
}

// TestMaxEntriesPerMessage: past MaxEntries, a message's entries are
// skipped and counted, not settled.
func TestMaxEntriesPerMessage(t *testing.T) {
	m := ratelimit.NewMemoryStore(ratelimit.MemoryOptions{})
	eng, err := ratelimit.NewEngine(m, ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s, err := accesslog.New(eng, accesslog.Options{MaxEntries: 2, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	md := &structpb.Struct{Fields: map[string]*structpb.Value{wire.MetadataKey: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
		wire.MetadataAccount: structpb.NewStringValue("acme"), wire.MetadataReservation: structpb.NewStringValue("r"), wire.MetadataSettle: structpb.NewStringValue("delivery"),
	}})}}
	var entries []*accesslogv3.HTTPAccessLogEntry
	for range 5 {
		entries = append(entries, entry(md, 1, 200))
	}
	s.Handle(context.Background(), &alsv3.StreamAccessLogsMessage{LogEntries: &alsv3.StreamAccessLogsMessage_HttpLogs{
		HttpLogs: &alsv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: entries}}})
	e := &env{reg: reg}
	if got := e.counter(t, "tollgate_accesslog_entries_total", "over_limit"); got != 3 {
		t.Errorf("over_limit = %v, want 3", got)
	}
	if got := e.counter(t, "tollgate_accesslog_entries_total", "settled"); got != 2 {
		t.Errorf("settled = %v, want 2", got)
	}
}

// stuck is a Settler whose store never answers: each settle waits for its
// context.
type stuck struct{ calls atomic.Int64 }

func (s *stuck) Settle(ctx context.Context, _, _ string, _ bool) (ratelimit.SettleResult, error) {
	s.calls.Add(1)
	<-ctx.Done()
	return "", ctx.Err()
}

// TestMessageTimeout: a store that never answers holds one message for
// MessageTimeout, not for every entry's Timeout in turn.
func TestMessageTimeout(t *testing.T) {
	st := &stuck{}
	srv, err := accesslog.New(st, accesslog.Options{Timeout: time.Second, MessageTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	md, err := structpb.NewStruct(map[string]any{"tollgate": map[string]any{"account": "acme", "reservation": "r", "settle": "delivery"}})
	if err != nil {
		t.Fatal(err)
	}
	var entries []*accesslogv3.HTTPAccessLogEntry
	for range 20 {
		entries = append(entries, entry(md, 1, 200))
	}
	begin := time.Now()
	srv.Handle(context.Background(), &alsv3.StreamAccessLogsMessage{LogEntries: &alsv3.StreamAccessLogsMessage_HttpLogs{
		HttpLogs: &alsv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: entries},
	}})
	if took := time.Since(begin); took > 900*time.Millisecond {
		t.Errorf("20 entries against a stuck store took %v; want about the 50ms message timeout", took)
	}
	if n := st.calls.Load(); n != 20 {
		t.Errorf("%d settles tried, want 20 (each fails at once after the budget, and the engine retries it)", n)
	}
}
