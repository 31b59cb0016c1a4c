package xds

import (
	"regexp"
	"strings"
	"testing"
)

// TestNameCheckers compares the hand-written name checks with the regular
// expressions they replace, on every one- and two-byte string and a few
// longer ones.
func TestNameCheckers(t *testing.T) {
	nameRe := regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,199}$`)
	headerNameRe := regexp.MustCompile("^:?[0-9a-zA-Z!#$%&'*+.^_|~`-]+$")
	inputs := []string{"", ":", "::path", ":path", "x-tollgate-consumer", "a b", "é", strings.Repeat("a", 200), strings.Repeat("a", 201), "_a.b:c-d"}
	for i := range 256 {
		inputs = append(inputs, string(rune(i)), string([]byte{byte(i)}), "a"+string([]byte{byte(i)}), ":"+string([]byte{byte(i)}))
	}
	for _, s := range inputs {
		if got, want := validName(s), nameRe.MatchString(s); got != want {
			t.Errorf("validName(%q) = %v, want %v", s, got, want)
		}
		if got, want := validHeaderName(s), headerNameRe.MatchString(s); got != want {
			t.Errorf("validHeaderName(%q) = %v, want %v", s, got, want)
		}
	}
}
