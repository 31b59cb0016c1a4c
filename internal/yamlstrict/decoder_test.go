package yamlstrict_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"

	"github.com/tollgate-dev/tollgate/internal/yamlstrict"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// server is what the test schema reads.
type server struct {
	Name    string
	Port    uint32
	On      bool
	Timeout time.Duration
	Tags    []string
	Labels  map[string]string
	Mode    string
	Sub     []string // keys of sub, in the order Mapping gave them
}

var (
	serverKeys = yamlstrict.NewKeys("name", "port", "on", "timeout", "tags", "labels", "mode", "sub", yamlstrict.ExtensionKeys)
	subKeys    = yamlstrict.NewKeys("a", "b", "c")
)

// readServer reads data with the test schema.
func readServer(data string) (server, error) {
	d := yamlstrict.NewDecoder("s.yaml")
	d.Home = map[string]string{"listeners": "at the top of another file"}
	var s server
	root := d.Document([]byte(data), serverKeys.Allowed(), false)
	if root == nil {
		return s, d.Err()
	}
	d.Mapping(root, "the file", serverKeys, func(key string, _, v *yaml.Node) {
		switch key {
		case "name":
			s.Name, _ = d.NonEmpty(v, key)
		case "port":
			s.Port, _ = d.Uint32(v, key, 1, 65535)
		case "on":
			s.On, _ = d.Bool(v, key)
		case "timeout":
			s.Timeout, _ = d.Duration(v, key, "")
		case "tags":
			d.Strings(v, key, "a list of tags", func(_ *yaml.Node, t string) { s.Tags = append(s.Tags, t) })
		case "labels":
			d.StringMap(v, key, "a mapping of labels", func(_ *yaml.Node, k, val string) {
				if s.Labels == nil {
					s.Labels = map[string]string{}
				}
				s.Labels[k] = val
			})
		case "mode":
			s.Mode, _ = d.Enum(v, key, []string{"fast", "safe"})
		case "sub":
			d.Mapping(v, key, subKeys, func(key string, _, _ *yaml.Node) { s.Sub = append(s.Sub, key) })
		}
	})
	return s, d.Err()
}

// aliasBomb is a billion laughs: each level merges ten of the one below.
func aliasBomb() string {
	var b strings.Builder
	b.WriteString("x-0: &l0 {a: 1}\n")
	for i := 1; i <= 8; i++ {
		fmt.Fprintf(&b, "x-%d: &l%d {<<: [", i, i)
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*l%d", i-1)
		}
		b.WriteString("]}\n")
	}
	b.WriteString("sub: *l8\n")
	return b.String()
}

// emptyBomb merges empty mappings, ten times more at each level.
func emptyBomb() string {
	return strings.Replace(aliasBomb(), "{a: 1}", "{}", 1)
}

// lateKeyBomb merges a mapping with key a 100,000 times, then one with key
// b as many times, within the budget: the keys already set must not be
// searched at each merge, or it takes minutes.
func lateKeyBomb() string {
	var b strings.Builder
	for _, key := range []string{"a", "b"} {
		fmt.Fprintf(&b, "x-%s0: &%s0 {%s: 1}\n", key, key, key)
		for i := 1; i <= 5; i++ {
			fmt.Fprintf(&b, "x-%s%d: &%s%d {<<: [", key, i, key, i)
			for j := range 10 {
				if j > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "*%s%d", key, i-1)
			}
			b.WriteString("]}\n")
		}
	}
	b.WriteString("sub: {<<: [*a5, *b5]}\n")
	return b.String()
}

// deepMerge nests merge keys deeper than the decoder follows.
func deepMerge() string {
	var b strings.Builder
	b.WriteString("x-0: &m0 {a: 1}\n")
	for i := 1; i <= 10; i++ {
		fmt.Fprintf(&b, "x-%d: &m%d {<<: *m%d}\n", i, i, i-1)
	}
	b.WriteString("sub: *m10\n")
	return b.String()
}

