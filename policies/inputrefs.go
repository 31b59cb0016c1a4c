package policies

import (
	"maps"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// InputRefs says which top-level members of input a policy set can read,
// so that the parts of the input that cost something to build (a parsed
// body, say) are built only for policies that look at them.
//
// It is derived from the compiled modules: every reference to input.<name>
// (with <name> a constant string, as in input.parsed_body.user or
// input["parsed_body"], in a rule, a function or a with modifier, or
// through an import alias, which the compiler resolves) adds <name>. Any use of input as a whole — input alone (x :=
// input, f(input), walk(input), object.get(input, ...), json.marshal(input),
// some x in input), or input[k] with a key that is not a constant string —
// makes it need every member.
//
// A nil *InputRefs needs every member: with no analysis, build everything.
type InputRefs struct {
	all   bool
	names map[string]struct{}
}

// AnalyzeInputRefs returns what modules can read of input. The modules
// should be compiled (imports resolved); uncompiled modules give a
// superset, since their import paths are counted as reads too.
func AnalyzeInputRefs(modules ...*ast.Module) *InputRefs {
	r := &InputRefs{names: map[string]struct{}{}}
	var vis *ast.GenericVisitor
	vis = ast.NewGenericVisitor(func(x any) bool {
		if r.all {
			return true // nothing left to learn
		}
		switch x := x.(type) {
		case ast.Ref:
			if !x[0].Equal(ast.InputRootDocument) {
				return false
			}
			r.addRef(x)
			for _, t := range x[1:] {
				vis.Walk(t) // input[input.k] or input.a[f(input)]
			}
			return true
		case ast.Var:
			// input not at the head of a reference: the whole document.
			if x.Equal(ast.InputRootDocument.Value) {
				r.all = true
			}
		}
		return false
	})
	for _, m := range modules {
		for _, imp := range m.Imports {
			vis.Walk(imp.Path)
		}
		for _, rule := range m.Rules {
			vis.Walk(rule)
		}
	}
	if r.all {
		r.names = nil
	}
	return r
}

func (r *InputRefs) addRef(ref ast.Ref) {
	if len(ref) < 2 {
		r.all = true
		return
	}
	s, ok := ref[1].Value.(ast.String)
	if !ok {
		r.all = true
		return
	}
	r.names[string(s)] = struct{}{}
}

// Needs tells whether the policy set can read input.<name>.
func (r *InputRefs) Needs(name string) bool {
	if r == nil || r.all {
		return true
	}
	_, ok := r.names[name]
	return ok
}

// All tells whether the policy set can read input as a whole (every
// member is needed).
func (r *InputRefs) All() bool { return r == nil || r.all }

// Names lists the members read, sorted; nil when All.
func (r *InputRefs) Names() []string {
	if r.All() {
		return nil
	}
	return slices.Sorted(maps.Keys(r.names))
}

// String is "input" when the whole input is read, else the members read,
// such as "input.{attributes,parsed_body}".
func (r *InputRefs) String() string {
	if r.All() {
		return "input"
	}
	return "input.{" + strings.Join(r.Names(), ",") + "}"
}
