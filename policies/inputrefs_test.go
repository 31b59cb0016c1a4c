package policies_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate-dev/tollgate/policies"
)

func compiled(t testing.TB, src string) *ast.Module {
	t.Helper()
	c := ast.NewCompiler()
	if c.Compile(map[string]*ast.Module{"p.rego": ast.MustParseModule(src)}); c.Failed() {
		t.Fatalf("compile %s: %v", src, c.Errors)
	}
	return c.Modules["p.rego"]
}

func TestAnalyzeInputRefs(t *testing.T) {
	const all = "input"
	cases := []struct {
		name string
		rego string
		want string // InputRefs.String()
	}{
		{"no input", `p := 1`, "input.{}"},
		{"attributes only", `p if input.attributes.request.http.method == "GET"`, "input.{attributes}"},
		{"parsed_body dot", `p if input.parsed_body.user == "a"`, "input.{parsed_body}"},
		{"parsed_body bracket", `p if input["parsed_body"].user == "a"`, "input.{parsed_body}"},
		{"parsed_body alone", `p if input.parsed_body`, "input.{parsed_body}"},
		{"head value", `p := input.parsed_query`, "input.{parsed_query}"},
		{"several", `p if { input.parsed_path[0] == "v1"; input.attributes.request }`, "input.{attributes,parsed_path}"},
		{"nested key", `p if input.parsed_body[input.attributes.k]`, "input.{attributes,parsed_body}"},
		{"comprehension", `p := [x | some x in input.parsed_path]`, "input.{parsed_path}"},
		{"function body", "f(x) := input.parsed_body[x]\np := f(\"a\")", "input.{parsed_body}"},
		{"function argument", "f(x) := x.user\np := f(input.parsed_body)", "input.{parsed_body}"},
		{"else branch", "p := 1 if input.attributes.a else := 2 if input.parsed_body.b", "input.{attributes,parsed_body}"},
		{"import alias", "import input.parsed_body as b\np if b.user == \"a\"", "input.{parsed_body}"},
		{"import plain", "import input.parsed_body\np if parsed_body.user == \"a\"", "input.{parsed_body}"},
		// The compiler resolves imports into full references and drops
		// them: an unused import reads nothing, import input alone is
		// nothing but the references made through it.
		{"import unused", "import input.parsed_query as q\np := 1", "input.{}"},
		{"import whole", "import input\np if input.attributes", "input.{attributes}"},
		{"with target", "q if input.attributes\np if q with input.parsed_query as {}", "input.{attributes,parsed_query}"},
		{"with target deep", "q if input.attributes\np if q with input.parsed_body.user as \"a\"", "input.{attributes,parsed_body}"},

		// Input as a whole.
		{"assigned", `p if { x := input; x.parsed_body }`, all},
		{"head whole", `p := input`, all},
		{"variable key", `p if { some k; input[k] == 1 }`, all},
		{"wildcard key", `p if input[_] == 1`, all},
		{"computed key", `p if input[concat("", ["parsed_", "body"])]`, all},
		{"number key", `p if input[0]`, all},
		{"user function", "f(x) := x.parsed_body\np := f(input)", all},
		{"walk", `p if walk(input, [_, "x"])`, all},
		{"object.get", `p := object.get(input, ["parsed_body", "user"], null)`, all},
		{"json.marshal", `p := json.marshal(input)`, all},
		{"some in", `p if { some x in input; x == 1 }`, all},
		{"every", `p if every k, v in input { v != k }`, all},
		{"with value", "q if data.x.parsed_body\np if q with data.x as input", all},
		{"with whole target", "q if input.attributes\np if q with input as {}", all},
		{"object key", `p := {input: 1}`, all},
		{"set member", `p := {1, input}`, all},
		{"comparison", `p if input == {}`, all},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := compiled(t, "package p\n"+c.rego)
			got := policies.AnalyzeInputRefs(m)
			if got.String() != c.want {
				t.Errorf("%s\ngot %s, want %s", c.rego, got, c.want)
			}
			for _, name := range []string{"attributes", "parsed_body", "parsed_path", "parsed_query"} {
				want := c.want == all || slices.Contains(got.Names(), name)
				if got.Needs(name) != want {
					t.Errorf("Needs(%q) = %v, want %v", name, got.Needs(name), want)
				}
			}
		})
	}
}

// Several modules: the union of what each reads.
func TestAnalyzeInputRefsModules(t *testing.T) {
	a := compiled(t, "package a\np if input.parsed_body.x")
	b := compiled(t, "package b\np if input.attributes")
	if got, want := policies.AnalyzeInputRefs(a, b).String(), "input.{attributes,parsed_body}"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	c := compiled(t, "package c\np := input")
	if got := policies.AnalyzeInputRefs(a, b, c); !got.All() || got.Names() != nil {
		t.Errorf("got %s, want input", got)
	}
}

func TestInputRefsNil(t *testing.T) {
	var r *policies.InputRefs
	if !r.Needs("parsed_body") || !r.All() || r.String() != "input" {
		t.Errorf("nil InputRefs: Needs %v, All %v, String %q; want everything", r.Needs("parsed_body"), r.All(), r.String())
	}
}

// The engine analyses each policy set it loads; a reload brings the new
// set's references with it, and a Prepared keeps those of its own set.
// (The demo matches whole path segments of parsed_path.)
func TestEngineInputRefs(t *testing.T) {
	_, demo := newEngine(t, nil)
	if got, want := demo.Prepared().InputRefs().String(), "input.{attributes,descriptors,parsed_path}"; got != want {
		t.Errorf("demo policies read %s, want %s", got, want)
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "policy.rego")
	write(t, file, "package tollgate\n\ndecision := {\"allow\": true}\n")
	e, q := newEngine(t, nil, dir)
	before := q.Prepared()
	if got := before.InputRefs().String(); got != "input.{}" {
		t.Errorf("before reload: %s, want input.{}", got)
	}
	write(t, file, "package tollgate\n\ndecision := {\"allow\": input.parsed_body.ok}\n")
	if err := e.Reloader().Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := q.Prepared().InputRefs().String(); got != "input.{parsed_body}" {
		t.Errorf("after reload: %s, want input.{parsed_body}", got)
	}
	if got := before.InputRefs().String(); got != "input.{}" {
		t.Errorf("the Prepared taken before the reload changed to %s", got)
	}
	if st := e.Reloader().Status(); st.Detail.(policies.Detail).Input != "input.{parsed_body}" {
		t.Errorf("status detail = %+v, want Input input.{parsed_body}", st.Detail)
	}
}
