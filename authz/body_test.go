package authz

import (
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/tollgate-dev/tollgate/policies"
)

// nested is n arrays deep around inner.
func nested(n int, inner string) string {
	return strings.Repeat("[", n) + inner + strings.Repeat("]", n)
}

func TestDepthWithin(t *testing.T) {
	cases := []struct {
		name string
		json string
		want bool // within 3
	}{
		{"scalar", `1`, true},
		{"empty", ``, true},
		{"three", nested(3, "1"), true},
		{"four", nested(4, "1"), false},
		{"objects", `{"a":{"b":{"c":1}}}`, true},
		{"objects four", `{"a":{"b":{"c":{}}}}`, false},
		{"mixed four", `[{"a":[{}]}]`, false},
		{"siblings", `[[[1]],[[2]],[[3]]]`, true},
		{"brackets in a string", `["[[[[{{{{"]`, true},
		{"escaped quote", `["\"[[[[", "]]]]\\"]`, true},
		{"escaped backslash ends the string", `["\\", [[[1]]]]`, false},
		{"unterminated string", `["[[[[`, true},
		{"closed too often", `]]]][[[1]]]`, true}, // malformed: the decoder refuses it
		{"past the limit then closed", nested(4, "") + "[", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := depthWithin([]byte(c.json), 3); got != c.want {
				t.Errorf("depthWithin(%s, 3) = %v, want %v", c.json, got, c.want)
			}
		})
	}
}

// A JSON body nested up to maxBodyDepth is parsed; one level deeper leaves
// parsed_body undefined, like a malformed body, and nothing else changes.
func TestInputBodyDepth(t *testing.T) {
	objects := strings.Repeat(`{"a":`, maxBodyDepth) + "1" + strings.Repeat("}", maxBodyDepth)
	cases := []struct {
		name   string
		body   string
		raw    bool
		parsed bool
	}{
		{"arrays at the limit", nested(maxBodyDepth, `"x"`), false, true},
		{"arrays past the limit", nested(maxBodyDepth+1, `"x"`), false, false},
		{"objects at the limit", objects, false, true},
		{"objects past the limit", `[` + objects + `]`, false, false},
		{"raw_body past the limit", nested(maxBodyDepth+1, ""), true, false},
		{"4,096 levels", nested(4096, ""), false, false},
		{"deep brackets inside a string", `{"s": "` + strings.Repeat("[", 4096) + `"}`, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := bodyReq("application/json", "", c.body, nil)
			if c.raw {
				req = bodyReq("application/json", "", "", []byte(c.body))
			}
			got := Input(req)
			pb := get(got, "parsed_body")
			if c.parsed {
				want := ast.MustParseTerm(c.body)
				if pb == nil || ast.Compare(pb.Value, want.Value) != 0 {
					t.Errorf("parsed_body = %v, want the body parsed", pb)
				}
			} else if pb != nil {
				t.Errorf("parsed_body = %.40v..., want undefined", pb)
			}
			if tb := get(got, "truncated_body"); tb == nil || ast.Compare(tb.Value, ast.Boolean(false)) != 0 {
				t.Errorf("truncated_body = %v, want false", tb)
			}
			if get(got, "attributes") == nil || get(got, "parsed_path") == nil {
				t.Errorf("the rest of the input is missing: %.200v", got)
			}
		})
	}
}

func refsOf(t testing.TB, rego string) *policies.InputRefs {
	t.Helper()
	c := ast.NewCompiler()
	if c.Compile(map[string]*ast.Module{"p.rego": ast.MustParseModule("package p\n" + rego)}); c.Failed() {
		t.Fatal(c.Errors)
	}
	return policies.AnalyzeInputRefs(c.Modules["p.rego"])
}