func TestDecoder(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want server
		errs []string // each must be in the error, in this order
	}{
		{name: "valid", doc: "name: api\nport: 8080\non: true\ntimeout: 2s\ntags: [a, b]\nlabels: {k: v}\nmode: safe\n",
			want: server{Name: "api", Port: 8080, On: true, Timeout: 2 * time.Second, Tags: []string{"a", "b"}, Labels: map[string]string{"k": "v"}, Mode: "safe"}},
		{name: "unknown key with hint", doc: "nmae: api\n",
			errs: []string{`s.yaml:1: unknown key "nmae" (allowed: name, port, on, timeout, tags, labels, mode, sub, x-... (ignored, a place for YAML anchors)); did you mean "name"?`}},
		{name: "misplaced key", doc: "listeners: []\n",
			errs: []string{`s.yaml:1: unknown key "listeners" (allowed: `, `; "listeners" belongs at the top of another file`}},
		{name: "extension keys ignored", doc: "x-anchors: {whatever: [1]}\nname: a\n", want: server{Name: "a"}},
		{name: "duplicate key", doc: "name: a\nport: 1\nname: b\n", want: server{Name: "a", Port: 1},
			errs: []string{`s.yaml:3: key "name" is repeated (first at line 1); each key may appear once`}},
		{name: "merge key, explicit keys win", doc: "x-base: &b {a: 1, b: 2}\nsub: {<<: *b, b: 3, c: 4}\n", want: server{Sub: []string{"b", "c", "a"}}},
		{name: "merge list, first source wins", doc: "x-1: &one {a: 1}\nx-2: &two {a: 2, b: 2}\nsub: {<<: [*one, *two]}\n", want: server{Sub: []string{"a", "b"}}},
		{name: "merge of a scalar", doc: "sub: {<<: 3}\n",
			errs: []string{`s.yaml:1: a merge key (<<) takes the scalar "3" (allowed: a mapping or a list of mappings)`}},
		{name: "merge unknown key", doc: "x-b: &b {d: 1}\nsub: {<<: *b}\n",
			errs: []string{`s.yaml:1: unknown key "d" (allowed: a, b, c)`}},
		{name: "merges nested too deep", doc: deepMerge(),
			errs: []string{"merge keys (<<) nest more than 8 deep"}},
		{name: "alias budget", doc: aliasBomb(),
			errs: []string{"the file expands to more than 1048576 keys and items (aliases and merge keys expanded)"}},
		{name: "alias budget, empty mappings", doc: emptyBomb(),
			errs: []string{"the file expands to more than 1048576 keys and items (aliases and merge keys expanded)"}},
		{name: "many merges, late key", doc: lateKeyBomb(), want: server{Sub: []string{"a", "b"}}},
		{name: "wrong kinds", doc: "name: [1]\nport: x\non: maybe\ntimeout: 5\ntags: {a: 1}\nlabels: [a]\nsub: 3\n",
			errs: []string{
				`s.yaml:1: name is a list (allowed: a string)`,
				`s.yaml:2: port is the scalar "x" (allowed: a whole number from 1 to 65535)`,
				`s.yaml:3: on is the scalar "maybe" (allowed: true, false)`,
				`s.yaml:4: timeout "5" is not a duration (allowed: a duration above 0 such as 200ms, 15s or 1m)`,
				`s.yaml:5: tags is a mapping (allowed: a list of tags)`,
				`s.yaml:6: labels is a list (allowed: a mapping of labels)`,
				`s.yaml:7: sub is the scalar "3" (allowed: a mapping with a, b, c)`,
			}},
		{name: "out of range", doc: "port: 70000\ntimeout: -1s\n",
			errs: []string{`s.yaml:1: port 70000 is out of range (allowed: a whole number from 1 to 65535)`, `s.yaml:2: timeout "-1s" is negative (allowed: a duration above 0`}},
		{name: "float that is a whole number", doc: "port: 1e3\n", want: server{Port: 1000, Name: "-"}},
		{name: "float 1.0", doc: "port: 8080.0\n", want: server{Port: 8080, Name: "-"}},
		{name: "float not a whole number", doc: "port: 1.5\n",
			errs: []string{`s.yaml:1: port 1.5 is not a whole number (allowed: a whole number from 1 to 65535)`}},
		{name: "tagged int not a number", doc: "port: !!int abc\n",
			errs: []string{`s.yaml:1: port abc is not a whole number (allowed: a whole number from 1 to 65535)`}},
		{name: "float out of range", doc: "port: 1e300\n",
			errs: []string{`s.yaml:1: port 1e300 is out of range (allowed: a whole number from 1 to 65535)`}},
		{name: "tab and line break are text", doc: "name: \"a\\tb\"\ntags:\n  - |\n    s3cret\n", want: server{Name: "a\tb", Tags: []string{"s3cret\n"}}},
		{name: "YAML 1.1 booleans refused by default", doc: "on: yes\n", errs: []string{`on is the scalar "yes" (allowed: true, false)`}},
		{name: "empty and enum", doc: "name: ''\nmode: fsat\n",
			errs: []string{`s.yaml:1: name is empty (allowed: a non-empty string)`, `s.yaml:2: mode "fsat" is not allowed (allowed: fast, safe); did you mean "fast"?`}},
		{name: "control character", doc: "name: \"a\\x01b\"\n",
			errs: []string{`s.yaml:1: name "a\x01b" contains a control character other than tab and line break, or invalid UTF-8 (allowed: text)`}},
		{name: "string map", doc: "labels: {a: 1, a: 2, '': 3, b: [1], <<: {c: 1}}\n", want: server{Labels: map[string]string{"a": "1", "c": "1"}},
			errs: []string{`labels: key "a" is repeated (first at line 1)`, `labels has an empty key`, `labels "b" is a list (allowed: a mapping of labels)`}},
		{name: "string map merge keys, explicit keys win", doc: "x-l: &l {a: 1, b: 2}\nlabels: {<<: *l, b: 3}\n", want: server{Labels: map[string]string{"a": "1", "b": "3"}}},
		{name: "string map merge of a list", doc: "labels: {<<: [{a: 1}, {a: 2, c: 3}]}\n", want: server{Labels: map[string]string{"a": "1", "c": "3"}}},
		{name: "string map merge of a scalar", doc: "labels: {<<: 3}\n",
			errs: []string{`s.yaml:1: a merge key (<<) takes the scalar "3" (allowed: a mapping or a list of mappings)`}},
		{name: "list item not a string", doc: "tags:\n  - a\n  - {b: 1}\n", want: server{Tags: []string{"a"}},
			errs: []string{`s.yaml:3: an item of tags is a mapping (allowed: a list of tags)`}},
		{name: "empty file", doc: "# nothing\n", errs: []string{`s.yaml:1: the file is empty (allowed: a mapping with name, `}},
		{name: "not a mapping", doc: "- a\n", errs: []string{`s.yaml:1: the file is a list (allowed: a mapping with name, `}},
		{name: "two documents", doc: "name: a\n---\nname: b\n", errs: []string{`s.yaml:2: a second YAML document starts here (allowed: one document per file)`}},
		{name: "trailing empty document", doc: "name: a\n---\n", want: server{Name: "a"}},
		{name: "trailing null documents", doc: "name: a\n---\n~\n...\n---\n", want: server{Name: "a"}},
		{name: "second document after an empty one", doc: "name: a\n---\n---\nname: b\n", errs: []string{`s.yaml:3: a second YAML document starts here`}},
		{name: "syntax error on line 1, escape", doc: `name: "\q"`, errs: []string{`s.yaml:1: invalid YAML: found unknown escape character`}},
		{name: "syntax error on line 1, tab", doc: "\t- a", errs: []string{`s.yaml:1: invalid YAML: found character that cannot start any token`}},
		{name: "syntax error on line 1, version", doc: "%YAML 2.0\n---\nname: a", errs: []string{`s.yaml:1: invalid YAML: found incompatible YAML document`}},
		{name: "syntax error", doc: "name: a\nport: [1,\n", errs: []string{`s.yaml:2: invalid YAML: `}},
		{name: "unknown anchor", doc: "name: a\nport: *nope\n", errs: []string{`s.yaml:2: invalid YAML: unknown anchor 'nope' referenced`}},
		{name: "key not a scalar", doc: "[a]: 1\n", errs: []string{`s.yaml:1: a key is a list (allowed: name, `}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readServer(tt.doc)
			if len(tt.errs) == 0 {
				if err != nil {
					t.Fatalf("got error %v, want none", err)
				}
			} else {
				if err == nil {
					t.Fatalf("got no error, want %q", tt.errs)
				}
				msg := err.Error()
				for _, w := range tt.errs {
					i := strings.Index(msg, w)
					if i < 0 {
						t.Fatalf("got error:\n%v\nwant it to contain (in order):\n%s", err, w)
					}
					msg = msg[i+len(w):]
				}
			}
			if tt.want.Name == "-" { // only the port is checked
				tt.want.Name = got.Name
			}
			if tt.want.Name != "" || tt.want.Sub != nil || tt.want.Tags != nil || tt.want.Labels != nil {
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("got %+v, want %+v", got, tt.want)
				}
			}
		})
	}
}

