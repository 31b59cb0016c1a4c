package authz_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/proto"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/policies"
)

// withBody is req as a POST with a JSON body.
func withBody(req *authv3.CheckRequest, body string) *authv3.CheckRequest {
	req = proto.Clone(req).(*authv3.CheckRequest)
	h := req.GetAttributes().GetRequest().GetHttp()
	h.Method = "POST"
	h.Headers["content-type"] = "application/json"
	h.Body = body
	return req
}

func upstreamHeader(resp *authv3.CheckResponse, key string) (string, bool) {
	for _, h := range resp.GetOkResponse().GetHeaders() {
		if h.GetHeader().GetKey() == key {
			return h.GetHeader().GetValue(), true
		}
	}
	return "", false
}

// A body nested deeper than 64 leaves parsed_body undefined: a policy that
// reads it still decides (here by its default), it does not fail. At 64
// levels the body is parsed.
func TestCheckDeepBody(t *testing.T) {
	envoy := startServer(t, "envoy_object", "envoy/authz/allow")
	demo := startServer(t, "demo", "tollgate/decision")
	req := fixture(t, "envoy_object_allow")
	at64 := `{"user": "alice", "x": ` + strings.Repeat("[", 63) + strings.Repeat("]", 63) + `}`
	cases := []struct {
		name   string
		client authv3.AuthorizationClient
		req    *authv3.CheckRequest
		code   int32  // gRPC status of the answer: 0 allowed, 7 denied, 16 unauthenticated
		reason string // its message
		user   string // x-ext-auth-user, when allowed
	}{
		{"depth 64 read", envoy, withBody(req, at64), 0, "", "alice"},
		{"depth 65 read", envoy, withBody(req, `{"user": "alice", "x": `+strings.Repeat("[", 64)+strings.Repeat("]", 64)+`}`), 7, "", ""},
		{"depth 4096 read", envoy, deepBody(req), 7, "", ""},
		{"depth 4096 not read", demo, deepBody(fixture(t, "demo_401_unknown_key")), 16, "invalid_credential", ""},
		{"depth 4096 not read, allowed", demo, deepBody(fixture(t, "demo_200_api_key")), 0, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := c.client.Check(context.Background(), c.req)
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if got := resp.GetStatus().GetCode(); got != c.code || resp.GetStatus().GetMessage() != c.reason {
				t.Fatalf("status %d %q, want %d %q (response %v)", got, resp.GetStatus().GetMessage(), c.code, c.reason, resp)
			}
			if c.code == 7 && resp.GetDeniedResponse().GetBody() != "denied by default" {
				t.Errorf("denied with body %q, want the policy's default", resp.GetDeniedResponse().GetBody())
			}
			if got, _ := upstreamHeader(resp, "x-ext-auth-user"); got != c.user {
				t.Errorf("x-ext-auth-user = %q, want %q", got, c.user)
			}
		})
	}
}

// A reload that changes what the policy reads changes what is built for
// the next Check: a policy that starts reading parsed_body gets it at once,
// and one that reads input whole gets every member.
func TestCheckReloadSwitchesInput(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.rego")
	write := func(src string) {
		t.Helper()
		if err := os.WriteFile(file+".tmp", []byte("package tollgate\n\n"+src+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".tmp", file); err != nil {
			t.Fatal(err)
		}
	}
	write(`decision := {"allow": true, "headers": {"x-method": input.attributes.request.http.method}}`)
	engine, err := policies.New(context.Background(), policies.Options{Paths: []string{dir}, Queries: []string{"tollgate/decision"}})
	if err != nil {
		t.Fatal(err)
	}
	q, _ := engine.Query("tollgate/decision")
	srv, err := authz.New(q, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	client := serve(t, srv)
	req := withBody(fixture(t, "envoy_object_allow"), `{"user": "alice"}`)

	steps := []struct {
		name   string
		policy string // "" keeps the one in force
		refs   string // what it reads
		header string
		want   string // its value
	}{
		{"attributes only", "", "input.{attributes}", "x-method", "POST"},
		{"reads parsed_body", `decision := {"allow": true, "headers": {"x-user": input.parsed_body.user}}`,
			"input.{parsed_body}", "x-user", "alice"},
		{"reads input whole", `decision := {"allow": true, "headers": {"x-members": concat(",", sort([k | some k, _ in input]))}}`,
			"input", "x-members", "attributes,parsed_body,parsed_path,parsed_query,truncated_body,version"},
		{"reads parsed_query", `decision := {"allow": true, "headers": {"x-query": json.marshal(input.parsed_query)}}`,
			"input.{parsed_query}", "x-query", "{}"},
		{"reads parsed_body again", `decision := {"allow": true, "headers": {"x-user": input["parsed_body"].user}}`,
			"input.{parsed_body}", "x-user", "alice"},
	}
	for _, s := range steps {
		if s.policy != "" {
			write(s.policy)
			if err := engine.Reloader().Reload(context.Background()); err != nil {
				t.Fatalf("%s: reload: %v", s.name, err)
			}
		}
		if got := q.Prepared().InputRefs().String(); got != s.refs {
			t.Errorf("%s: the policy reads %s, want %s", s.name, got, s.refs)
		}
		resp, err := client.Check(context.Background(), req)
		if err != nil {
			t.Fatalf("%s: Check: %v", s.name, err)
		}
		if got, _ := upstreamHeader(resp, s.header); got != s.want {
			t.Errorf("%s: %s = %q, want %q (response %v)", s.name, s.header, got, s.want, resp)
		}
	}
}

// keys lists the top-level members of an input.
func keys(v ast.Value) []string {
	var out []string
	v.(ast.Object).Foreach(func(k, _ *ast.Term) { out = append(out, string(k.Value.(ast.String))) })
	slices.Sort(out)
	return out
}

// The demo policy (which reads attributes and parsed_path) and a policy that reads
// parsed_body and parsed_query are each given what they read, and decide
// on it as on the whole input.
func TestInputByPolicy(t *testing.T) {
	cases := []struct {
		name, policy, path string
		req                *authv3.CheckRequest
		members            string
	}{
		{"demo", "", "tollgate/decision", withBody(fixture(t, "demo_200_api_key"), `{"model": "small"}`),
			"attributes,parsed_path,parsed_query,truncated_body,version"},
		{"parsed_body", "testdata/policies/envoy_object", "envoy/authz/allow", fixture(t, "envoy_object_allow"),
			"attributes,parsed_body,parsed_path,parsed_query,truncated_body,version"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := policies.Options{Queries: []string{c.path}}
			if c.policy != "" {
				opts.Paths = []string{c.policy}
			}
			engine, err := policies.New(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			q, _ := engine.Query(c.path)
			p := q.Prepared()
			in := authz.InputFor(c.req, p.InputRefs())
			if got := strings.Join(keys(in), ","); got != c.members {
				t.Errorf("input members %s, want %s", got, c.members)
			}
			full := authz.Input(c.req)
			in.(ast.Object).Foreach(func(k, v *ast.Term) {
				if w := full.(ast.Object).Get(k); w == nil || !w.Equal(v) {
					t.Errorf("%v = %v, want %v as in the whole input", k, v, w)
				}
			})
			got, err := p.Eval(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			want, err := p.Eval(context.Background(), full)
			if err != nil {
				t.Fatal(err)
			}
			if got == nil || !got.Equal(want) {
				t.Errorf("decision on the input built for the policy:\n%v\nwant, as on the whole input:\n%v", got, want)
			}
		})
	}
}
