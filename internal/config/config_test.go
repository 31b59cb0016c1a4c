package config_test

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"

	"github.com/tollgate-dev/tollgate/internal/config"
	"github.com/tollgate-dev/tollgate/internal/yamlstrict"
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
// its default, so it must decode to exactly config.Default().
func TestDefaultsMatchDocumentedFile(t *testing.T) {
	full, err := config.Load("testdata/valid/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if def := config.Default(); !reflect.DeepEqual(full, def) {
		t.Errorf("testdata/valid/full.yaml documents other defaults than config.Default():\n file: %+v\n code: %+v", full, def)
	}
}

// TestEveryFieldDocumented walks the yaml tags of Config: every setting
// must be in testdata/valid/full.yaml and in the README's configuration
// reference, whose defaults must be config.Default()'s.
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
	c, err := config.Parse("README.md", readme)
	if err != nil {
		t.Fatalf("README.md's configuration reference: %v", err)
	}
	if def := config.Default(); !reflect.DeepEqual(c, def) {
		t.Errorf("README.md documents other defaults than config.Default():\n README: %+v\n   code: %+v", c, def)
	}
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