func TestYAML11Bools(t *testing.T) {
	for _, tt := range []struct {
		doc  string
		want bool
	}{{"yes", true}, {"off", false}, {"true", true}, {"False", false}} {
		d := yamlstrict.NewDecoder("b.yaml")
		d.YAML11Bools = true
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(tt.doc), &n); err != nil {
			t.Fatal(err)
		}
		if got, ok := d.Bool(n.Content[0], "b"); !ok || got != tt.want {
			t.Errorf("Bool(%s) = %v, %v; want %v, true (errors: %v)", tt.doc, got, ok, tt.want, d.Err())
		}
	}
}

// maxErrors is the decoder's cap on errors per file.
const maxErrors = 50

func TestMaxErrors(t *testing.T) {
	var b strings.Builder
	for i := range 80 {
		fmt.Fprintf(&b, "k%d: 1\n", i)
	}
	_, err := readServer(b.String())
	var es yamlstrict.Errors
	if !errors.As(err, &es) {
		t.Fatalf("error %v is %T, want Errors", err, err)
	}
	if len(es) != maxErrors+1 || !strings.Contains(es[len(es)-1].Message, "more than 50 errors; stopping") {
		t.Errorf("got %d errors, the last %q; want %d, the last saying it stopped", len(es), es[len(es)-1], maxErrors+1)
	}
}

