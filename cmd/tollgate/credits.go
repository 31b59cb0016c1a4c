package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/internal/wire"
)

const creditsUsage = `Usage:
  tollgate credits add ACCOUNT AMOUNT [--idempotency-key KEY] [--admin URL] [--token TOKEN]
                                    top up ACCOUNT's prepaid credits by AMOUNT; without
                                    --idempotency-key a random key is made and printed to
                                    stderr: rerun with it to retry without crediting twice
  tollgate credits show ACCOUNT [--admin URL] [--token TOKEN]
                                    print ACCOUNT's balance and quota usage

  --admin URL      Tollgate's admin listener (default http://127.0.0.1:9192)
  --token TOKEN    an admin token of the server: admin.token, or one of admin.tokens with
                   scope read (show) or credits (topup) (default $TOLLGATE_ADMIN_TOKEN; prefer
                   the variable: a flag is visible to other users in the process list)
` + adminTLSUsage

// adminTLSUsage documents the flags for an admin listener serving TLS.
const adminTLSUsage = `  --ca-file F      PEM CAs to trust for an https:// --admin (default $TOLLGATE_ADMIN_CA_FILE;
                   otherwise the system's)
  --cert-file F, --key-file F
                   a client certificate for admin.tls.client_ca_file (default
                   $TOLLGATE_ADMIN_CERT_FILE, $TOLLGATE_ADMIN_KEY_FILE)
`

// defaultAdminURL is the admin listener of the default configuration.
const defaultAdminURL = "http://127.0.0.1:9192"

// creditsCmd runs "tollgate credits add|show" against the accounts API of
// a running server's admin listener.
func creditsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, "credits", creditsUsage, map[string]command{
		"add":  creditsAdd,
		"show": creditsShow,
	}, args, stdout, stderr)
}

// command is one command of a group, such as "tollgate credits add".
type command func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// dispatch runs the command of group that args name (their first word),
// or prints the group's usage: on stdout when asked for (help), with
// errUsage on stderr otherwise.
func dispatch(ctx context.Context, group, usage string, cmds map[string]command, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	if run, ok := cmds[args[0]]; ok {
		return run(ctx, args[1:], stdout, stderr)
	}
	switch args[0] {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "tollgate %s: unknown command %q\n\n%s", group, args[0], usage)
	return errUsage
}

// adminFlags are the flags shared by the admin API's commands (credits,
// ledger, usage, keys, consumers).
type adminFlags struct {
	admin, token              string
	caFile, certFile, keyFile string
}

func (f *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.admin, "admin", defaultAdminURL, "admin listener URL")
	fs.StringVar(&f.token, "token", "", "admin token (default $TOLLGATE_ADMIN_TOKEN)")
	fs.StringVar(&f.caFile, "ca-file", os.Getenv("TOLLGATE_ADMIN_CA_FILE"), "PEM CAs to trust for an https:// admin URL")
	fs.StringVar(&f.certFile, "cert-file", os.Getenv("TOLLGATE_ADMIN_CERT_FILE"), "client certificate (PEM)")
	fs.StringVar(&f.keyFile, "key-file", os.Getenv("TOLLGATE_ADMIN_KEY_FILE"), "client certificate's key (PEM)")
}

