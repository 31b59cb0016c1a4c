package authz

import (
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/proto"

	"github.com/tollgate-dev/tollgate/policies/decision"
)

// rawHeaders is a request as Envoy sends it with encode_raw_headers:
// true: header_map (raw_value bytes) and no headers.
func rawHeaders(body string, kv ...string) *authv3.CheckRequest {
	hm := &corev3.HeaderMap{}
	for i := 0; i < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return httpReq(&authv3.AttributeContext_HttpRequest{
		Method: "POST", Path: "/v1/chat/completions", Body: body, HeaderMap: hm,
	})
}

// TestInputHeaderMap: a request carrying only header_map gives policies
// the headers Envoy would have sent in headers (lower-case names, repeated
// names joined with ","), and the body is parsed by its content-type
// there; the caller's request is left alone.
func TestInputHeaderMap(t *testing.T) {
	req := rawHeaders(`{"model":"small"}`,
		":path", "/v1/chat/completions",
		"Content-Type", "application/json",
		"x-api-key", "tg_live_3f9a1c0d5e7b4a2c",
		"accept", "text/plain",
		"Accept", "application/json",
		"x-tollgate-consumer", "forged",
	)
	before := proto.Clone(req)
	got := Input(req)
	h, err := got.Find(ast.MustParseRef(`x.attributes.request.http`)[1:])
	if err != nil {
		t.Fatal(err)
	}
	checkExpect(t, h, map[string]string{
		"headers": `{":path": "/v1/chat/completions", "content-type": "application/json",
			"x-api-key": "tg_live_3f9a1c0d5e7b4a2c", "accept": "text/plain,application/json",
			"x-tollgate-consumer": "forged"}`,
	})
	checkExpect(t, got, map[string]string{"parsed_body": `{"model": "small"}`})
	if !proto.Equal(req, before) {
		t.Error("Input changed the caller's request")
	}

	// The same request with headers: the same input but for header_map.
	withHeaders := proto.Clone(req).(*authv3.CheckRequest)
	withHeaders.Attributes.Request.Http.HeaderMap = nil
	withHeaders.Attributes.Request.Http.Headers = headerMap(req.GetAttributes().GetRequest().GetHttp())
	want := Input(withHeaders)
	for _, k := range []string{"parsed_path", "parsed_query", "parsed_body", "truncated_body"} {
		if ast.Compare(get(got, k), get(want, k)) != 0 {
			t.Errorf("%s: header_map gives %v, headers %v", k, get(got, k), get(want, k))
		}
	}

	// Envoy sends one or the other; when both come, headers is the input.
	both := proto.Clone(withHeaders).(*authv3.CheckRequest)
	both.Attributes.Request.Http.Headers = map[string]string{"x-api-key": "k"}
	both.Attributes.Request.Http.HeaderMap = req.GetAttributes().GetRequest().GetHttp().GetHeaderMap()
	hb, _ := Input(both).Find(ast.MustParseRef(`x.attributes.request.http.headers`)[1:])
	if ast.Compare(hb, ast.MustParseTerm(`{"x-api-key": "k"}`).Value) != 0 {
		t.Errorf("headers with header_map too: %v, want headers as sent", hb)
	}
}

// TestRespondRemovesForgedHeaderMap: forged x-tollgate-* headers named
// only in header_map are overwritten or removed like those in headers,
// each name once.
func TestRespondRemovesForgedHeaderMap(t *testing.T) {
	req := rawHeaders("",
		"x-api-key", "tg_live_3f9a1c0d5e7b4a2c",
		"X-Tollgate-Consumer", "globex",
		"x-tollgate-balance", "1000000",
		"x-tollgate-balance", "2",
		"x-tollgate-credits", "999",
	)
	req.Attributes.Request.Http.Headers = map[string]string{"x-tollgate-credits": "999"}
	resp := Respond(req, &decision.Decision{Allow: true, Consumer: "acme", Plan: "pro"})
	ok := resp.GetOkResponse()
	if got, want := ok.GetHeadersToRemove(), []string{"x-tollgate-balance", "x-tollgate-credits"}; !slices.Equal(got, want) {
		t.Errorf("headers_to_remove = %v, want %v", got, want)
	}
	set := map[string]string{}
	for _, h := range ok.GetHeaders() {
		set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	if set["x-tollgate-consumer"] != "acme" || set["x-tollgate-plan"] != "pro" {
		t.Errorf("headers = %v, want x-tollgate-consumer acme and x-tollgate-plan pro set (overwriting the forged ones)", set)
	}
}
