package authz_test

import (
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/policies/decision"
)

// FuzzParseDecision: any document is parsed without a panic, and any
// document that is accepted becomes a CheckResponse that passes Envoy's own
// validation.
func FuzzParseDecision(f *testing.F) {
	for _, s := range []string{
		`true`, `false`, `{"allow": false, "status": 402, "reason": "r", "payment": {"url": "u"}}`,
		`{"allowed": true, "headers": {"a": ["1", "2"]}, "request_headers_to_remove": ["b"], "dynamic_metadata": {"x": [1, null]}}`,
		`{"allow": true, "consumer": "c", "plan": "p", "headers": {"x-a": "1"}, "response_headers": {"ratelimit": "limit=1"}}`,
		`{"allowed": false, "http_status": 429, "body": "slow", "headers": {"retry-after": "1"}}`,
		`{"allow": true, "limits": [{"name": "a", "key": "k", "limit": 1, "window": "1s"}], "charge": {"account": "a", "credits": 1}}`,
	} {
		f.Add(s)
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Headers: map[string]string{"x-tollgate-plan": "forged", "X-Tollgate-X": "1"}},
	}}}
	f.Fuzz(func(t *testing.T, doc string) {
		term, err := ast.ParseTerm(doc)
		if err != nil || !term.IsGround() {
			return
		}
		if _, err := ast.JSON(term.Value); err != nil {
			return // not a JSON value: policies cannot produce it
		}
		d, err := decision.Parse(term, 403)
		if err != nil {
			return
		}
		resp := authz.Respond(req, d)
		if err := resp.ValidateAll(); err != nil {
			t.Fatalf("accepted decision %s gives an invalid CheckResponse: %v", doc, err)
		}
	})
}