// tlsConfig is the client's TLS configuration from the flags; nil when
// none is set (the system's roots, no client certificate).
func (f *adminFlags) tlsConfig() (*tls.Config, error) {
	if f.caFile == "" && f.certFile == "" && f.keyFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.caFile != "" {
		pem, err := os.ReadFile(f.caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", f.caFile)
		}
	}
	if (f.certFile == "") != (f.keyFile == "") {
		return nil, errors.New("--cert-file and --key-file go together")
	}
	if f.certFile != "" {
		cert, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
		if err != nil {
			return nil, fmt.Errorf("--cert-file %s, --key-file %s: %w", f.certFile, f.keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// client checks the flags and returns the API client.
func (f *adminFlags) client(cmd string, stderr io.Writer) (*adminClient, error) {
	u, err := url.Parse(f.admin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(stderr, "%s: --admin %q is not an http:// or https:// URL, e.g. %s\n", cmd, f.admin, defaultAdminURL)
		return nil, errUsage
	}
	token := f.token
	if token == "" {
		token = os.Getenv("TOLLGATE_ADMIN_TOKEN")
	}
	if token == "" {
		fmt.Fprintf(stderr, "%s: no admin token: set TOLLGATE_ADMIN_TOKEN (or pass --token) to one of the server's admin tokens (admin.token, admin.tokens)\n", cmd)
		return nil, errUsage
	}
	tc, err := f.tlsConfig()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", cmd, err)
		return nil, errUsage
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	if tc != nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tc
		hc.Transport = tr
	}
	return &adminClient{base: strings.TrimRight(f.admin, "/"), token: token, http: hc}, nil
}

func creditsAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const cmd = "credits add"
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, creditsUsage) }
	var af adminFlags
	af.register(fs)
	key := fs.String("idempotency-key", "", "key of this top-up; reuse it to retry (default: random, printed)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return errUsage
	}
	if len(pos) != 2 {
		fmt.Fprintf(stderr, "%s: want ACCOUNT AMOUNT, got %d argument(s)\n\n%s", cmd, len(pos), creditsUsage)
		return errUsage
	}
	account, amount := pos[0], pos[1]
	c, err := af.client(cmd, stderr)
	if err != nil {
		return err
	}
	*key = idempotencyKeyOr(*key, "top-up", stderr)
	// The server validates the amount; send it as the number typed, or as
	// a string (which it refuses, quoting it) when it is not a JSON number.
	var value any = amount
	if jsonNumber.MatchString(amount) {
		value = json.Number(amount)
	}
	body, err := json.Marshal(map[string]any{"amount": value})
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/accounts/"+url.PathEscape(account)+"/credits", body,
		http.Header{"Idempotency-Key": {*key}})
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	return printJSON(stdout, resp)
}

func creditsShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const cmd = "credits show"
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, creditsUsage) }
	var af adminFlags
	af.register(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return errUsage
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "%s: want ACCOUNT, got %d argument(s)\n\n%s", cmd, len(pos), creditsUsage)
		return errUsage
	}
	c, err := af.client(cmd, stderr)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/accounts/"+url.PathEscape(pos[0]), nil, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	return printJSON(stdout, resp)
}

// jsonNumber is the JSON number grammar (RFC 8259).
var jsonNumber = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)

// parseInterspersed parses flags placed before, between or after the
// positional arguments, and returns those; "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// adminClient calls the admin API of an admin listener.
type adminClient struct {
	base, token string
	http        *http.Client
	// maxBody bounds a response read (default 1 MiB).
	maxBody int64
	// warnings, when set, receives the Warning headers of the responses
	// (such as a key directory's that is not durable).
	warnings io.Writer
}

// do sends a request and returns the body of a 2xx response; any other
// response becomes an error carrying the status and the problem's detail.
func (c *adminClient) do(ctx context.Context, method, path string, body []byte, header http.Header) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json, "+wire.ContentTypeProblem)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if c.warnings != nil {
		for _, w := range resp.Header.Values("Warning") {
			fmt.Fprintf(c.warnings, "warning from the server: %s\n", w)
		}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, cmp.Or(c.maxBody, 1<<20)))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read response: %w", method, req.URL.Redacted(), err)
	}
	if resp.StatusCode/100 == 2 {
		return data, nil
	}
	return nil, fmt.Errorf("%s %s: %s: %s", method, req.URL.Redacted(), resp.Status, problemDetail(resp.Header.Get("Content-Type"), data))
}

// problemDetail is the detail of an RFC 9457 problem, or the start of any
// other body.
func problemDetail(contentType string, body []byte) string {
	if mt, _, _ := mime.ParseMediaType(contentType); mt == wire.ContentTypeProblem {
		var p wire.Problem
		if json.Unmarshal(body, &p) == nil && p.Message() != "" {
			return p.Message()
		}
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "…"
	}
	if s == "" {
		return "(empty response)"
	}
	return s
}

// printJSON prints a JSON response indented.
func printJSON(w io.Writer, data []byte) error {
	var out bytes.Buffer
	if err := json.Indent(&out, bytes.TrimSpace(data), "", "  "); err != nil {
		return errors.New("the server answered with invalid JSON")
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}
