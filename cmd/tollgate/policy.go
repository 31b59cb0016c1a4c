package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/internal/app"
	"github.com/tollgate-dev/tollgate/policies"
)

// errTestsFailed means policy tests ran and some failed (exit code 1, as
// with opa test); the report was already printed.
var errTestsFailed = errors.New("policy tests failed")

func policyTest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("policy test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	verbose := fs.Bool("v", false, "print every test, not only failures")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "policy test: name at least one file or directory, e.g. tollgate policy test policies/")
		return errUsage
	}
	modules, store, err := tester.Load(fs.Args(), nil)
	if err != nil {
		return err
	}
	ch, err := tester.NewRunner().SetStore(store).Run(ctx, modules)
	if err != nil {
		return err
	}
	var results []*tester.Result
	for r := range ch {
		results = append(results, r)
	}
	if len(results) == 0 {
		fmt.Fprintf(stderr, "policy test: no test_ rules found in %s\n", strings.Join(fs.Args(), ", "))
		return errTestsFailed
	}
	replay := make(chan *tester.Result, len(results))
	failed := 0
	for _, r := range results {
		if r.Fail || r.Error != nil {
			failed++
		}
		replay <- r
	}
	close(replay)
	rep := tester.PrettyReporter{Output: stdout, Verbose: *verbose, FailureLine: !*verbose}
	if err := rep.Report(replay); err != nil {
		return err
	}
	if failed > 0 {
		return errTestsFailed
	}
	return nil
}

func policyEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("policy eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	input := fs.String("input", "", "CheckRequest JSON file (protojson, as Envoy sends it); - for stdin")
	configPath := fs.String("config", "", "configuration file whose policy settings to use")
	decision := fs.String("decision", "", "decision path (default: from the config, else tollgate/decision)")
	var paths multiFlag
	fs.Var(&paths, "policy", "policy file, directory or bundle (repeatable; default: from the config, else the embedded demo)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *input == "" {
		fmt.Fprintln(stderr, "policy eval: --input FILE is required")
		return errUsage
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	if len(paths) > 0 {
		cfg.Policy.Paths = paths
	}
	if *decision != "" {
		cfg.Policy.Decision = *decision
	}
	raw, err := readInput(*input)
	if err != nil {
		return err
	}
	req := &authv3.CheckRequest{}
	if err := protojson.Unmarshal(raw, req); err != nil {
		return fmt.Errorf("%s: not a CheckRequest: %w", *input, err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	engine, err := policies.New(ctx, policies.Options{Paths: cfg.Policy.Paths, Queries: []string{cfg.Policy.Decision}, Logger: log})
	if err != nil {
		return err
	}
	q, err := engine.Query(cfg.Policy.Decision)
	if err != nil {
		return err
	}
	c := &capture{eval: q}
	srv, err := authz.New(c, authz.Options{DenyStatus: cfg.Authz.DenyStatus, Logger: log,
		Credentials: app.AuthzCredentials(cfg.Authz.Credentials)})
	if err != nil {
		return err
	}
	resp, err := srv.Check(ctx, req)
	if err != nil {
		return err
	}
	var decisionJSON any
	if c.term != nil {
		if decisionJSON, err = ast.JSON(c.term.Value); err != nil {
			return err
		}
	}
	respJSON, err := protojson.Marshal(resp)
	if err != nil {
		return err
	}
	out := struct {
		Decision      any             `json:"decision"`
		CheckResponse json.RawMessage `json:"check_response"`
	}{decisionJSON, respJSON}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// capture remembers the raw decision for printing.
type capture struct {
	eval *policies.Query
	term *ast.Term
}

func (c *capture) Eval(ctx context.Context, in ast.Value) (*ast.Term, error) {
	t, err := c.eval.Eval(ctx, in)
	c.term = t
	return t, err
}

func readInput(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(path)
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
