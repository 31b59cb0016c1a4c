// Package policies loads Rego policies and data, prepares the decision
// queries once per load, and swaps in a new policy set atomically when its
// files change (see internal/reload). A broken change never replaces a
// working policy.
package policies

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/reload"
)

// Options configure an Engine.
type Options struct {
	// Paths are .rego, .json, .yaml files, directories, or bundles
	// (.tar.gz). When empty, FS is loaded instead.
	Paths []string
	// FS is loaded (from its root) when Paths is empty; Embedded() by default.
	FS fs.FS
	// Queries are the decision paths to prepare, such as "tollgate/decision".
	// Each must be defined by a rule in the loaded policies.
	Queries []string
	// Watch reloads the policies when the files under Paths change, while
	// the Reloader runs.
	Watch bool
	// Logger receives reload results; slog.Default() when nil.
	Logger *slog.Logger
	// Registerer receives tollgate_reloads_total{component="policy"}; none
	// when nil.
	Registerer prometheus.Registerer
}

// Engine holds the current policy set. Eval is safe for concurrent use and
// never blocks on a reload.
type Engine struct {
	opts    Options
	current atomic.Pointer[state]
	r       *reload.Reloader
}

// state is one compiled, validated policy set. It is never mutated after it
// is published.
type state struct {
	revision string
	queries  map[string]*Prepared
	modules  []string
}

// Prepared is one decision path of one policy set: its prepared query and
// what the policy set reads of the input. A caller that builds the input
// for it (see InputRefs) and evaluates it holds one Prepared for both, so a
// reload in between cannot pair an input with a policy it was not built
// for.
type Prepared struct {
	pq   *rego.PreparedEvalQuery
	refs *InputRefs
}

// InputRefs says which members of input the policy set can read.
func (p *Prepared) InputRefs() *InputRefs { return p.refs }

// Eval evaluates the decision for input. It returns (nil, nil) when the
// decision is undefined.
func (p *Prepared) Eval(ctx context.Context, input ast.Value) (*ast.Term, error) {
	rs, err := p.pq.Eval(ctx, rego.EvalParsedInput(input), rego.EvalGenerateJSON(returnTerm))
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, nil
	}
	t, _ := rs[0].Expressions[0].Value.(*ast.Term)
	return t, nil
}

// Detail is what /status shows of the policy set in force, besides what
// reload.Status shows of every component.
type Detail struct {
	Modules []string `json:"modules"`
	// Input is what the policies can read of the input, such as
	// "input.{attributes,parsed_body}", or "input" for all of it: the
	// members of the input that are built for them.
	Input string `json:"input"`
}

