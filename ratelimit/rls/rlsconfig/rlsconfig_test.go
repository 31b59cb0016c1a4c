package rlsconfig_test

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	rlpb "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	"go.uber.org/goleak"

	"github.com/tollgate-dev/tollgate/ratelimit/rls/rlsconfig"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// readDir returns the YAML files of a testdata directory by base name.
func readDir(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", dir, "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no files in testdata/%s: %v", dir, err)
	}
	files := make(map[string][]byte, len(paths))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(p)] = b
	}
	return files
}

// e builds entries from key, value pairs.
func e(kv ...string) []rlsconfig.Entry {
	entries := make([]rlsconfig.Entry, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		entries = append(entries, rlsconfig.Entry{Key: kv[i], Value: kv[i+1]})
	}
	return entries
}

// view is the exported part of a Rule, for comparisons.
type view struct {
	Name            string
	Unit            string
	RequestsPerUnit uint32
	Unlimited       bool
	ShadowMode      bool
	DetailedMetric  bool
	Replaces        []string
	FullKey         string
}

func viewOf(r *rlsconfig.Rule) *view {
	if r == nil {
		return nil
	}
	return &view{r.Name, r.Unit, r.RequestsPerUnit, r.Unlimited, r.ShadowMode, r.DetailedMetric, r.Replaces, r.FullKey}
}

// named is a rule whose Name is its FullKey.
func named(fullKey, unit string, rpu uint32) *view {
	return &view{Name: fullKey, FullKey: fullKey, Unit: unit, RequestsPerUnit: rpu}
}

type matchCase struct {
	name    string
	entries []rlsconfig.Entry
	want    *view // nil: no rule
}