// InputFor builds the derived members only for a policy that reads them;
// the members it builds are those Input builds.
func TestInputFor(t *testing.T) {
	req := bodyReq("application/json", "", `{"user": "alice"}`, nil)
	req.Attributes.Request.Http.Path = "/v1/things?x=1"
	full := Input(req)
	cases := []struct {
		name string
		refs *policies.InputRefs
		want []string // of the derived members
	}{
		{"nil refs", nil, []string{"parsed_path", "parsed_query", "parsed_body"}},
		{"attributes only", refsOf(t, `p if input.attributes.request.http.method == "GET"`), nil},
		{"nothing", refsOf(t, `p := 1`), nil},
		{"parsed_body", refsOf(t, `p := input.parsed_body.user`), []string{"parsed_body"}},
		{"parsed_query, with parsed_path", refsOf(t, `p := input.parsed_query.x`), []string{"parsed_path", "parsed_query"}},
		{"parsed_path, with parsed_query", refsOf(t, `p := input.parsed_path[0]`), []string{"parsed_path", "parsed_query"}},
		{"input whole", refsOf(t, `p := json.marshal(input)`), []string{"parsed_path", "parsed_query", "parsed_body"}},
	}
	derived := []string{"parsed_path", "parsed_query", "parsed_body"}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := InputFor(req, c.refs)
			var missing []string
			for _, k := range derived {
				if !slices.Contains(c.want, k) {
					missing = append(missing, k)
					if v := get(got, k); v != nil {
						t.Errorf("%s = %v, want it not built", k, v)
					}
				} else if v := get(got, k); v == nil {
					t.Errorf("%s not built", k)
				}
			}
			assertSameInput(t, got, without(full, missing...))
		})
	}
}

// BenchmarkDepthWithin is the scan's cost for 8 KiB bodies that pass it:
// many short strings, and one long one (a prompt) that is skipped with
// bytes.IndexByte.
func BenchmarkDepthWithin(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"messages": [`)
	for sb.Len() < 8<<10 {
		sb.WriteString(`{"role": "user", "content": "say \"hi\" [1] {2}"},`)
	}
	sb.WriteString(`{}]}`)
	prompt := `{"model": "large", "messages": [{"role": "user", "content": "` + strings.Repeat(`lorem [ipsum] {dolor} \"sit\" amet, consectetur adipiscing elit. `, 8<<10/64) + `"}]}`
	for name, body := range map[string]string{"short_strings": sb.String(), "long_string": prompt} {
		b.Run(name, func(b *testing.B) {
			data := []byte(body)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if !depthWithin(data, maxBodyDepth) {
					b.Fatal("too deep")
				}
			}
		})
	}
}

// FuzzParsedBody: on any text the depth scan agrees with the decoder —
// JSON the decoder accepts passes the scan exactly when it nests at most
// maxBodyDepth deep — and parse never panics, gives parsed_body only for
// such JSON, and then gives what the decoder gives.
func FuzzParsedBody(f *testing.F) {
	for _, s := range []string{
		`{"model": "small", "messages": [{"role": "user", "content": "hi"}]}`,
		nested(maxBodyDepth, "1"), nested(maxBodyDepth+1, "1"), nested(4096, ""),
		`["\"[[[[", "]]]]\\", {"a": [[]]}]`, `["\\", [[[1]]]]`, `"[[[["`, `]]]]`, `{"a":`, `[1e400, -0, 1.0]`,
		`"\u005b\u005b"`, `"\ud800"`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		var x any
		valid := util.UnmarshalJSON([]byte(text), &x) == nil
		within := depthWithin([]byte(text), maxBodyDepth)
		if valid && within != (depthOf(x) <= maxBodyDepth) {
			t.Fatalf("%.100q nests %d deep; depthWithin(%d) = %v", text, depthOf(x), maxBodyDepth, within)
		}
		v, ok := body{json: true, text: text}.parse()
		if ok != (valid && within) {
			t.Fatalf("%.100q: parsed %v, want %v (valid JSON %v, depth within %v)", text, ok, valid && within, valid, within)
		}
		if ok {
			want, err := ast.InterfaceToValue(x)
			if err != nil {
				t.Fatal(err)
			}
			if ast.Compare(v, want) != 0 {
				t.Fatalf("%.100q: parsed_body %.100v, want %.100v", text, v, want)
			}
		}
	})
}

// BenchmarkInputFor is BenchmarkInput for a policy that reads only
// attributes, like the demo: no parsed_path or parsed_query.
func BenchmarkInputFor(b *testing.B) {
	req := loadFixture(b, "check-get-apikey")
	refs := refsOf(b, `p := input.attributes`)
	b.ReportAllocs()
	for b.Loop() {
		_ = InputFor(req, refs)
	}
}
