package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

const keysUsage = `Usage:
  tollgate keys create CONSUMER [--name N] [--expires T] [--idempotency-key KEY] [--json]
                                    create an API key for CONSUMER and print it, once, to
                                    stdout (the rest goes to stderr; --json: the whole answer
                                    to stdout); the server keeps only its hash
  tollgate keys list CONSUMER       print CONSUMER's keys: ids, display prefixes, names, times
  tollgate keys rotate KEY_ID [--grace D] [--idempotency-key KEY] [--json]
                                    create a key replacing KEY_ID (same consumer and name) and
                                    print it like create; KEY_ID keeps working for D (default
                                    24h; 0s: it stops at once)
  tollgate keys revoke KEY_ID       stop KEY_ID at once
  tollgate keys expire KEY_ID --at T | --never
                                    make KEY_ID expire at T, or never

  --expires T, --at T
                   an RFC 3339 time (2027-01-01T00:00:00Z) or a duration from now (720h)
  --idempotency-key KEY
                   the key of this creation; without it a random one is made and printed to
                   stderr: rerun with it to retry without creating a second key
  --admin URL      Tollgate's admin listener (default http://127.0.0.1:9192)
  --token TOKEN    an admin token of the server with scope keys (list: read): admin.token, or
                   one of admin.tokens (default $TOLLGATE_ADMIN_TOKEN)
` + adminTLSUsage

const consumersUsage = `Usage:
  tollgate consumers create ID --plan P [--status S] [--metadata JSON] [--idempotency-key KEY]
                                    add a consumer to the key directory
  tollgate consumers show ID        print a consumer
  tollgate consumers update ID [--plan P] [--status active|suspended] [--metadata JSON]
                                    change a consumer's plan, status or metadata (a JSON
                                    object that replaces the whole metadata; {} clears it)

  --idempotency-key KEY
                   the key of this creation; without it a random one is made and printed to
                   stderr: rerun with it to retry safely
  --admin URL      Tollgate's admin listener (default http://127.0.0.1:9192)
  --token TOKEN    an admin token of the server with scope keys (show: read): admin.token, or
                   one of admin.tokens (default $TOLLGATE_ADMIN_TOKEN)
` + adminTLSUsage

// keysCmd runs "tollgate keys ..." against the directory API of a running
// server's admin listener.
func keysCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, "keys", keysUsage, map[string]command{
		"create": keysCreate,
		"list":   keysList,
		"rotate": keysRotate,
		"revoke": keysRevoke,
		"expire": keysExpire,
	}, args, stdout, stderr)
}

// consumersCmd runs "tollgate consumers ..." against the directory API.
func consumersCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, "consumers", consumersUsage, map[string]command{
		"create": consumersCreate,
		"show":   consumersShow,
		"update": consumersUpdate,
	}, args, stdout, stderr)
}

// directoryCommand is what every keys and consumers command parses: the
// admin flags, its own, and one positional argument.
type directoryCommand struct {
	name, usage, arg string // arg: what the positional argument is
	fs               *flag.FlagSet
	af               adminFlags
}

func newDirectoryCommand(name, usage, arg string, stderr io.Writer) *directoryCommand {
	d := &directoryCommand{name: name, usage: usage, arg: arg, fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	d.fs.SetOutput(stderr)
	d.fs.Usage = func() { fmt.Fprint(stderr, usage) }
	d.af.register(d.fs)
	return d
}

// parse parses args and returns the positional argument and the client.
func (d *directoryCommand) parse(args []string, stderr io.Writer) (string, *adminClient, error) {
	pos, err := parseInterspersed(d.fs, args)
	if err != nil {
		return "", nil, errUsage
	}
	if len(pos) != 1 || pos[0] == "" {
		fmt.Fprintf(stderr, "%s: want %s, got %d argument(s)\n\n%s", d.name, d.arg, len(pos), d.usage)
		return "", nil, errUsage
	}
	c, err := d.af.client(d.name, stderr)
	if err != nil {
		return "", nil, err
	}
	c.warnings = stderr
	return pos[0], c, nil
}

// usageError prints a flag's problem and the usage.
func (d *directoryCommand) usageError(stderr io.Writer, format string, args ...any) error {
	fmt.Fprintf(stderr, "%s: %s\n\n%s", d.name, fmt.Sprintf(format, args...), d.usage)
	return errUsage
}

// idempotencyKeyOr returns key, or a random one it prints to stderr.
func idempotencyKeyOr(key, what string, stderr io.Writer) string {
	if key != "" {
		return key
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	key = hex.EncodeToString(b)
	fmt.Fprintf(stderr, "idempotency key: %s (to retry this %s safely, rerun with --idempotency-key %s)\n", key, what, key)
	return key
}

// parseWhen reads a time flag: an RFC 3339 time, or a duration from now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2027-01-01T00:00:00Z) nor a positive duration from now (720h)", s)
	}
	return now.Add(d).UTC().Truncate(time.Second), nil
}

