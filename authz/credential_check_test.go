package authz_test

import (
	"context"
	"slices"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tollgate-dev/tollgate/authz"
)

// TestCheckHidesCredential: over gRPC, an allowed Check removes the
// credential the request presented (and only that one) from the request
// Envoy forwards; a denied one forwards nothing; hide: false keeps it.
func TestCheckHidesCredential(t *testing.T) {
	const acme = "tg_live_3f9a1c0d5e7b4a2c" // demo key: acme, plan pro
	query := &authz.Credentials{Headers: []string{"x-api-key"}, Bearer: true, QueryParam: "api_key", Hide: true}
	shown := &authz.Credentials{Headers: []string{"x-api-key"}, Bearer: true, QueryParam: "api_key", Hide: false}
	tests := []struct {
		name        string
		policy      string // "demo" or a directory under testdata/policies (decision creds/decision)
		creds       *authz.Credentials
		headers     map[string]string
		path        string
		wantDenied  int      // the denial's status; 0: allowed
		wantRemoved []string // headers_to_remove
		wantQuery   []string // query_parameters_to_remove
		wantSet     map[string]string
	}{
		{name: "x-api-key", policy: "demo", headers: map[string]string{"x-api-key": acme},
			wantRemoved: []string{"x-api-key"}},
		{name: "bearer", policy: "demo", headers: map[string]string{"authorization": "Bearer " + acme},
			wantRemoved: []string{"authorization"}},
		{name: "bearer off (the default): the header is the upstream's", policy: "demo", creds: authz.DefaultCredentials(),
			headers: map[string]string{"authorization": "Bearer " + acme}},
		{name: "x-api-key wins, the Authorization header for the upstream stays", policy: "demo",
			headers:     map[string]string{"x-api-key": acme, "authorization": "Bearer the-upstream-reads-this"},
			wantRemoved: []string{"x-api-key"}},
		{name: "a Basic Authorization header stays", policy: "demo",
			headers:     map[string]string{"x-api-key": acme, "authorization": "Basic dXNlcjpwYXNz"},
			wantRemoved: []string{"x-api-key"}},
		{name: "merged with the forged x-tollgate-* removals", policy: "demo",
			headers:     map[string]string{"x-api-key": acme, "x-tollgate-degraded": "no", "x-tollgate-consumer": "forged"},
			wantRemoved: []string{"x-api-key", "x-tollgate-degraded"}},
		{name: "unknown key: denied, nothing forwarded", policy: "demo", headers: map[string]string{"x-api-key": "tg_unknown"},
			wantDenied: 401},
		{name: "hide off", policy: "demo", creds: shown, headers: map[string]string{"x-api-key": acme}},
		{name: "query parameter", policy: "credentials", creds: query, path: "/v1/x?a=1&api_key=tg_4&b=2",
			wantQuery: []string{"api_key"}},
		{name: "query parameter, hide off", policy: "credentials", creds: shown, path: "/v1/x?api_key=tg_4"},
		{name: "header before the query parameter", policy: "credentials", creds: query,
			headers: map[string]string{"x-api-key": "tg_1"}, path: "/v1/x?api_key=tg_4", wantRemoved: []string{"x-api-key"}},
		{name: "malformed query credential removed all the same", policy: "credentials", creds: query,
			path: "/v1/x?api_key=tg_4&api_key=tg_5", wantQuery: []string{"api_key"}},
		{name: "the policy sets the bearer header itself", policy: "credentials",
			headers: map[string]string{"authorization": "Bearer tg_client"},
			wantSet: map[string]string{"authorization": "Bearer upstream-token"}},
		{name: "no credential", policy: "credentials", headers: map[string]string{"accept": "*/*"}, path: "/v1/x?b=2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			decision := "tollgate/decision"
			if tt.policy != "demo" {
				decision = "creds/decision"
			}
			client := startServerWith(t, tt.policy, decision, authz.Options{Credentials: tt.creds})
			path := tt.path
			if path == "" {
				path = "/v1/invoices"
			}
			req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
				Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "api.example.com", Path: path, Headers: tt.headers},
			}}}
			resp, err := client.Check(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if err := resp.ValidateAll(); err != nil {
				t.Errorf("response fails Envoy's own validation: %v", err)
			}
			if tt.wantDenied != 0 {
				if got := resp.GetDeniedResponse().GetStatus().GetCode(); int(got) != tt.wantDenied {
					t.Fatalf("status %v, want a %d denial", got, tt.wantDenied)
				}
				if resp.GetOkResponse() != nil {
					t.Errorf("a denial with an OK response: %v", resp.GetOkResponse())
				}
				return
			}
			ok := resp.GetOkResponse()
			if ok == nil {
				t.Fatalf("denied (%v), want allowed", resp.GetDeniedResponse())
			}
			if got := ok.GetHeadersToRemove(); !slices.Equal(got, tt.wantRemoved) {
				t.Errorf("headers_to_remove = %q, want %q", got, tt.wantRemoved)
			}
			if got := ok.GetQueryParametersToRemove(); !slices.Equal(got, tt.wantQuery) {
				t.Errorf("query_parameters_to_remove = %q, want %q", got, tt.wantQuery)
			}
			set := map[string]string{}
			for _, h := range ok.GetHeaders() {
				set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
			}
			for k, v := range tt.wantSet {
				if set[k] != v {
					t.Errorf("header %s set to %q, want %q", k, set[k], v)
				}
			}
		})
	}
}
