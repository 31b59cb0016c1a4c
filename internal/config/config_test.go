package config_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"

	"github.com/tollgate-dev/tollgate/internal/config"
	"github.com/tollgate-dev/tollgate/internal/yamlstrict"
	"github.com/tollgate-dev/tollgate/ratelimit"
	"github.com/tollgate-dev/tollgate/ratelimit/rls"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestValidFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/valid/*.yaml")
	if len(files) == 0 {
		t.Fatal("no testdata/valid files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := config.Load(f)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.GRPC.Address == "" || c.Policy.Decision == "" || c.Authz.DenyStatus == 0 || c.ShutdownTimeout == 0 {
				t.Errorf("defaults not applied: %+v", c)
			}
		})
	}
}

// TestDefaultsMatchDocumentedFile: full.yaml documents every setting with
// its default. It is decoded without applying defaults, so a zero, empty
// or null value there (that the defaults would silently replace) fails.
func TestDefaultsMatchDocumentedFile(t *testing.T) {
	full, err := os.ReadFile("testdata/valid/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffDefaults(t, "testdata/valid/full.yaml", full) {
		t.Errorf("testdata/valid/full.yaml documents another default than config.Default(): %s", d)
	}
	if _, err := config.Load("testdata/valid/full.yaml"); err != nil {
		t.Fatal(err)
	}
}

// TestEveryFieldDocumented walks the yaml tags of Config: every setting
// must be in testdata/valid/full.yaml and in the README's configuration
// reference, whose values (decoded without defaults) must be
// config.Default()'s.
func TestEveryFieldDocumented(t *testing.T) {
	paths := yamlPaths(reflect.TypeFor[config.Config](), "")
	if len(paths) < 30 {
		t.Fatalf("found %d settings, want them all: %v", len(paths), paths)
	}
	full, err := os.ReadFile("testdata/valid/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	readme := readmeReference(t)
	for _, doc := range []struct {
		name string
		data []byte
	}{{"testdata/valid/full.yaml", full}, {"README.md's configuration reference", readme}} {
		var m map[string]any
		if err := yaml.Unmarshal(doc.data, &m); err != nil {
			t.Fatalf("%s: %v", doc.name, err)
		}
		for _, p := range paths {
			if !hasPath(m, p) {
				t.Errorf("%s does not document %s", doc.name, p)
			}
		}
	}
	for _, d := range diffDefaults(t, "README.md", readme) {
		t.Errorf("README.md documents another default than config.Default(): %s", d)
	}
	if _, err := config.Parse("README.md", readme); err != nil {
		t.Fatalf("README.md's configuration reference: %v", err)
	}
}

// diffDefaults decodes a documented configuration without applying
// defaults and lists each setting whose value is not config.Default()'s.
func diffDefaults(t *testing.T, name string, data []byte) []string {
	t.Helper()
	d := yamlstrict.NewDecoder(name)
	d.YAML11Bools = true
	var c config.Config
	d.DecodeDocument(data, &c)
	if err := d.Err(); err != nil {
		t.Fatal(err)
	}
	return diffLeaves(reflect.ValueOf(c), reflect.ValueOf(*config.Default()), "")
}

// diffLeaves compares two values of a configuration type field by field.
func diffLeaves(got, want reflect.Value, path string) []string {
	switch got.Kind() {
	case reflect.Struct:
		var out []string
		for i := range got.NumField() {
			name, _, _ := strings.Cut(got.Type().Field(i).Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			p := name
			if path != "" {
				p = path + "." + name
			}
			out = append(out, diffLeaves(got.Field(i), want.Field(i), p)...)
		}
		return out
	case reflect.Pointer:
		if got.IsNil() || want.IsNil() {
			if got.IsNil() != want.IsNil() {
				return []string{fmt.Sprintf("%s: %s, want %s", path, show(got), show(want))}
			}
			return nil
		}
		return diffLeaves(got.Elem(), want.Elem(), path)
	}
	if !reflect.DeepEqual(got.Interface(), want.Interface()) {
		return []string{fmt.Sprintf("%s: %s, want %s", path, show(got), show(want))}
	}
	return nil
}

func show(v reflect.Value) string {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "null"
		}
		v = v.Elem()
	}
	if d, ok := v.Interface().(config.Duration); ok {
		return time.Duration(d).String()
	}
	return fmt.Sprintf("%#v", v.Interface())
}

// yamlPaths lists the dotted yaml paths of t's fields, recursively.
func yamlPaths(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			out = append(out, yamlPaths(ft, prefix+name+".")...)
			continue
		}
		out = append(out, prefix+name)
	}
	return out
}

func hasPath(m map[string]any, path string) bool {
	var v any = m
	for part := range strings.SplitSeq(path, ".") {
		mm, ok := v.(map[string]any)
		if !ok {
			return false
		}
		if v, ok = mm[part]; !ok {
			return false
		}
	}
	return true
}

// readmeReference returns the YAML block of the README's configuration
// reference.
func readmeReference(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "## Configuration reference")
	if !ok {
		t.Fatal("README.md has no configuration reference")
	}
	_, after, ok = strings.Cut(after, "```yaml\n")
	block, _, ok2 := strings.Cut(after, "```")
	if !ok || !ok2 {
		t.Fatal("README.md's configuration reference has no yaml block")
	}
	return []byte(block)
}

// TestInvalidFiles: one file per mistake; its first line says
// "# want: <text the error must contain>".
func TestInvalidFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/invalid/*.yaml")
	if len(files) == 0 {
		t.Fatal("no testdata/invalid files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want := wantLine(t, f)
			_, err := config.Load(f)
			if err == nil {
				t.Fatalf("Load succeeded, want error containing %q", want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error:\n  %v\nwant it to contain:\n  %s", err, want)
			}
			var es yamlstrict.Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %v is %T, want yamlstrict.Errors", err, err)
			}
			for _, e := range es {
				if e.File != f || e.Line < 1 {
					t.Errorf("error %q does not name %s and a line", e, f)
				}
			}
		})
	}
}

func TestTwoErrorsReportedTogether(t *testing.T) {
	_, err := config.Load("testdata/invalid/two-errors.yaml")
	if err == nil || !strings.Contains(err.Error(), "log.level") || !strings.Contains(err.Error(), "log.format") {
		t.Errorf("error = %v, want both log.level and log.format reported", err)
	}
}

func wantLine(t *testing.T, file string) string {
	t.Helper()
	fh, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	sc.Scan()
	line, ok := strings.CutPrefix(sc.Text(), "# want: ")
	if !ok {
		t.Fatalf("%s: first line must be \"# want: ...\"", file)
	}
	return line
}

// TestParse: what yaml.v3 (the previous decoder) accepted keeps working,
// and the messages say what is wrong.
func TestParse(t *testing.T) {
	tests := []struct {
		name  string
		doc   string
		check func(c *config.Config) bool // for valid documents
		err   string                      // the error must contain it
	}{
		{name: "YAML 1.1 boolean off", doc: "grpc: {reflection: off}\n",
			check: func(c *config.Config) bool { return !c.GRPC.ReflectionOn("127.0.0.1:9191") }},
		{name: "YAML 1.1 boolean yes", doc: "store: {kind: redis, redis: {addrs: [\"r:6379\"], tls: {enabled: yes}}}\n",
			check: func(c *config.Config) bool { return c.Store.Redis.TLS.Enabled }},
		{name: "trailing empty document", doc: "log: {level: debug}\n---\n",
			check: func(c *config.Config) bool { return c.Log.Level == "debug" }},
		{name: "second document", doc: "log: {level: debug}\n---\nlog: {level: info}\n",
			err: "f.yaml:2: a second YAML document starts here"},
		{name: "merge keys in fleets", doc: "xds: {fleets: {<<: {canary: c.yaml}, edge: e.yaml}}\n",
			check: func(c *config.Config) bool {
				return reflect.DeepEqual(c.XDS.Fleets, map[string]string{"canary": "c.yaml", "edge": "e.yaml"})
			}},
		{name: "block scalar token keeps its line break", doc: "admin:\n  token: |\n    s3cret\n",
			check: func(c *config.Config) bool { return c.Admin.Token == "s3cret\n" }},
		{name: "token with a tab", doc: "admin: {token: \"a\\tb\"}\n",
			check: func(c *config.Config) bool { return c.Admin.Token == "a\tb" }},
		{name: "float that is a whole number", doc: "store: {memory: {max_keys: 1e6}}\n",
			check: func(c *config.Config) bool { return c.Store.Memory.MaxKeys == 1_000_000 }},
		{name: "float 1.0", doc: "store: {memory: {max_keys: 1.0}}\n",
			check: func(c *config.Config) bool { return c.Store.Memory.MaxKeys == 1 }},
		{name: "float not a whole number", doc: "store: {memory: {max_keys: 1.5}}\n",
			err: "f.yaml:1: store.memory.max_keys 1.5 is not a whole number (allowed: a whole number)"},
		{name: "tagged int not a number", doc: "authz: {deny_status: !!int abc}\n",
			err: "f.yaml:1: authz.deny_status abc is not a whole number"},
		{name: "redis timeout under 1ms", doc: "store: {kind: redis, redis: {addrs: [\"r:6379\"], timeout: 1ns}}\n",
			err: "f.yaml:1: store.redis.timeout: 1ns is out of range (allowed: 1ms to 10s"},
		{name: "redis timeout 1ms", doc: "store: {kind: redis, redis: {addrs: [\"r:6379\"], timeout: 1ms}}\n",
			check: func(c *config.Config) bool { return c.Store.Redis.Timeout == config.Duration(time.Millisecond) }},
		{name: "negative duration", doc: "shutdown_timeout: -1s\n",
			err: `f.yaml:1: shutdown_timeout "-1s" is negative (allowed: a duration such as 200ms, 15s or 1m, or 0s for the default)`},
		{name: "shutdown_delay 0s is none", doc: "shutdown_delay: 0s\n",
			check: func(c *config.Config) bool { return *c.ShutdownDelay == 0 }},
		{name: "shutdown_delay unset is the default", doc: "log: {level: info}\n",
			check: func(c *config.Config) bool { return *c.ShutdownDelay == config.DefaultShutdownDelay }},
		{name: "negative optional duration", doc: "shutdown_delay: -1s\n",
			err: `f.yaml:1: shutdown_delay "-1s" is negative (allowed: a duration such as 200ms, 15s or 1m, or 0s for none)`},
		{name: "null duration is the default", doc: "shutdown_timeout: ~\n",
			check: func(c *config.Config) bool { return c.ShutdownTimeout == config.DefaultShutdownTimeout }},
		{name: "postgres dsn", doc: "postgres: {dsn: \"postgres://tollgate@db:5432/tollgate?sslmode=verify-full\", max_conns: 3}\n",
			check: func(c *config.Config) bool {
				return c.Postgres.Enabled() && c.Postgres.MaxConns == 3 && c.Postgres.ConnectTimeout == config.DefaultPostgresConnectTimeout
			}},
		{name: "postgres off by default", doc: "log: {level: info}\n",
			check: func(c *config.Config) bool {
				return !c.Postgres.Enabled() && c.Postgres.MaxConns == config.DefaultPostgresMaxConns
			}},
		{name: "grpc tls with mTLS and identities", doc: "grpc: {tls: {cert_file: s.crt, key_file: s.key, client_ca_file: ca.pem}}\nauthz: {allowed_identities: [\"spiffe://cluster.local/ns/edge/sa/envoy\"]}\n",
			check: func(c *config.Config) bool {
				return c.GRPC.TLS.Enabled() && c.Authz.AllowedIdentities[0] == "spiffe://cluster.local/ns/edge/sa/envoy"
			}},
		{name: "tls key without certificate", doc: "admin:\n  tls: {key_file: s.key}\n",
			err: "f.yaml:2: admin.tls.cert_file: empty, with key_file set"},
		{name: "client CA without a certificate", doc: "grpc:\n  tls: {client_ca_file: ca.pem}\n",
			err: "f.yaml:2: grpc.tls.client_ca_file: set without cert_file and key_file"},
		{name: "identities without a client CA", doc: "grpc: {tls: {cert_file: s.crt, key_file: s.key}}\nratelimit:\n  allowed_identities: [envoy.internal]\n",
			err: "ratelimit.allowed_identities: set without grpc.tls.client_ca_file"},
		{name: "wildcard identity", doc: "admin: {tls: {cert_file: s.crt, key_file: s.key, client_ca_file: ca.pem}}\nxds:\n  allowed_identities: [\"spiffe://cluster.local/*\"]\n",
			err: `xds.allowed_identities[0]: "spiffe://cluster.local/*" is not an identity`},
		{name: "reflection unset: loopback only", doc: "grpc: {address: \"0.0.0.0:9191\"}\n",
			check: func(c *config.Config) bool {
				return !c.GRPC.ReflectionOn(c.GRPC.Address) && c.GRPC.ReflectionOn("127.0.0.1:9191") &&
					c.GRPC.ReflectionOn("localhost:9191") && c.GRPC.ReflectionOn("[::1]:9191") && !c.GRPC.ReflectionOn("10.0.0.5:9191")
			}},
		{name: "reflection asked for", doc: "grpc: {address: \"0.0.0.0:9191\", reflection: true}\n",
			check: func(c *config.Config) bool { return c.GRPC.ReflectionOn(c.GRPC.Address) }},
		{name: "ratelimit bounds default", doc: "ratelimit: {failure_mode: open}\n",
			check: func(c *config.Config) bool {
				return c.RateLimit.MaxDescriptors == 64 && c.RateLimit.MaxEntries == 16 && c.RateLimit.MaxEntryBytes == 1024
			}},
		{name: "ratelimit bounds set", doc: "ratelimit: {max_descriptors: 1024, max_entries: 1, max_entry_bytes: 65536}\n",
			check: func(c *config.Config) bool {
				return c.RateLimit.MaxDescriptors == 1024 && c.RateLimit.MaxEntries == 1 && c.RateLimit.MaxEntryBytes == 65536
			}},
		{name: "ratelimit max_descriptors past MaxLimits", doc: "ratelimit:\n  max_descriptors: 1025\n",
			err: "f.yaml:2: ratelimit.max_descriptors: 1025 is out of range (allowed: 1 to 1024)"},
		{name: "ratelimit max_entries negative", doc: "ratelimit:\n  max_entries: -1\n",
			err: "f.yaml:2: ratelimit.max_entries: -1 is out of range (allowed: 1 to 256)"},
		{name: "ratelimit max_entry_bytes too large", doc: "ratelimit:\n\n  max_entry_bytes: 65537\n",
			err: "f.yaml:3: ratelimit.max_entry_bytes: 65537 is out of range (allowed: 1 to 65536)"},
		{name: "ratelimit max_entries not a number", doc: "ratelimit: {max_entries: many}\n",
			err: "f.yaml:1: ratelimit.max_entries"},
		{name: "admin tokens", doc: "admin:\n  token: all\n  tokens:\n    - {token: ro, scopes: [read]}\n    - {token_file: /run/secrets/ops, scopes: [read, credits, keys]}\n",
			check: func(c *config.Config) bool {
				return c.Admin.APIOn() && len(c.Admin.Tokens) == 2 && c.Admin.Tokens[0].Scopes[0] == "read" &&
					c.Admin.Tokens[1].TokenFile == "/run/secrets/ops" && c.Admin.MaxConnections == config.DefaultAdminMaxConnections
			}},
		{name: "admin tokens alone turn the API on", doc: "admin: {tokens: [{token: ro, scopes: [read]}]}\n",
			check: func(c *config.Config) bool { return c.Admin.APIOn() }},
		{name: "admin API off by default", doc: "admin: {address: 127.0.0.1:9192}\n",
			check: func(c *config.Config) bool { return !c.Admin.APIOn() }},
		{name: "admin token unknown scope", doc: "admin:\n  tokens:\n    - token: ro\n      scopes: [read, write]\n",
			err: `f.yaml:4: admin.tokens[0].scopes[1]: "write" is not a scope (allowed: read, credits, keys)`},
		{name: "admin token no scopes", doc: "admin:\n  tokens:\n    - token: ro\n",
			err: "f.yaml:3: admin.tokens[0].scopes: empty (allowed: one or more of read, credits, keys)"},
		{name: "admin token scope twice", doc: "admin: {tokens: [{token: ro, scopes: [read, read]}]}\n",
			err: `admin.tokens[0].scopes[1]: "read" is listed twice`},
		{name: "admin token neither token nor file", doc: "admin:\n  tokens:\n    - scopes: [read]\n",
			err: "f.yaml:3: admin.tokens[0]: no token: set token or token_file"},
		{name: "admin token and file", doc: "admin:\n  tokens:\n    - token: ro\n      token_file: /x\n      scopes: [read]\n",
			err: "f.yaml:4: admin.tokens[0].token_file: set token or token_file, not both"},
		{name: "admin token twice", doc: "admin:\n  token: s3cret-one\n  tokens:\n    - {token: s3cret-one, scopes: [read]}\n",
			err: "f.yaml:4: admin.tokens[0].token: the same token as admin.token (each token must be distinct)"},
		{name: "admin token unknown key", doc: "admin: {tokens: [{token: ro, scope: [read]}]}\n",
			err: "scope"},
		{name: "admin max_connections", doc: "admin:\n  max_connections: 0\n",
			check: func(c *config.Config) bool { return c.Admin.MaxConnections == config.DefaultAdminMaxConnections }},
		{name: "admin max_connections negative", doc: "admin:\n  max_connections: -5\n",
			err: "f.yaml:2: admin.max_connections: -5 is out of range (allowed: 1 to 65536)"},
		{name: "credentials default", doc: "authz: {deny_status: 403}\n",
			check: func(c *config.Config) bool {
				cr := c.Authz.Credentials
				return reflect.DeepEqual(cr.HeaderNames(), []string{"x-api-key"}) && !cr.BearerOn() && cr.QueryParam == "" && cr.HideOn()
			}},
		{name: "credentials headers lower-cased, in order", doc: "authz: {credentials: {headers: [X-Api-Key, api-key], query_param: key}}\n",
			check: func(c *config.Config) bool {
				cr := c.Authz.Credentials
				return reflect.DeepEqual(cr.HeaderNames(), []string{"x-api-key", "api-key"}) && cr.QueryParam == "key"
			}},
		{name: "credentials no headers", doc: "authz: {credentials: {headers: [], bearer: false, hide: false}}\n",
			check: func(c *config.Config) bool {
				cr := c.Authz.Credentials
				return len(cr.HeaderNames()) == 0 && !cr.BearerOn() && !cr.HideOn()
			}},
		{name: "credentials headers null is the default", doc: "authz: {credentials: {headers: ~}}\n",
			check: func(c *config.Config) bool {
				return reflect.DeepEqual(c.Authz.Credentials.HeaderNames(), []string{"x-api-key"})
			}},
		{name: "credentials empty header name", doc: "authz:\n  credentials:\n    headers: [\"\"]\n",
			err: `f.yaml:3: authz.credentials.headers[0]: "" is not a header name`},
		{name: "credentials pseudo-header", doc: "authz: {credentials: {headers: [\":path\"]}}\n",
			err: `authz.credentials.headers[0]: ":path" is not a header name`},
		{name: "credentials query parameter with =", doc: "authz: {credentials: {query_param: \"a=b\"}}\n",
			err: `authz.credentials.query_param: "a=b" is not a query parameter name`},
		{name: "credentials hide not a boolean", doc: "authz: {credentials: {hide: maybe}}\n",
			err: "authz.credentials.hide"},
		{name: "syntax error on line 1", doc: `grpc: "\q"`, err: "f.yaml:1: invalid YAML: found unknown escape character"},
		{name: "tab on line 1", doc: "\t- a", err: "f.yaml:1: invalid YAML:"},
		{name: "YAML version on line 1", doc: "%YAML 2.0\n---\na: 1", err: "f.yaml:1: invalid YAML:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Parse("f.yaml", []byte(tt.doc))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got error %v, want it to contain %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if !tt.check(c) {
				t.Errorf("got %+v, not what the document says", c)
			}
		})
	}
}

// TestPostgresDSNNeverEchoed: a DSN pgx cannot parse is refused with a
// message naming the field, without any part of the password.
func TestPostgresDSNNeverEchoed(t *testing.T) {
	t.Run("admin tokens never echoed", func(t *testing.T) {
		_, err := config.Parse("f.yaml", []byte("admin: {token: s3cret-one, tokens: [{token: s3cret-one, scopes: [nope]}]}\n"))
		if err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error %v: want one that does not quote the token", err)
		}
	})
	tests := []struct {
		name, dsn, reason string
	}{
		{"password with a slash", "postgres://tollgate:s3cr/etpw@db:5432/tollgate", "invalid port"},
		{"bad port after a password", "postgres://tollgate:s3cretpw@db:x5432/tollgate", "invalid port"},
		{"bad sslmode", "postgres://tollgate:s3cretpw@db/tollgate?sslmode=maybe", "failed to configure TLS: sslmode is invalid"},
		{"URL that does not parse", "postgres://tollgate:s3cretpw@db/%zz", "failed to parse as URL"},
		{"key=value bad port", "host=db port=x5432 password=s3cretpw", "invalid port"},
		{"key=value unterminated quote", "host=db password='s3cretpw", "failed to parse as keyword/value"},
		{"password in the query", "postgres://db/tollgate?password=s3cretpw&connect_timeout=x", "invalid connect_timeout"},
		{"bad pool_max_conns", "postgres://tollgate:s3cretpw@db/tollgate?pool_max_conns=many", "cannot parse pool_max_conns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := fmt.Sprintf("postgres:\n  dsn: %q\n", tt.dsn)
			_, err := config.Parse("f.yaml", []byte(doc))
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			want := "f.yaml:2: postgres.dsn: pgx cannot parse it: " + tt.reason + " (the value is not shown"
			if !strings.Contains(msg, want) {
				t.Errorf("got %q, want it to contain %q", msg, want)
			}
			for _, secret := range []string{"s3cr", "etpw"} {
				if strings.Contains(msg, secret) {
					t.Errorf("message %q shows part of the password (%q)", msg, secret)
				}
			}
		})
	}
}

// TestManyFleetErrors: past the cap of errors, the fleets reported are the
// first ones by name, every time (the map was ranged in random order).
func TestManyFleetErrors(t *testing.T) {
	var b strings.Builder
	b.WriteString("xds:\n  fleets:\n")
	for i := range 80 {
		fmt.Fprintf(&b, "    f%02d: \"\"\n", i)
	}
	var first string
	for i := range 10 {
		_, err := config.Parse("f.yaml", []byte(b.String()))
		if err == nil {
			t.Fatal("no error")
		}
		if i == 0 {
			first = err.Error()
			if !strings.Contains(first, `fleet "f49"`) || strings.Contains(first, `fleet "f50"`) {
				t.Fatalf("got errors:\n%s\nwant those of f00 to f49", first)
			}
		} else if err.Error() != first {
			t.Fatalf("the errors differ from one Parse to the next:\n%s\n---\n%s", first, err)
		}
	}
}

// TestRateLimitBoundsAgree: the configuration's defaults are the rate
// limit service's, and no configuration allows more descriptors than one
// request may carry limits.
func TestRateLimitBoundsAgree(t *testing.T) {
	if config.MaxDescriptors != ratelimit.MaxLimits {
		t.Errorf("config.MaxDescriptors %d, ratelimit.MaxLimits %d: want equal", config.MaxDescriptors, ratelimit.MaxLimits)
	}
	got := [3]int{config.DefaultMaxDescriptors, config.DefaultMaxEntries, config.DefaultMaxEntryBytes}
	if want := [3]int{rls.DefaultMaxDescriptors, rls.DefaultMaxEntries, rls.DefaultMaxEntryBytes}; got != want {
		t.Errorf("config defaults %v, rls defaults %v: want equal", got, want)
	}
}
