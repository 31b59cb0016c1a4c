package config_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/config"
)

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

func TestDefaultsMatchDocumentedFile(t *testing.T) {
	full, err := config.Load("testdata/valid/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	def := config.Default()
	if full.GRPC.Address != def.GRPC.Address || full.Admin.Address != def.Admin.Address ||
		full.Policy.Decision != def.Policy.Decision || full.Authz.DenyStatus != def.Authz.DenyStatus ||
		full.ShutdownTimeout != def.ShutdownTimeout || full.Log != def.Log {
		t.Errorf("testdata/valid/full.yaml documents other defaults than config.Default():\n file: %+v\n code: %+v", full, def)
	}
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
			if !strings.Contains(err.Error(), f) {
				t.Errorf("error %q does not name the file", err)
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

func FuzzParse(f *testing.F) {
	for _, dir := range []string{"testdata/valid", "testdata/invalid"} {
		files, _ := filepath.Glob(dir + "/*.yaml")
		for _, file := range files {
			b, _ := os.ReadFile(file)
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := config.Parse(b)
		if err == nil {
			if verr := c.Validate(); verr != nil {
				t.Fatalf("Parse accepted a config that fails Validate: %v", verr)
			}
		}
	})
}
