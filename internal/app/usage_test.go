package app_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tollgate-dev/tollgate/internal/pg/pgtest"
)

// TestUsageFromPostgres: with decision_logs.sink postgres, the served
// Checks land in tollgate_decisions and, with the ledger's charges, make
// the usage report of the admin API.
func TestUsageFromPostgres(t *testing.T) {
	db := pgtest.New(t)
	cfg := testConfig()
	cfg.Policy.Paths = []string{"testdata/charge.rego"}
	cfg.Postgres.DSN = db.DSN
	cfg.Admin.Token = "s3cret"
	cfg.DecisionLogs.Enabled = true
	cfg.DecisionLogs.Sink = "postgres"
	r := start(t, cfg)
	ctx := context.Background()
	var credit struct{ Balance int64 }
	postJSON(t, "http://"+r.app.AdminAddr()+"/v1/accounts/acme/credits", "s3cret", "invoice-1", `{"amount": 100}`, &credit)
	client := authv3.NewAuthorizationClient(r.conn)
	const checks = 5
	for i := range checks {
		req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/v1/x?key=secret", Id: fmt.Sprint("r", i),
				Headers: map[string]string{"x-request-id": fmt.Sprint("r", i)}},
		}}}
		if resp, err := client.Check(ctx, req); err != nil || resp.GetOkResponse() == nil {
			t.Fatalf("Check: %v %v", resp, err)
		}
	}
	today := time.Now().UTC().Format(time.DateOnly)
	url := "http://" + r.app.AdminAddr() + "/v1/usage?from=" + today + "&to=" + today
	deadline := time.Now().Add(20 * time.Second)
	for {
		var report struct {
			Rows []struct {
				Consumer, Method, Path string
				Allowed, Credits       int64
			}
		}
		getJSON(t, url, "s3cret", &report)
		if len(report.Rows) == 1 && report.Rows[0].Allowed == checks && report.Rows[0].Credits == checks {
			if row := report.Rows[0]; row.Consumer != "acme" || row.Method != "GET" || row.Path != "/v1/x" {
				t.Errorf("usage row %+v, want acme GET /v1/x (no query string)", row)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage %+v, want one row: acme GET /v1/x, %d allowed, %d credits", report.Rows, checks, checks)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// postJSON POSTs body with a bearer token and an idempotency key and
// decodes a 200 answer into v.
func postJSON(t *testing.T, url, token, key, body string, v any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Content-Type", "application/json")
	doJSON(t, req, token, v)
}