// New loads the policies and prepares every query. It fails if the initial
// load fails: there is no last good policy to fall back on yet. With
// Options.Watch, the files are watched from before they are read; the
// Reloader's Run reloads them.
func New(ctx context.Context, opts Options) (*Engine, error) {
	if len(opts.Queries) == 0 {
		return nil, errors.New("policies: no decision path to prepare")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if len(opts.Paths) == 0 && opts.FS == nil {
		opts.FS = Embedded()
	}
	e := &Engine{opts: opts}
	r, err := reload.New(ctx, reload.Options{
		Component:  "policy",
		Paths:      opts.Paths,
		Sources:    e.sources(),
		Match:      loadable,
		Build:      e.build,
		Watch:      opts.Watch,
		Logger:     opts.Logger,
		Registerer: opts.Registerer,
	})
	if err != nil {
		return nil, err
	}
	e.r = r
	return e, nil
}

// loadable tells whether a file appearing in a policy directory would be
// loaded.
func loadable(path string) bool {
	if strings.HasSuffix(path, "_test.rego") {
		return false
	}
	for _, ext := range []string{".rego", ".json", ".yaml", ".yml", ".tar.gz"} {
		if strings.HasSuffix(path, ext) {
			return true
		}
	}
	return false
}

func (e *Engine) sources() []string {
	if len(e.opts.Paths) == 0 {
		return []string{"embedded:policies/demo"}
	}
	return slices.Clone(e.opts.Paths)
}

// Reloader reloads the policies (Reload, or Run when watching) and reports
// their status. A reload loads, compiles and prepares everything and
// publishes it only if all succeeded.
func (e *Engine) Reloader() *reload.Reloader { return e.r }

// Revision identifies the policy set in force (a hash of its sources).
func (e *Engine) Revision() string { return e.current.Load().revision }

// Query is a handle on one prepared decision path. It always evaluates
// against the policy set in force at the time of the call.
type Query struct {
	e    *Engine
	path string
}

// Query returns the handle for a decision path listed in Options.Queries.
func (e *Engine) Query(path string) (*Query, error) {
	path = normalize(path)
	if _, ok := e.current.Load().queries[path]; !ok {
		return nil, fmt.Errorf("policies: decision path %q was not prepared (prepared: %s)", path, strings.Join(slices.Sorted(maps.Keys(e.current.Load().queries)), ", "))
	}
	return &Query{e: e, path: path}, nil
}

// Path returns the decision path, such as "tollgate/decision".
func (q *Query) Path() string { return q.path }

// returnTerm hands back the result as an AST term, skipping OPA's
// conversion of results to Go maps.
func returnTerm(t *ast.Term, _ *rego.EvalContext) (any, error) { return t, nil }

// Prepared returns the decision path as prepared in the policy set in force.
func (q *Query) Prepared() *Prepared { return q.e.current.Load().queries[q.path] }

// Eval evaluates the decision for input with the policy set in force. It
// returns (nil, nil) when the decision is undefined.
func (q *Query) Eval(ctx context.Context, input ast.Value) (*ast.Term, error) {
	return q.Prepared().Eval(ctx, input)
}

func normalize(path string) string { return strings.Trim(path, "/") }

func queryRef(path string) (ast.Ref, error) {
	return ast.ParseRef("data." + strings.ReplaceAll(normalize(path), "/", "."))
}

// build loads every source and prepares every query; publishing the
// result swaps it in.
func (e *Engine) build(ctx context.Context) (*reload.Built, error) {
	loaded, err := Load(e.opts.Paths, e.opts.FS, false)
	if err != nil {
		return nil, err
	}
	compiler := ast.NewCompiler().WithEnablePrintStatements(false)
	if compiler.Compile(loaded.Modules); compiler.Failed() {
		return nil, fmt.Errorf("policies: compile: %w", compiler.Errors)
	}
	store := inmem.NewFromObjectWithOpts(loaded.Data, inmem.OptReturnASTValuesOnRead(true))
	// What every module can read, not only those a query depends on: a
	// superset is safe (an input member built and not read), a subset
	// would hide input from a policy.
	refs := AnalyzeInputRefs(slices.Collect(maps.Values(compiler.Modules))...)
	st := &state{
		revision: loaded.Revision,
		queries:  make(map[string]*Prepared, len(e.opts.Queries)),
		modules:  slices.Sorted(maps.Keys(loaded.Modules)),
	}
	for _, p := range e.opts.Queries {
		ref, err := queryRef(p)
		if err != nil {
			return nil, fmt.Errorf("policies: decision path %q: %w", p, err)
		}
		if len(compiler.GetRules(ref)) == 0 {
			return nil, fmt.Errorf("policies: decision path %q: no rule defines %s in %s (packages loaded: %s)",
				p, ref, strings.Join(e.sources(), ", "), strings.Join(packages(loaded.Modules), ", "))
		}
		pq, err := rego.New(
			rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))),
			rego.Compiler(compiler),
			rego.Store(store),
		).PrepareForEval(ctx)
		if err != nil {
			return nil, fmt.Errorf("policies: prepare %s: %w", ref, err)
		}
		st.queries[normalize(p)] = &Prepared{pq: &pq, refs: refs}
	}
	return &reload.Built{
		Revision: st.revision,
		Files:    loaded.Files,
		Detail:   Detail{Modules: st.modules, Input: refs.String()},
		Publish: func(context.Context) error {
			e.current.Store(st)
			return nil
		},
	}, nil
}

func packages(mods map[string]*ast.Module) []string {
	set := map[string]struct{}{}
	for _, m := range mods {
		set[strings.TrimPrefix(m.Package.Path.String(), "data.")] = struct{}{}
	}
	if len(set) == 0 {
		return []string{"none"}
	}
	return slices.Sorted(maps.Keys(set))
}

// Loaded is the result of reading policy sources.
type Loaded struct {
	Modules  map[string]*ast.Module
	Raw      map[string][]byte
	Data     map[string]any
	Revision string
	// Files are the files read (bundles included), for the watcher.
	Files []string
}