// matchTests holds, per file of testdata/valid, its domain and the rules
// descriptors get.
var matchTests = []struct {
	file, domain string
	cases        []matchCase
}{
	{"mongo_cps.yaml", "mongo_cps", []matchCase{
		{"exact users", e("database", "users"), named("mongo_cps.database_users", "second", 500)},
		{"exact default", e("database", "default"), named("mongo_cps.database_default", "second", 500)},
		{"other value, no key-only rule", e("database", "orders"), nil},
		{"other key", e("collection", "users"), nil},
		{"no entries", nil, nil},
		{"two entries for a one-level rule", e("database", "users", "op", "read"), nil},
	}},
	{"messaging.yaml", "messaging", []matchCase{
		{"nested key-only under exact", e("message_type", "marketing", "to_number", "2061111111"),
			named("messaging.message_type_marketing.to_number", "day", 5)},
		{"top-level key-only", e("to_number", "2061111111"), named("messaging.to_number", "day", 100)},
		{"placeholder without rate_limit", e("message_type", "marketing"), nil},
		{"no key-only message_type", e("message_type", "transactional", "to_number", "2061111111"), nil},
		{"order matters", e("to_number", "2061111111", "message_type", "marketing"), nil},
	}},
	{"edge_proxy_per_ip.yaml", "edge_proxy_per_ip", []matchCase{
		{"key-only", e("remote_address", "50.0.0.1"), named("edge_proxy_per_ip.remote_address", "second", 10)},
		{"exact beats key-only", e("remote_address", "50.0.0.5"), named("edge_proxy_per_ip.remote_address_50.0.0.5", "second", 0)},
		{"too deep", e("remote_address", "50.0.0.5", "path", "/"), nil},
	}},
	{"example4.yaml", "example4", []matchCase{
		{"two levels", e("key", "value", "subkey", "subvalue"), named("example4.key_value.subkey", "second", 300)},
		{"one entry for a two-level rule", e("key", "value"), nil},
		{"first level differs", e("key", "other", "subkey", "subvalue"), nil},
		{"three entries", e("key", "value", "subkey", "subvalue", "x", "y"), nil},
	}},
	{"internal.yaml", "internal", []matchCase{
		{"unlimited", e("ldap", "anyone"), &view{Name: "internal.ldap", FullKey: "internal.ldap", Unlimited: true}},
		{"limited", e("azure", "x"), named("internal.azure", "minute", 100)},
	}},
	{"example6.yaml", "example6", []matchCase{
		{"shadow_mode", e("service", "auth-service", "user", "user-a"),
			&view{Name: "example6.service.user_user-a", FullKey: "example6.service.user_user-a", Unit: "second", RequestsPerUnit: 10, ShadowMode: true}},
		{"not shadow", e("service", "auth-service", "user", "user-b"), named("example6.service.user_user-b", "second", 20)},
		{"unknown user", e("service", "auth-service", "user", "user-c"), nil},
	}},
	{"example7.yaml", "example7", []matchCase{
		{"named", e("key_1", "value_1", "user", "bkthomps"),
			&view{Name: "specific_limit", FullKey: "example7.key_1_value_1.user_bkthomps", Unit: "second", RequestsPerUnit: 5}},
		{"replaces parsed", e("key_2", "value_2", "user", "bkthomps"),
			&view{Name: "example7.key_2_value_2.user_bkthomps", FullKey: "example7.key_2_value_2.user_bkthomps", Unit: "second", RequestsPerUnit: 10, Replaces: []string{"specific_limit"}}},
	}},
	{"example8.yaml", "example8", []matchCase{
		{"detailed_metric on key-only", e("key1", "unspecified_value"),
			&view{Name: "example8.key1", FullKey: "example8.key1", Unit: "minute", RequestsPerUnit: 10, DetailedMetric: true}},
		{"exact", e("key1", "value1"), named("example8.key1_value1", "minute", 20)},
	}},
	{"example9.yaml", "example9", []matchCase{
		{"wildcard prefix", e("key1", "value_1"), named("example9.key1_value*", "minute", 20)},
		{"wildcard, value equal to the prefix", e("key1", "value"), named("example9.key1_value*", "minute", 20)},
		{"wildcard, shorter value", e("key1", "valu"), nil},
		{"wildcard, other key", e("key2", "value_1"), nil},
	}},
	{"api_gateway.yaml", "api_gateway", []matchCase{
		{"wildcard", e("path", "/api/users"),
			&view{Name: "api_per_minute", FullKey: "api_gateway.path_/api/*", Unit: "minute", RequestsPerUnit: 600}},
		{"longest wildcard prefix wins", e("path", "/api/admin/users"), named("api_gateway.path_/api/admin/*", "second", 2)},
		{"wildcard matches its bare prefix", e("path", "/api/"),
			&view{Name: "api_per_minute", FullKey: "api_gateway.path_/api/*", Unit: "minute", RequestsPerUnit: 600}},
		{"exact beats wildcard and key-only, descriptor-level unlimited", e("path", "/health"),
			&view{Name: "api_gateway.path_/health", FullKey: "api_gateway.path_/health", Unlimited: true}},
		{"key-only after wildcards", e("path", "/api"), named("api_gateway.path", "hour", 1000)},
		{"bare * matches anything", e("method", "GET"), named("api_gateway.method_*", "year", 1)},
		{"bare * matches the empty value", e("method", ""), named("api_gateway.method_*", "year", 1)},
		{"merge key", e("tenant", "acme", "plan", "free"),
			&view{Name: "free_plan", FullKey: "api_gateway.tenant.plan_free", Unit: "minute", RequestsPerUnit: 60}},
		{"third level", e("tenant", "acme", "plan", "free", "user", "u1"), named("api_gateway.tenant.plan_free.user", "month", 10000)},
		{"shadow_mode", e("tenant", "acme", "plan", "trial"),
			&view{Name: "api_gateway.tenant.plan_trial", FullKey: "api_gateway.tenant.plan_trial", Unit: "day", RequestsPerUnit: 100, ShadowMode: true}},
		{"descriptor-level replaces", e("tenant", "acme", "plan", "pro"),
			&view{Name: "api_gateway.tenant.plan_pro", FullKey: "api_gateway.tenant.plan_pro", Unit: "week", RequestsPerUnit: 1000000, Replaces: []string{"free_plan"}}},
		{"unknown plan", e("tenant", "acme", "plan", "enterprise"), nil},
		{"placeholder", e("tenant", "acme"), nil},
		{"share_threshold wildcard", e("region", "eu-west-1"), named("api_gateway.region_eu-*", "second", 50)},
		{"outside the wildcard", e("region", "us-east-1"), nil},
		{"upper-case unit, largest limit, replaces in rate_limit", e("bulk", "yes"),
			&view{Name: "api_gateway.bulk_yes", FullKey: "api_gateway.bulk_yes", Unit: "day", RequestsPerUnit: 4294967295, Replaces: []string{"api_per_minute"}}},
	}},
}