func TestErrorsSortAndJSON(t *testing.T) {
	es := yamlstrict.Errors{
		{File: "b.yaml", Line: 1, Column: 1, Message: "x"},
		{File: "a.yaml", Line: 9, Column: 3, Message: "y"},
		{File: "a.yaml", Line: 2, Column: 5, Message: "z"},
		{File: "a.yaml", Line: 2, Column: 1, Message: "w"},
		{File: "a.yaml", Line: 9, Column: 3, Message: "y"}, // repeated: dropped
	}
	err := es.Err()
	want := "a.yaml:2: w\na.yaml:2: z\na.yaml:9: y\nb.yaml:1: x"
	if err.Error() != want {
		t.Errorf("Error() = %q, want %q", err, want)
	}
	var target *yamlstrict.Error
	if !errors.As(err, &target) || target.Message != "w" {
		t.Errorf("errors.As found %v, want the first error", target)
	}
	b, jerr := json.Marshal(err)
	if jerr != nil {
		t.Fatal(jerr)
	}
	wantJSON := `[{"file":"a.yaml","line":2,"column":1,"message":"w"},{"file":"a.yaml","line":2,"column":5,"message":"z"},` +
		`{"file":"a.yaml","line":9,"column":3,"message":"y"},{"file":"b.yaml","line":1,"column":1,"message":"x"}]`
	if string(b) != wantJSON {
		t.Errorf("JSON = %s, want %s", b, wantJSON)
	}
	if (yamlstrict.Errors{}).Err() != nil {
		t.Error("empty Errors.Err() is not nil")
	}
	if got := (&yamlstrict.Error{File: "f.yaml", Message: "m"}).Error(); got != "f.yaml: m" {
		t.Errorf("an error without a line reads %q", got)
	}
}

