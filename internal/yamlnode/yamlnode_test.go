package yamlnode_test

import (
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/tollgate-dev/tollgate/internal/yamlnode"
)

func TestSyntaxLine(t *testing.T) {
	tests := []struct {
		doc      string
		wantLine int
	}{
		{"a: 1\nb: [1,\n", 2},
		{"a: 1\nb: *nope\n", 2},
		{"a: 1\nb: \x01\n", 2},
	}
	for _, tt := range tests {
		var n yaml.Node
		err := yaml.Unmarshal([]byte(tt.doc), &n)
		if err == nil {
			t.Fatalf("%q parsed", tt.doc)
		}
		if line, msg := yamlnode.SyntaxLine(err, []byte(tt.doc)); line != tt.wantLine || msg == "" {
			t.Errorf("%q: line %d (%q), want %d", tt.doc, line, msg, tt.wantLine)
		}
	}
}

func TestEditDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{{"cluster", "clusters", 1}, {"adress", "address", 1}, {"", "abc", 3}, {"same", "same", 0}} {
		if got := yamlnode.EditDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("EditDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestError(t *testing.T) {
	if got := (&yamlnode.Error{File: "f.yaml", Line: 3, Msg: "bad"}).Error(); got != "f.yaml:3: bad" {
		t.Errorf("got %q", got)
	}
	if got := (&yamlnode.Error{File: "f.yaml", Msg: "bad"}).Error(); got != "f.yaml: bad" {
		t.Errorf("got %q", got)
	}
}