// Load reads modules and data from paths (files, directories, .tar.gz
// bundles), or from fsys when paths is empty. Test files (*_test.rego) are
// included only when withTests is set.
func Load(paths []string, fsys fs.FS, withTests bool) (*Loaded, error) {
	out := &Loaded{Modules: map[string]*ast.Module{}, Raw: map[string][]byte{}, Data: map[string]any{}}
	skip := func(path string, info fs.FileInfo, depth int) bool {
		// Hidden entries are skipped: a Kubernetes ConfigMap volume keeps
		// its real files in "..2026_11_25_..." directories behind a "..data"
		// symlink, and loading those too would load every file twice.
		if depth > 0 && strings.HasPrefix(info.Name(), ".") {
			return true
		}
		if !withTests && !info.IsDir() && strings.HasSuffix(info.Name(), "_test.rego") {
			return true
		}
		if !info.IsDir() && loadable(path) {
			out.Files = append(out.Files, path)
		}
		return false
	}
	var plain []string
	for _, p := range paths {
		if !strings.HasSuffix(p, ".tar.gz") {
			plain = append(plain, p)
			continue
		}
		out.Files = append(out.Files, p)
		b, err := loader.NewFileLoader().WithProcessAnnotation(true).AsBundle(p)
		if err != nil {
			return nil, fmt.Errorf("policies: bundle %s: %w", p, err)
		}
		if err := addBundle(out, p, b, withTests); err != nil {
			return nil, err
		}
	}
	if len(plain) > 0 || fsys != nil {
		fl := loader.NewFileLoader().WithProcessAnnotation(true).WithFollowSymlinks(true)
		roots := plain
		if len(paths) == 0 {
			fl = fl.WithFS(fsys)
			roots = []string{"."}
		} else {
			for _, p := range plain {
				if _, err := os.Stat(p); err != nil {
					return nil, fmt.Errorf("policies: %w", err)
				}
			}
		}
		res, err := fl.Filtered(roots, skip)
		if err != nil {
			return nil, fmt.Errorf("policies: load: %w", withJSONPositions(err))
		}
		for _, m := range res.Modules {
			out.Modules[m.Name] = m.Parsed
			out.Raw[m.Name] = m.Raw
		}
		if err := merge(out.Data, res.Documents, ""); err != nil {
			return nil, fmt.Errorf("policies: data: %w", err)
		}
	}
	if len(out.Modules) == 0 {
		return nil, fmt.Errorf("policies: no .rego module found in %s", strings.Join(paths, ", "))
	}
	out.Revision = revision(out)
	return out, nil
}

func addBundle(out *Loaded, path string, b *bundle.Bundle, withTests bool) error {
	for _, mf := range b.Modules {
		if !withTests && strings.HasSuffix(mf.Path, "_test.rego") {
			continue
		}
		name := path + ":" + mf.Path
		out.Modules[name] = mf.Parsed
		out.Raw[name] = mf.Raw
	}
	if err := merge(out.Data, b.Data, ""); err != nil {
		return fmt.Errorf("policies: bundle %s data: %w", path, err)
	}
	return nil
}

// merge deep-merges src into dst; two sources defining the same non-object
// value is an error naming the path.
func merge(dst, src map[string]any, at string) error {
	for k, v := range src {
		cur, ok := dst[k]
		if !ok {
			dst[k] = v
			continue
		}
		a, aok := cur.(map[string]any)
		b, bok := v.(map[string]any)
		if !aok || !bok {
			return fmt.Errorf("data.%s%s is defined by two sources", at, k)
		}
		if err := merge(a, b, at+k+"."); err != nil {
			return err
		}
	}
	return nil
}

// revision hashes module sources and data, so replicas serving the same
// files report the same revision.
func revision(l *Loaded) string {
	h := sha256.New()
	for _, name := range slices.Sorted(maps.Keys(l.Raw)) {
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(l.Raw[name]))
		h.Write(l.Raw[name])
	}
	data, _ := json.Marshal(l.Data) // sorted keys: stable across replicas
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// withJSONPositions adds line:column to the loader's JSON syntax errors,
// which otherwise name only the file ("data.json: invalid character").
func withJSONPositions(err error) error {
	var errs loader.Errors
	if !errors.As(err, &errs) {
		return err
	}
	out := make(loader.Errors, len(errs))
	for i, e := range errs {
		out[i] = e
		msg := e.Error()
		j := strings.Index(msg, ".json: ")
		if j < 0 {
			continue
		}
		file := msg[:j+len(".json")]
		b, rerr := os.ReadFile(file)
		if rerr != nil {
			continue
		}
		var syn *json.SyntaxError
		var v any
		if jerr := json.Unmarshal(b, &v); errors.As(jerr, &syn) {
			line, col := position(b, syn.Offset-1) // Offset is just past the bad byte
			out[i] = fmt.Errorf("%s:%d:%d: %s", file, line, col, syn.Error())
		}
	}
	return out
}

// position converts a byte offset to a 1-based line and column.
func position(b []byte, off int64) (line, col int) {
	line, col = 1, 1
	for i := int64(0); i < off && i < int64(len(b)); i++ {
		if b[i] == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}