type tlsSettings struct {
	Enabled bool   `yaml:"enabled"`
	CAFile  string `yaml:"ca_file"`
}

type settings struct {
	Address string              `yaml:"address"`
	Watch   *bool               `yaml:"watch"`
	Paths   []string            `yaml:"paths"`
	Fleets  map[string]string   `yaml:"fleets"`
	Size    int                 `yaml:"size"`
	Wait    duration            `yaml:"wait"`
	TLS     tlsSettings         `yaml:"tls"`
	Grace   yamlstrict.Duration `yaml:"grace"`
	skipped string              //nolint:unused // unexported: never decoded
}

type duration time.Duration

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("%q is not a duration", n.Value)
	}
	*d = duration(v)
	return nil
}

func TestDecode(t *testing.T) {
	const doc = `address: ":80"
watch: false
paths: []
fleets: {edge: e.yaml}
size: 3
wait: 2s
tls:
  enabled: true
grace: 1m
`
	d := yamlstrict.NewDecoder("c.yaml")
	var s settings
	pos := d.DecodeDocument([]byte(doc), &s)
	if err := d.Err(); err != nil {
		t.Fatal(err)
	}
	f := false
	want := settings{Address: ":80", Watch: &f, Fleets: map[string]string{"edge": "e.yaml"}, Size: 3, Wait: duration(2 * time.Second), TLS: tlsSettings{Enabled: true}, Grace: yamlstrict.Duration(time.Minute)}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("got %+v, want %+v", s, want)
	}
	for _, tt := range []struct {
		path string
		line int
	}{{"address", 1}, {"fleets.edge", 4}, {"tls.enabled", 8}, {"tls.ca_file", 8}, {"nothing.here", 0}} {
		n := pos.Of(tt.path)
		if line := 0; n != nil && n.Line != tt.line || n == nil && tt.line != 0 {
			if n != nil {
				line = n.Line
			}
			t.Errorf("Of(%q) is at line %d, want %d", tt.path, line, tt.line)
		}
	}

	d = yamlstrict.NewDecoder("c.yaml")
	d.DecodeDocument([]byte("adress: x\nsize: big\nwait: soon\ntls: {enabld: true}\npaths: [[1]]\ngrace: -1s\n"), &s)
	err := d.Err()
	for _, w := range []string{
		`c.yaml:1: unknown key "adress" in the top level (allowed: address, watch, paths, fleets, size, wait, tls, grace); did you mean "address"?`,
		`c.yaml:2: size is the scalar "big" (allowed: a whole number)`,
		`c.yaml:3: wait: "soon" is not a duration`,
		`c.yaml:4: unknown key "enabld" in tls (allowed: enabled, ca_file); did you mean "enabled"?`,
		`c.yaml:5: paths[0] is a list (allowed: a string)`,
		`c.yaml:6: grace "-1s" is negative (allowed: a duration such as 200ms, 15s or 1m, or 0s for the default)`,
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("got error:\n%v\nwant it to contain:\n%s", err, w)
		}
	}
}

func TestHint(t *testing.T) {
	for _, tt := range []struct {
		word string
		want string
	}{{"clustr", `; did you mean "cluster"?`}, {"adress", `; did you mean "address"?`}, {"zzzzzz", ""}, {strings.Repeat("a", 100), ""}} {
		if got := yamlstrict.Hint(tt.word, []string{"cluster", "address"}); got != tt.want {
			t.Errorf("Hint(%q) = %q, want %q", tt.word, got, tt.want)
		}
	}
}