func TestLoadValid(t *testing.T) {
	files := readDir(t, "valid")
	if len(files) != len(matchTests) {
		t.Errorf("testdata/valid has %d files, matchTests covers %d", len(files), len(matchTests))
	}
	all, err := rlsconfig.Load(files)
	if err != nil {
		t.Fatalf("Load(all valid files): %v", err)
	}
	var domains []string
	for _, ft := range matchTests {
		domains = append(domains, ft.domain)
	}
	if got := all.Domains(); len(got) != len(domains) {
		t.Errorf("Domains() = %v, want %d domains", got, len(domains))
	}
	for _, ft := range matchTests {
		t.Run(ft.file, func(t *testing.T) {
			data, ok := files[ft.file]
			if !ok {
				t.Fatalf("testdata/valid/%s is missing", ft.file)
			}
			alone, err := rlsconfig.Load(map[string][]byte{ft.file: data})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if w := alone.Warnings(); len(w) != 0 {
				t.Errorf("Warnings() = %v, want none", w)
			}
			if got := alone.Domains(); !reflect.DeepEqual(got, []string{ft.domain}) {
				t.Errorf("Domains() = %v, want [%s]", got, ft.domain)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	files := readDir(t, "valid")
	all, err := rlsconfig.Load(files)
	if err != nil {
		t.Fatal(err)
	}
	for _, ft := range matchTests {
		alone, err := rlsconfig.Load(map[string][]byte{ft.file: files[ft.file]})
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range ft.cases {
			t.Run(ft.domain+"/"+tc.name, func(t *testing.T) {
				for _, c := range []*rlsconfig.Config{alone, all} {
					got := viewOf(c.Match(ft.domain, tc.entries))
					if !reflect.DeepEqual(got, tc.want) {
						t.Errorf("Match(%q, %v) = %+v, want %+v", ft.domain, tc.entries, got, tc.want)
					}
				}
			})
		}
	}
	t.Run("unknown domain", func(t *testing.T) {
		if got := all.Match("nope", e("database", "users")); got != nil {
			t.Errorf("Match(unknown domain) = %+v, want nil", got)
		}
	})
	t.Run("zero Config", func(t *testing.T) {
		var c rlsconfig.Config
		if got := c.Match("mongo_cps", e("database", "users")); got != nil {
			t.Errorf("Match on zero Config = %+v, want nil", got)
		}
	})
}

func TestScalarValues(t *testing.T) {
	// envoyproxy reads any scalar into key and value as its text; null is
	// no value. Anchors and aliases work as in envoyproxy's YAML decoder.
	const file = `domain: s
descriptors:
  - key: code
    value: 500
    rate_limit: &one {unit: second, requests_per_unit: 1}
  - key: flag
    value: true
    rate_limit: *one
  - key: ratio
    value: 1.50
    rate_limit: *one
  - key: hex
    value: 0x1F
    rate_limit: *one
  - key: nothing
    value: ~
    rate_limit: *one
  - key: 42
    rate_limit: *one
  - key: shared
    descriptors: &nested
      - key: inner
        rate_limit: *one
  - key: shared_too
    descriptors: *nested
  - key: tab
    value: "a\tb"
    rate_limit: {unit: minute, requests_per_unit: 1e3}
`
	c, err := rlsconfig.Load(map[string][]byte{"s.yaml": []byte(file)})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	tests := []struct {
		entries []rlsconfig.Entry
		fullKey string
	}{
		{e("code", "500"), "s.code_500"},
		{e("flag", "true"), "s.flag_true"},
		{e("ratio", "1.50"), "s.ratio_1.50"},
		{e("hex", "0x1F"), "s.hex_0x1F"},
		{e("nothing", "anything"), "s.nothing"},
		{e("42", "x"), "s.42"},
		{e("shared", "a", "inner", "b"), "s.shared.inner"},
		{e("shared_too", "a", "inner", "b"), "s.shared_too.inner"},
		{e("tab", "a\tb"), "s.tab_a\tb"}, // envoyproxy takes any text
	}
	for _, tc := range tests {
		t.Run(tc.fullKey, func(t *testing.T) {
			r := c.Match("s", tc.entries)
			if r == nil || r.FullKey != tc.fullKey {
				t.Errorf("Match(%v) = %+v, want the rule %s", tc.entries, r, tc.fullKey)
			}
		})
	}
	if r := c.Match("s", e("tab", "a\tb")); r == nil || r.RequestsPerUnit != 1000 {
		t.Errorf("requests_per_unit: 1e3 read as %+v, want 1000", r)
	}
}

// wants reads the "# want: ..." lines at the top of a file.
func wants(data []byte) []string {
	var ws []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "#") {
			break
		}
		if w, ok := strings.CutPrefix(line, "# want: "); ok {
			ws = append(ws, w)
		}
	}
	return ws
}

func TestLoadInvalid(t *testing.T) {
	for name, data := range readDir(t, "invalid") {
		t.Run(strings.TrimSuffix(name, ".yaml"), func(t *testing.T) {
			ws := wants(data)
			if len(ws) == 0 {
				t.Fatalf("%s has no '# want:' line", name)
			}
			c, err := rlsconfig.Load(map[string][]byte{name: data})
			if err == nil {
				t.Fatalf("Load succeeded (domains %v), want errors %q", c.Domains(), ws)
			}
			if c != nil {
				t.Errorf("Load returned a Config with its error")
			}
			for _, w := range ws {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error:\n%v\nwant it to contain:\n%s", err, w)
				}
			}
			for _, e := range leaves(err) {
				var fe *rlsconfig.Error
				if !errors.As(e, &fe) || fe.File != name || fe.Line < 1 {
					t.Errorf("error %q (%T) does not carry %s:line", e, e, name)
				}
			}
		})
	}
}

// leaves unwraps errors.Join.
func leaves(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestLoadFiles(t *testing.T) {
	const (
		a    = "domain: x\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n"
		b    = "# another team\ndomain: x\n"
		bad  = "domain: y\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n"
		bad2 = "domain: z\ndescriptors:\n  - value: v\n"
	)
	tests := []struct {
		name  string
		files map[string][]byte
		want  []string // error substrings; none: success
	}{
		{"no files", nil, nil},
		{"two domains", map[string][]byte{"a.yaml": []byte(a), "y.yaml": []byte(strings.Replace(a, "x", "y", 1))}, nil},
		{"same domain in two files", map[string][]byte{"a.yaml": []byte(a), "b.yaml": []byte(b)},
			[]string{`b.yaml:2: domain "x" is already defined in a.yaml:1; each domain must be in one file only`}},
		{"errors of all files", map[string][]byte{"a.yaml": []byte(a), "bad.yaml": []byte(bad), "bad2.yaml": []byte(bad2)},
			[]string{`bad.yaml:4: unit "fortnight"`, `bad2.yaml:3: descriptor has an empty key`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := rlsconfig.Load(tc.files)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load succeeded with domains %v, want errors %q", c.Domains(), tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error:\n%v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

func TestWarnings(t *testing.T) {
	const file = `domain: w
descriptors:
  - key: parent
    shadow_mode: true
    descriptors:
      - key: child
        rate_limit:
          unit: second
          requests_per_unit: 1
          replaces:
            - name: no_such_rule
  - key: empty
    rate_limit:
  - key: free
    rate_limit:
      unlimited: true
      requests_per_unit: 5
`
	c, err := rlsconfig.Load(map[string][]byte{"w.yaml": []byte(file)})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := []string{
		"w.yaml:4: shadow_mode has no effect without a rate_limit",
		"w.yaml:11: replaces \"no_such_rule\" names no rule of domain \"w\"",
		"w.yaml:13: rate_limit is empty, so the descriptor has no limit",
		"w.yaml:17: requests_per_unit is ignored when unlimited is true",
	}
	got := c.Warnings()
	var text []string
	for _, w := range got {
		text = append(text, w.Error())
	}
	joined := strings.Join(text, "\n")
	if len(got) != len(want) {
		t.Errorf("got %d warnings, want %d:\n%s", len(got), len(want), joined)
	}
	for _, w := range want {
		if !strings.Contains(joined, w) {
			t.Errorf("warnings:\n%s\nwant one containing %q", joined, w)
		}
	}
	if r := c.Match("w", e("empty", "x")); r != nil {
		t.Errorf("empty rate_limit matched %+v, want nil", r)
	}
	if r := c.Match("w", e("free", "x")); r == nil || !r.Unlimited {
		t.Errorf("unlimited with requests_per_unit matched %+v, want an unlimited rule", r)
	}
}

func TestMatchEntriesProto(t *testing.T) {
	c, err := rlsconfig.Load(readDir(t, "valid"))
	if err != nil {
		t.Fatal(err)
	}
	for _, ft := range matchTests {
		for _, tc := range ft.cases {
			pe := make([]*rlpb.RateLimitDescriptor_Entry, len(tc.entries))
			for i, en := range tc.entries {
				pe[i] = &rlpb.RateLimitDescriptor_Entry{Key: en.Key, Value: en.Value}
			}
			if got, want := rlsconfig.MatchEntries(c, ft.domain, pe), c.Match(ft.domain, tc.entries); got != want {
				t.Errorf("%s/%s: MatchEntries = %+v, Match = %+v", ft.domain, tc.name, got, want)
			}
		}
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	c, err := rlsconfig.Load(readDir(t, "valid"))
	if err != nil {
		t.Fatal(err)
	}
	proto := []*rlpb.RateLimitDescriptor_Entry{{Key: "message_type", Value: "marketing"}, {Key: "to_number", Value: "2061111111"}}
	buf := make([]byte, 0, 256)
	tests := []struct {
		name string
		f    func()
	}{
		{"exact then key-only", func() { c.Match("messaging", e2) }},
		{"wildcard", func() { c.Match("api_gateway", eWild) }},
		{"miss", func() { c.Match("api_gateway", eMiss) }},
		{"unknown domain", func() { c.Match("nope", e2) }},
		{"proto entries", func() { rlsconfig.MatchEntries(c, "messaging", proto) }},
		{"counter key", func() {
			r := c.Match("messaging", e2)
			buf = rlsconfig.AppendCounterKey(buf[:0], r, e2)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, tc.f); n != 0 {
				t.Errorf("%v allocations per call, want 0", n)
			}
		})
	}
}

var (
	e2    = e("message_type", "marketing", "to_number", "2061111111")
	eWild = e("path", "/api/admin/users")
	eMiss = e("tenant", "acme", "plan", "enterprise")
)

func TestAppendCounterKey(t *testing.T) {
	c, err := rlsconfig.Load(readDir(t, "valid"))
	if err != nil {
		t.Fatal(err)
	}
	key := func(domain string, entries []rlsconfig.Entry) string {
		r := c.Match(domain, entries)
		if r == nil {
			t.Fatalf("no rule for %s %v", domain, entries)
		}
		return string(rlsconfig.AppendCounterKey(nil, r, entries))
	}
	tests := []struct {
		name   string
		domain string
		a, b   []rlsconfig.Entry
		same   bool
	}{
		{"key-only counts each value apart", "messaging", e("to_number", "1"), e("to_number", "2"), false},
		{"wildcard counts each value apart", "api_gateway", e("path", "/api/a"), e("path", "/api/b"), false},
		{"share_threshold wildcard shares one counter", "api_gateway", e("region", "eu-west-1"), e("region", "eu-central-1"), true},
		{"same descriptor, same counter", "messaging", e2, e2, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ka, kb := key(tc.domain, tc.a), key(tc.domain, tc.b)
			if (ka == kb) != tc.same {
				t.Errorf("keys %q and %q: same = %v, want %v", ka, kb, ka == kb, tc.same)
			}
		})
	}
	t.Run("format", func(t *testing.T) {
		if got, want := key("messaging", e("to_number", "206")), "9:messaging9:to_number3:206"; got != want {
			t.Errorf("key = %q, want %q", got, want)
		}
		if got, want := key("api_gateway", e("region", "eu-west-1")), "11:api_gateway6:region4:eu-*"; got != want {
			t.Errorf("key = %q, want %q", got, want)
		}
	})
	t.Run("separators in values do not collide", func(t *testing.T) {
		r := c.Match("messaging", e2)
		k1 := rlsconfig.AppendCounterKey(nil, r, e("a_b", "c"))
		k2 := rlsconfig.AppendCounterKey(nil, r, e("a", "b_c"))
		if bytes.Equal(k1, k2) {
			t.Errorf("(a_b, c) and (a, b_c) share the key %q", k1)
		}
	})
}

func TestApplyReplaces(t *testing.T) {
	specific := &rlsconfig.Rule{Name: "specific_limit"}
	replacer := &rlsconfig.Rule{Name: "r", Replaces: []string{"specific_limit"}}
	a := &rlsconfig.Rule{Name: "a", Replaces: []string{"b"}}
	b := &rlsconfig.Rule{Name: "b", Replaces: []string{"c"}}
	c := &rlsconfig.Rule{Name: "c"}
	free := &rlsconfig.Rule{Name: "free", Unlimited: true, Replaces: []string{"c"}}
	tests := []struct {
		name  string
		rules []*rlsconfig.Rule
		want  []*rlsconfig.Rule
	}{
		{"example 7", []*rlsconfig.Rule{specific, replacer}, []*rlsconfig.Rule{nil, replacer}},
		{"order does not matter", []*rlsconfig.Rule{replacer, nil, specific}, []*rlsconfig.Rule{replacer, nil, nil}},
		{"a replaced rule still replaces", []*rlsconfig.Rule{a, b, c}, []*rlsconfig.Rule{a, nil, nil}},
		{"an unlimited rule replaces", []*rlsconfig.Rule{c, free}, []*rlsconfig.Rule{nil, free}},
		{"nothing to replace", []*rlsconfig.Rule{specific, c}, []*rlsconfig.Rule{specific, c}},
		{"empty", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := append([]*rlsconfig.Rule(nil), tc.rules...)
			rlsconfig.ApplyReplaces(got)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ApplyReplaces(%v) = %v, want %v", names(tc.rules), names(got), names(tc.want))
			}
		})
	}
}

func names(rs []*rlsconfig.Rule) []string {
	var ns []string
	for _, r := range rs {
		if r == nil {
			ns = append(ns, "<nil>")
		} else {
			ns = append(ns, r.Name)
		}
	}
	return ns
}

func TestWindow(t *testing.T) {
	tests := []struct {
		unit   string
		window time.Duration
	}{
		{"second", time.Second},
		{"minute", time.Minute},
		{"hour", time.Hour},
		{"day", 24 * time.Hour},
		{"week", 7 * 24 * time.Hour},
		{"month", 0},
		{"year", 0},
		{"fortnight", 0},
		{"", 0},
	}
	for _, tc := range tests {
		t.Run(tc.unit, func(t *testing.T) {
			if got := rlsconfig.Window(tc.unit); got != tc.window {
				t.Errorf("Window(%q) = %v, want %v", tc.unit, got, tc.window)
			}
		})
	}
}

func FuzzLoad(f *testing.F) {
	for _, dir := range []string{"valid", "invalid"} {
		for _, data := range readDir(f, dir) {
			f.Add(data)
		}
	}
	f.Add([]byte("a: &a [*a]\ndomain: d\ndescriptors: &d\n  - key: k\n    descriptors: *d\n"))
	f.Add([]byte("domain: d\ndescriptors:\n  - &x {key: k, <<: *x}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := rlsconfig.Load(map[string][]byte{"fuzz.yaml": data})
		if err != nil {
			if c != nil {
				t.Fatal("Load returned a Config with its error")
			}
			for _, e := range leaves(err) {
				var fe *rlsconfig.Error
				if !errors.As(e, &fe) || fe.File != "fuzz.yaml" || fe.Line < 1 {
					t.Fatalf("error %q (%T) does not name its file and a line", e, e)
				}
			}
			return
		}
		for _, d := range c.Domains() {
			for _, entries := range [][]rlsconfig.Entry{e("key", "value"), e("k", "v", "k", "v"), e("database", "users")} {
				if r := c.Match(d, entries); r != nil {
					if r.Name == "" || r.FullKey == "" {
						t.Fatalf("rule without name: %+v", r)
					}
					rlsconfig.AppendCounterKey(nil, r, entries)
				}
			}
		}
	})
}

func BenchmarkMatch(b *testing.B) {
	c, err := rlsconfig.Load(readDir(b, "valid"))
	if err != nil {
		b.Fatal(err)
	}
	proto := []*rlpb.RateLimitDescriptor_Entry{{Key: "message_type", Value: "marketing"}, {Key: "to_number", Value: "2061111111"}}
	bench := func(name string, f func() *rlsconfig.Rule) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if f() == nil {
					b.Fatal("no rule")
				}
			}
		})
	}
	bench("2_levels", func() *rlsconfig.Rule { return c.Match("messaging", e2) })
	bench("2_levels_proto_entries", func() *rlsconfig.Rule { return rlsconfig.MatchEntries(c, "messaging", proto) })
	bench("wildcard", func() *rlsconfig.Rule { return c.Match("api_gateway", eWild) })
	e3 := e("tenant", "acme", "plan", "free", "user", "u1")
	bench("3_levels", func() *rlsconfig.Rule { return c.Match("api_gateway", e3) })
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if c.Match("api_gateway", eMiss) != nil {
				b.Fatal("unexpected rule")
			}
		}
	})
	b.Run("2_levels_with_counter_key", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 128)
		for b.Loop() {
			r := c.Match("messaging", e2)
			buf = rlsconfig.AppendCounterKey(buf[:0], r, e2)
		}
	})
}
