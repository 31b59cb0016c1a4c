package admin

import "testing"

// TestCell: CSV cells from requests cannot start a spreadsheet formula.
func TestCell(t *testing.T) {
	for in, want := range map[string]string{
		"/v1/x":             "/v1/x",
		"=HYPERLINK(\"x\")": "'=HYPERLINK(\"x\")",
		"+1":                "'+1",
		"-2":                "'-2",
		"@SUM(A1)":          "'@SUM(A1)",
		"\tx":               "'\tx",
		"":                  "",
		"acme":              "acme",
	} {
		if got := cell(in); got != want {
			t.Errorf("cell(%q) = %q, want %q", in, got, want)
		}
	}
}