// FuzzDecoder reads arbitrary documents with the test schema and with
// Decode: never a panic, every error names the file and a line, and no
// more errors than the cap.
func FuzzDecoder(f *testing.F) {
	for _, s := range []string{"name: a\nport: 1\n", "sub: {<<: [*x]}\n", "x-a: &a {a: 1}\nsub: {<<: *a}\n",
		"labels: {a: 1, a: 2}\n", "tags: [a, *b]\n", "address: x\nfleets: {a: b}\ntls: {enabled: yes}\n", "---\n...\n",
		"name: a\n---\n", `name: "\q"`, "port: 1.5\n", "labels: {<<: {a: 1}, b: 2}\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := readServer(string(data))
		check := func(err error) {
			if err == nil {
				return
			}
			var es yamlstrict.Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %v is %T, want Errors", err, err)
			}
			if len(es) > maxErrors+1 {
				t.Fatalf("%d errors, more than the cap", len(es))
			}
			for _, e := range es {
				if e.File == "" || e.Message == "" || e.Line < 1 {
					t.Fatalf("error without file, line or message: %+v", e)
				}
			}
		}
		check(err)
		d := yamlstrict.NewDecoder("d.yaml")
		var s settings
		d.DecodeDocument(data, &s)
		check(d.Err())
	})
}

func TestPrintable(t *testing.T) {
	for _, tt := range []struct {
		name      string
		doc       string
		printable bool
		want      string // the error, or "" for none
	}{
		{name: "tab is text", doc: `"a\tb"`},
		{name: "line break is text", doc: "|\n  s3cret\n"},
		{name: "other control character", doc: `"a\x01b"`, want: `p.yaml:1: v "a\x01b" contains a control character other than tab and line break`},
		{name: "tab refused when printable", doc: `"a\tb"`, printable: true, want: `p.yaml:1: v "a\tb" contains a control character or invalid UTF-8 (allowed: printable text)`},
		{name: "line break refused when printable", doc: "|\n  s3cret\n", printable: true, want: `v "s3cret\n" contains a control character`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := yamlstrict.NewDecoder("p.yaml")
			d.Printable = tt.printable
			var n yaml.Node
			if err := yaml.Unmarshal([]byte(tt.doc), &n); err != nil {
				t.Fatal(err)
			}
			d.String(n.Content[0], "v")
			err := d.Err()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("got error %v, want none", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("got error %v, want %q", err, tt.want)
			}
		})
	}
}

// TestErrThenErrors: Err sorts the decoder's errors in place, so a later
// Errors still reads them (Err used to sort a copy that shared the array:
// the compaction left a nil in the decoder's list).
func TestErrThenErrors(t *testing.T) {
	d := yamlstrict.NewDecoder("e.yaml")
	d.ErrorAt(2, 1, "b")
	d.ErrorAt(1, 1, "same")
	d.ErrorAt(1, 1, "same")
	if err := d.Err(); err == nil || err.Error() != "e.yaml:1: same\ne.yaml:2: b" {
		t.Fatalf("Err() = %v, want the two distinct errors", err)
	}
	es := d.Errors()
	if len(es) != 2 || es[0] == nil || es[1] == nil || es[0].Message != "same" || es[1].Message != "b" {
		t.Fatalf("Errors() after Err() = %v, want [same b]", es)
	}
	if n := d.NumErrors(); n != 3 {
		t.Errorf("NumErrors() = %d, want 3 (each failed check counts)", n)
	}
	raw := yamlstrict.Errors{{File: "a", Line: 2}, {File: "a", Line: 1}, {File: "a", Line: 1}}
	_ = raw.Err()
	for i, e := range raw {
		if e == nil {
			t.Fatalf("Errors.Err() changed its receiver: item %d is nil", i)
		}
	}
}