// newKey is the server's answer to a key's creation or rotation.
type newKey struct {
	ID       string     `json:"id"`
	Prefix   string     `json:"prefix"`
	Consumer string     `json:"consumer"`
	Name     string     `json:"name"`
	Expires  *time.Time `json:"expires_at"`
	Secret   string     `json:"secret"`
	Replayed bool       `json:"replayed"`
}

// errReplayed: the server created the key on an earlier call with the
// same idempotency key, and cannot show it again.
var errReplayed = errors.New("this idempotency key created the key before, and a key is shown only once: use the one printed then, or rotate it if it was lost")

// printNewKey prints a created key: the key alone on stdout, what it is
// on stderr; or, with asJSON, the whole answer on stdout.
func printNewKey(stdout, stderr io.Writer, resp []byte, asJSON bool, what string) error {
	var k newKey
	if err := json.Unmarshal(resp, &k); err != nil {
		return errors.New("the server answered with invalid JSON")
	}
	if asJSON {
		if err := printJSON(stdout, resp); err != nil {
			return err
		}
	}
	if k.Replayed {
		return fmt.Errorf("key %s (%s…) of consumer %q: %w", k.ID, k.Prefix, k.Consumer, errReplayed)
	}
	if !asJSON {
		if _, err := fmt.Fprintln(stdout, k.Secret); err != nil {
			return err
		}
	}
	expires := "never expires"
	if k.Expires != nil {
		expires = "expires " + k.Expires.Format(time.RFC3339)
	}
	fmt.Fprintf(stderr, "%s key %s (%s…, name %q) for consumer %q; it %s. The key is shown this once: store it now.\n",
		what, k.ID, k.Prefix, k.Name, k.Consumer, expires)
	return nil
}

func keysCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	d := newDirectoryCommand("keys create", keysUsage, "CONSUMER", stderr)
	name := d.fs.String("name", "", "the key's name")
	expires := d.fs.String("expires", "", "RFC 3339 time or duration from now (default: never)")
	key := d.fs.String("idempotency-key", "", "key of this creation; reuse it to retry (default: random, printed)")
	asJSON := d.fs.Bool("json", false, "print the whole answer, the key included, as JSON")
	consumer, c, err := d.parse(args, stderr)
	if err != nil {
		return err
	}
	body := map[string]any{}
	if *name != "" {
		body["name"] = *name
	}
	if *expires != "" {
		at, err := parseWhen(*expires, time.Now())
		if err != nil {
			return d.usageError(stderr, "--expires %v", err)
		}
		body["expires_at"] = at
	}
	idem := idempotencyKeyOr(*key, "creation", stderr)
	resp, err := c.doJSON(ctx, http.MethodPost, "/v1/consumers/"+url.PathEscape(consumer)+"/keys", body, idem)
	if err != nil {
		return fmt.Errorf("%s: %w", d.name, err)
	}
	if err := printNewKey(stdout, stderr, resp, *asJSON, "created"); err != nil {
		return fmt.Errorf("%s: %w", d.name, err)
	}
	return nil
}

func keysList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	d := newDirectoryCommand("keys list", keysUsage, "CONSUMER", stderr)
	consumer, c, err := d.parse(args, stderr)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/consumers/"+url.PathEscape(consumer)+"/keys", nil, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", d.name, err)
	}
	return printJSON(stdout, resp)
}

func keysRotate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	d := newDirectoryCommand("keys rotate", keysUsage, "KEY_ID", stderr)
	grace := d.fs.Duration("grace", 24*time.Hour, "how long the old key keeps working")
	key := d.fs.String("idempotency-key", "", "key of this rotation; reuse it to retry (default: random, printed)")
	asJSON := d.fs.Bool("json", false, "print the whole answer, the key included, as JSON")
	id, c, err := d.parse(args, stderr)
	if err != nil {
		return err
	}
	if *grace < 0 {
		return d.usageError(stderr, "--grace %s: want 0s or more", *grace)
	}
	idem := idempotencyKeyOr(*key, "rotation", stderr)
	resp, err := c.doJSON(ctx, http.MethodPost, "/v1/keys/"+url.PathEscape(id)+"/rotate", map[string]any{"grace": grace.String()}, idem)
	if err != nil {
		return fmt.Errorf("%s: %w", d.name, err)
	}
	if err := printNewKey(stdout, stderr, resp, *asJSON, "rotated "+id+": new"); err != nil {
		return fmt.Errorf("%s: %w", d.name, err)
	}
	return nil
}

func keysRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	d := newDirectoryCommand("keys revoke", keysUsage, "KEY_ID", stderr)
	id, c, err := d.parse(args, stderr)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/keys/"+url.PathEscape(id)+"/revoke", nil, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", d.name, err)
	}
	return printJSON(stdout, resp)
}

func keysExpire(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	d := newDirectoryCommand("keys expire", keysUsage, "KEY_ID", stderr)
	at := d.fs.String("at", "", "RFC 3339 time or duration from now")
	never := d.fs.Bool("never", false, "the key never expires")
	id, c, err := d.parse(args, stderr)
	if err != nil {
		return err
	}
	var when *time.Time
	switch {
	case (*at == "") == !*never:
		return d.usageError(stderr, "give one of --at T and --never")
	case *at != "":
		t, err := parseWhen(*at, time.Now())
		if err != nil {
			return d.usageError(stderr, "--at %v", err)
		}
		when = &t
	}
	resp, err := c.doJSON(ctx, http.MethodPut, "/v1/keys/"+url.PathEscape(id)+"/expiry", map[string]any{"expires_at": when}, "")
	if err != nil {
		return fmt.Errorf("%s: %w", d.name, err)
	}
	return printJSON(stdout, resp)
}

// metadataFlag checks a --metadata value: a JSON object.
func metadataFlag(s string) (json.RawMessage, error) {
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil || m == nil {
		return nil, fmt.Errorf("--metadata %q is not a JSON object, like '{\"team\": \"search\"}'", s)
	}
	return json.RawMessage(s), nil
}

func consumersCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	d := newDirectoryCommand("consumers create", consumersUsage, "ID", stderr)
	plan := d.fs.String("plan", "", "the consumer's plan (required)")
	status := d.fs.String("status", "", "active (default) or suspended")
	metadata := d.fs.String("metadata", "", "a JSON object")
	key := d.fs.String("idempotency-key", "", "key of this creation; reuse it to retry (default: random, printed)")
	id, c, err := d.parse(args, stderr)
	if err != nil {
		return err
	}
	if *plan == "" {
		return d.usageError(stderr, "--plan is required")
	}
	body := map[string]any{"id": id, "plan": *plan}
	if *status != "" {
		body["status"] = *status
	}
	if *metadata != "" {
		m, err := metadataFlag(*metadata)
		if err != nil {
			return d.usageError(stderr, "%v", err)
		}
		body["metadata"] = m
	}
	idem := idempotencyKeyOr(*key, "creation", stderr)
	resp, err := c.doJSON(ctx, http.MethodPost, "/v1/consumers", body, idem)
	if err != nil {
		return fmt.Errorf("%s: %w", d.name, err)
	}
	return printJSON(stdout, resp)
}

func consumersShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	d := newDirectoryCommand("consumers show", consumersUsage, "ID", stderr)
	id, c, err := d.parse(args, stderr)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/consumers/"+url.PathEscape(id), nil, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", d.name, err)
	}
	return printJSON(stdout, resp)
}

func consumersUpdate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	d := newDirectoryCommand("consumers update", consumersUsage, "ID", stderr)
	d.fs.String("plan", "", "the new plan")
	d.fs.String("status", "", "active or suspended")
	d.fs.String("metadata", "", "a JSON object replacing the metadata")
	id, c, err := d.parse(args, stderr)
	if err != nil {
		return err
	}
	body := map[string]any{}
	var bad error
	d.fs.Visit(func(f *flag.Flag) {
		switch v := f.Value.String(); f.Name {
		case "plan", "status":
			body[f.Name] = v
		case "metadata":
			m, err := metadataFlag(v)
			if err != nil {
				bad = err
			}
			body["metadata"] = m
		}
	})
	if bad != nil {
		return d.usageError(stderr, "%v", bad)
	}
	if len(body) == 0 {
		return d.usageError(stderr, "nothing to change: give --plan, --status or --metadata")
	}
	resp, err := c.doJSON(ctx, http.MethodPatch, "/v1/consumers/"+url.PathEscape(id), body, "")
	if err != nil {
		return fmt.Errorf("%s: %w", d.name, err)
	}
	return printJSON(stdout, resp)
}

// doJSON sends body as JSON, with an Idempotency-Key when idem is set.
func (c *adminClient) doJSON(ctx context.Context, method, path string, body any, idem string) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	var h http.Header
	if idem != "" {
		h = http.Header{"Idempotency-Key": {idem}}
	}
	return c.do(ctx, method, path, b, h)
}
