package app_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tollgate-dev/tollgate/internal/config"
	"github.com/tollgate-dev/tollgate/internal/wire"
)

// TestSettleServed: the access log service is on the gRPC listener and
// settles what a Check reserved; the settle sweeper runs with the server
// and releases a reservation no entry settles (settle.timeout).
func TestSettleServed(t *testing.T) {
	cfg := testConfig()
	cfg.Admin.Token = "s3cret"
	cfg.Policy.Paths = []string{"../../authz/accesslog/testdata/policy"} // 3 credits, settled as x-settle says
	cfg.Settle.Timeout = config.Duration(time.Second)
	cfg.Settle.SweepInterval = config.Duration(100 * time.Millisecond)
	r := start(t, cfg)
	ctx := context.Background()
	hc := healthpb.NewHealthClient(r.conn)
	if resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: alsv3.AccessLogService_ServiceDesc.ServiceName}); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("access log service health: %v %v", resp, err)
	}
	if !strings.Contains(r.banner, "AccessLogService/StreamAccessLogs") {
		t.Errorf("the banner does not name the access log service:\n%s", r.banner)
	}
	admin := "http://" + r.app.AdminAddr()
	if code, body := adminCall(t, http.MethodPost, admin+"/v1/accounts/acme/credits", "s3cret", "settle-test", `{"amount": 10}`); code != 200 {
		t.Fatalf("top-up: %d %s", code, body)
	}
	client := authv3.NewAuthorizationClient(r.conn)
	check := func(id string) *structpb.Struct {
		resp, err := client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Id: id, Method: "GET", Path: "/", Headers: map[string]string{"x-account": "acme", "x-settle": "delivery"}},
		}}})
		if err != nil || resp.GetOkResponse() == nil {
			t.Fatalf("Check %s = %v, %v; want allowed", id, resp, err)
		}
		return resp.GetDynamicMetadata()
	}
	delivered := check("delivered")
	check("never-logged")

	stream, err := alsv3.NewAccessLogServiceClient(r.conn).StreamAccessLogs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&alsv3.StreamAccessLogsMessage{
		Identifier: &alsv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: "envoy"}, LogName: "tollgate"},
		LogEntries: &alsv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: &alsv3.StreamAccessLogsMessage_HTTPAccessLogEntries{
			LogEntry: []*accesslogv3.HTTPAccessLogEntry{{CommonProperties: &accesslogv3.AccessLogCommon{
				UpstreamRequestAttemptCount: 1,
				Metadata:                    &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{wire.MetadataNamespace: delivered}},
			}}},
		}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, metrics := get(t, admin+"/metrics")
		if strings.Contains(metrics, "tollgate_settle_expired_total 1") {
			if !strings.Contains(metrics, `tollgate_settle_total{result="captured"} 1`) {
				t.Errorf("the access log entry was not captured:\n%s", grepLines(metrics, "tollgate_settle"))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sweeper released nothing within 10s:\n%s", grepLines(metrics, "tollgate_settle"))
		}
		time.Sleep(50 * time.Millisecond) //nolint:forbidigo // waiting for the sweeper's tick
	}
	_, account := adminCall(t, http.MethodGet, admin+"/v1/accounts/acme", "s3cret", "", "")
	if !strings.Contains(account, `"balance":7`) {
		t.Errorf("acme = %s; want balance 7 (3 captured, 3 released)", account)
	}
}

// adminCall calls the admin API with a bearer token and an idempotency key.
func adminCall(t *testing.T, method, url, token, key, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Idempotency-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
