// Package policies loads Rego policies and data, prepares the decision
// queries once per load, and swaps in a new policy set atomically when its
// files change. A broken change never replaces a working policy.
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
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/prometheus/client_golang/prometheus"
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
	// Logger receives reload results; slog.Default() when nil.
	Logger *slog.Logger
	// Registerer receives tollgate_policy_reloads_total; none when nil.
	Registerer prometheus.Registerer
}

// Engine holds the current policy set. Eval is safe for concurrent use and
// never blocks on a reload.
type Engine struct {
	opts    Options
	log     *slog.Logger
	current atomic.Pointer[state]
	reloads *prometheus.CounterVec

	mu     sync.Mutex // guards status and serialises reloads
	status Status
}

// state is one compiled, validated policy set. It is never mutated after it
// is published.
type state struct {
	revision string
	queries  map[string]*rego.PreparedEvalQuery
	modules  []string
}

// Status is what the admin endpoint shows about the policies.
type Status struct {
	Sources   []string  `json:"sources"`
	Revision  string    `json:"revision,omitempty"`
	Modules   []string  `json:"modules,omitempty"`
	LoadedAt  time.Time `json:"loaded_at,omitzero"`
	Reloads   int       `json:"reloads"`
	Failures  int       `json:"failures"`
	LastError string    `json:"last_error,omitempty"`
	FailedAt  time.Time `json:"failed_at,omitzero"`
}

// New loads the policies and prepares every query. It fails if the initial
// load fails: there is no last good policy to fall back on yet.
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
	e := &Engine{
		opts: opts,
		log:  opts.Logger,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_policy_reloads_total",
			Help: "Policy loads by result (success or failure). A failure keeps the last good policy.",
		}, []string{"result"}),
	}
	e.status.Sources = e.sources()
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(e.reloads); err != nil {
			return nil, fmt.Errorf("policies: register metrics: %w", err)
		}
	}
	if err := e.Reload(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *Engine) sources() []string {
	if len(e.opts.Paths) == 0 {
		return []string{"embedded:policies/demo"}
	}
	return slices.Clone(e.opts.Paths)
}

// Reload loads, compiles and prepares the policies again and publishes them
// only if everything succeeded. On failure the previous policy stays in
// force and the error is recorded in Status.
func (e *Engine) Reload(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	st, err := e.build(ctx)
	if err != nil {
		e.reloads.WithLabelValues("failure").Inc()
		e.status.Failures++
		e.status.LastError = err.Error()
		e.status.FailedAt = time.Now()
		return err
	}
	e.current.Store(st)
	e.reloads.WithLabelValues("success").Inc()
	e.status.Reloads++
	e.status.Revision = st.revision
	e.status.Modules = st.modules
	e.status.LoadedAt = time.Now()
	e.status.LastError = ""
	e.status.FailedAt = time.Time{}
	return nil
}

// Status returns a copy of the current status.
func (e *Engine) Status() Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.status
	s.Sources = slices.Clone(s.Sources)
	s.Modules = slices.Clone(s.Modules)
	return s
}

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

// Eval evaluates the decision for input. It returns (nil, nil) when the
// decision is undefined.
func (q *Query) Eval(ctx context.Context, input ast.Value) (*ast.Term, error) {
	pq := q.e.current.Load().queries[q.path]
	rs, err := pq.Eval(ctx, rego.EvalParsedInput(input), rego.EvalGenerateJSON(returnTerm))
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, nil
	}
	t, _ := rs[0].Expressions[0].Value.(*ast.Term)
	return t, nil
}

func normalize(path string) string { return strings.Trim(path, "/") }

func queryRef(path string) (ast.Ref, error) {
	return ast.ParseRef("data." + strings.ReplaceAll(normalize(path), "/", "."))
}

// build loads every source and prepares every query; it does not publish.
func (e *Engine) build(ctx context.Context) (*state, error) {
	loaded, err := Load(e.opts.Paths, e.opts.FS, false)
	if err != nil {
		return nil, err
	}
	compiler := ast.NewCompiler().WithEnablePrintStatements(false)
	if compiler.Compile(loaded.Modules); compiler.Failed() {
		return nil, fmt.Errorf("policies: compile: %w", compiler.Errors)
	}
	store := inmem.NewFromObjectWithOpts(loaded.Data, inmem.OptReturnASTValuesOnRead(true))
	st := &state{
		revision: loaded.Revision,
		queries:  make(map[string]*rego.PreparedEvalQuery, len(e.opts.Queries)),
		modules:  slices.Sorted(maps.Keys(loaded.Modules)),
	}
	for _, p := range e.opts.Queries {
		ref, err := queryRef(p)
		if err != nil {
			return nil, fmt.Errorf("policies: decision path %q: %w", p, err)
		}
		if len(compiler.GetRules(ref)) == 0 {
			return nil, fmt.Errorf("policies: decision path %q: no rule defines %s in %s (packages loaded: %s)",
				p, ref, strings.Join(e.status.Sources, ", "), strings.Join(packages(loaded.Modules), ", "))
		}
		pq, err := rego.New(
			rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))),
			rego.Compiler(compiler),
			rego.Store(store),
		).PrepareForEval(ctx)
		if err != nil {
			return nil, fmt.Errorf("policies: prepare %s: %w", ref, err)
		}
		st.queries[normalize(p)] = &pq
	}
	return st, nil
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
}

// Load reads modules and data from paths (files, directories, .tar.gz
// bundles), or from fsys when paths is empty. Test files (*_test.rego) are
// included only when withTests is set.
func Load(paths []string, fsys fs.FS, withTests bool) (*Loaded, error) {
	out := &Loaded{Modules: map[string]*ast.Module{}, Raw: map[string][]byte{}, Data: map[string]any{}}
	skip := func(_ string, info fs.FileInfo, depth int) bool {
		// Hidden entries are skipped: a Kubernetes ConfigMap volume keeps
		// its real files in "..2026_11_25_..." directories behind a "..data"
		// symlink, and loading those too would load every file twice.
		if depth > 0 && strings.HasPrefix(info.Name(), ".") {
			return true
		}
		return !withTests && !info.IsDir() && strings.HasSuffix(info.Name(), "_test.rego")
	}
	var plain []string
	for _, p := range paths {
		if !strings.HasSuffix(p, ".tar.gz") {
			plain = append(plain, p)
			continue
		}
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
