package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/yamlstrict"
)

// FuzzParse: Parse never panics, its errors name the file, and a config it
// accepts passes validation again.
func FuzzParse(f *testing.F) {
	for _, dir := range []string{"testdata/valid", "testdata/invalid"} {
		files, _ := filepath.Glob(dir + "/*.yaml")
		for _, file := range files {
			b, _ := os.ReadFile(file)
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("fuzz.yaml", b)
		if err != nil {
			var es yamlstrict.Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error %v is %T, want yamlstrict.Errors", err, err)
			}
			for _, e := range es {
				if e.File != "fuzz.yaml" || e.Line < 1 {
					t.Fatalf("error %q does not name its file and a line", e)
				}
			}
			return
		}
		d := yamlstrict.NewDecoder("fuzz.yaml")
		c.validate(&checker{d: d})
		if err := d.Err(); err != nil {
			t.Fatalf("Parse accepted a config that fails validation: %v", err)
		}
	})
}
