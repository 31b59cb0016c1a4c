package yamlstrict

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// Error is one problem of a file, at a line and column (0 when the YAML
// parser could not tell where).
type Error struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Column  int    `json:"column"`
	Message string `json:"message"`
}

// Error returns "file:line: message" ("file: message" without a line).
func (e *Error) Error() string {
	if e.Line <= 0 {
		return e.File + ": " + e.Message
	}
	return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Message
}

// Errors is every problem found in one or more files. Sort orders it by
// file, line and column; Error joins the messages one a line.
type Errors []*Error

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap returns the errors, so that errors.As finds an *Error in Errors.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// Sort orders the errors by file, line, column, then message, and drops
// repeated ones (an alias expanded twice reports its problems twice).
func (es *Errors) Sort() {
	slices.SortStableFunc(*es, compare)
	*es = slices.CompactFunc(*es, func(a, b *Error) bool { return *a == *b })
}

func compare(a, b *Error) int {
	return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line),
		cmp.Compare(a.Column, b.Column), cmp.Compare(a.Message, b.Message))
}

// Err returns a sorted copy of es (es is left as it is), or nil when es is
// empty.
func (es Errors) Err() error {
	if len(es) == 0 {
		return nil
	}
	out := slices.Clone(es)
	out.Sort()
	return out
}