// TestMaxErrorsDistinct: an error repeated (an alias expanded many times)
// is one error, and does not use up the cap.
func TestMaxErrorsDistinct(t *testing.T) {
	d := yamlstrict.NewDecoder("m.yaml")
	for range 100 {
		d.ErrorAt(1, 1, "repeated")
	}
	for i := range 10 {
		d.ErrorAt(i+2, 1, "distinct")
	}
	if es := d.Errors(); len(es) != 11 || d.Stopped() {
		t.Errorf("got %d errors (stopped: %v), want 11: %v", len(es), d.Stopped(), es)
	}
	// Through a file: an anchor with an unknown key merged 60 times.
	var b strings.Builder
	b.WriteString("x-a: &a {bad: 1}\nsub:\n  <<: [")
	for i := range 60 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("*a")
	}
	b.WriteString("]\nport: 0\n")
	_, err := readServer(b.String())
	var es yamlstrict.Errors
	if !errors.As(err, &es) || len(es) != 2 {
		t.Errorf("got %v, want 2 errors (the unknown key once, the port)", err)
	}
}

// unknownKeys is a file of n unknown keys of 64 characters, each one a
// "did you mean" candidate if hints were computed.
func unknownKeys(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, "%064d: 1\n", i)
	}
	return b.Bytes()
}

// TestUnknownKeysBounded: past the cap of errors, unknown keys cost
// nothing but the parse: no hint, no message arguments (four allocations a
// key, and a hint's edit distances, took 1.2 s for 150,000 keys of 64
// characters, 0.45 s without). A 1 MB file of them is read in under 200 ms
// (timed without the race detector only).
func TestUnknownKeysBounded(t *testing.T) {
	const keys = 15_000
	data := unknownKeys(keys)
	var d *yamlstrict.Decoder
	start := time.Now()
	allocs := testing.AllocsPerRun(1, func() {
		d = yamlstrict.NewDecoder("u.yaml")
		var s settings
		d.DecodeDocument(data, &s)
	})
	took := time.Since(start) / 2 // AllocsPerRun runs it twice
	if !d.Stopped() || len(d.Errors()) != maxErrors+1 {
		t.Fatalf("got %d errors, want the cap", len(d.Errors()))
	}
	parse := testing.AllocsPerRun(1, func() {
		var n yaml.Node
		_ = yaml.Unmarshal(data, &n)
	})
	if extra := allocs - parse; extra > keys/10 {
		t.Errorf("decoding %d unknown keys allocated %.0f times more than parsing them, want under %d", keys, extra, keys/10)
	}
	if limit := 200 * time.Millisecond; !raceEnabled && took > limit {
		t.Errorf("reading %d unknown keys took %v, want under %v", keys, took, limit)
	}
}

func BenchmarkUnknownKeys(b *testing.B) {
	data := unknownKeys(150_000)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		d := yamlstrict.NewDecoder("u.yaml")
		var s settings
		d.DecodeDocument(data, &s)
	}
}

func TestDecodeFloat(t *testing.T) {
	type sampled struct {
		Sample float64 `yaml:"sample"`
	}
	for _, tt := range []struct {
		name, doc string
		want      float64
		err       string
	}{
		{name: "fraction", doc: "sample: 0.25", want: 0.25},
		{name: "whole", doc: "sample: 1", want: 1},
		{name: "exponent", doc: "sample: 1e-3", want: 0.001},
		{name: "text", doc: "sample: often", err: `c.yaml:1: sample is the scalar "often" (allowed: a number such as 0.25)`},
		{name: "nan", doc: "sample: .nan", err: `c.yaml:1: sample .nan is not a finite number (allowed: a number such as 0.25)`},
		{name: "list", doc: "sample: [1]", err: `c.yaml:1: sample is a list (allowed: a number such as 0.25)`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := yamlstrict.NewDecoder("c.yaml")
			var s sampled
			d.DecodeDocument([]byte(tt.doc), &s)
			err := d.Err()
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("got error %v, want %v", err, tt.want)
			case tt.err == "" && s.Sample != tt.want:
				t.Errorf("got %v, want %v", s.Sample, tt.want)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Errorf("got error:\n%v\nwant it to contain:\n%s", err, tt.err)
			}
		})
	}
}
