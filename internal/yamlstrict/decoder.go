// Package yamlstrict is the strict YAML decoder of Tollgate's files (the
// configuration, rate limit configs, routes files): one document per file,
// no unknown or repeated keys, "<<" merge keys expanded with explicit keys
// winning, aliases expanded within a budget (against alias bombs), "did you
// mean" hints, and every problem reported at once (up to 50 a file) as
// Errors, each with its file, line and column. A trailing empty document
// ("---" at the end) is allowed.
//
// A Decoder walks the yaml.Node tree: Mapping visits a mapping's allowed
// keys, declared once per mapping with NewKeys; List, String, NonEmpty,
// Strings, StringMap, Bool, Uint32, Duration and Enum read values and
// record positioned errors; Decode fills a struct by its yaml tags and
// returns where each value stands (Positions), for checks made later.
package yamlstrict

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Limits that keep hostile files from taking unbounded time or memory.
const (
	// maxSteps bounds the mapping keys and list items read, aliases and
	// merge keys expanded.
	maxSteps = 1 << 20
	// maxErrors bounds the errors reported per file.
	maxErrors     = 50
	maxMergeDepth = 8
)

// ExtensionKeys, given to NewKeys, allows the keys that start with "x-" and
// ignores them: a place for YAML anchors that the rest of the file uses.
const ExtensionKeys = "x-*"

// Keys are the keys a mapping allows, in the order messages list them.
type Keys struct {
	names   []string
	list    string // the names, for messages
	allowed string // "a mapping with ..."
	ext     bool
	in      string // names the mapping in unknown key errors, or ""
}

// NewKeys declares the keys of a mapping. ExtensionKeys among them allows
// (and ignores) keys starting with "x-".
func NewKeys(names ...string) *Keys {
	k := &Keys{names: names}
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n
		if n == ExtensionKeys {
			k.ext = true
			parts[i] = "x-... (ignored, a place for YAML anchors)"
		}
	}
	k.list = strings.Join(parts, ", ")
	k.allowed = "a mapping with " + k.list
	if len(names) == 0 {
		k.list, k.allowed = "no keys", "an empty mapping {}"
	}
	return k
}

// Allowed describes the mapping for messages: "a mapping with a, b".
func (k *Keys) Allowed() string { return k.allowed }

// Decoder reads one file. Its methods record errors instead of returning
// them; Err returns them all, sorted.
type Decoder struct {
	file string
	// Home tells where a key that is misplaced belongs ("in a listener"),
	// for the hint of an unknown key.
	Home map[string]string
	// YAML11Bools reads YAML 1.1's yes, no, on, off (and y, n) as booleans,
	// as envoyproxy's decoder (yaml.v2) does; otherwise only true and false
	// are booleans.
	YAML11Bools bool
	// Printable refuses tabs and line breaks in values too, for files whose
	// values reach Envoy; otherwise only the other control characters are
	// refused.
	Printable bool
	errs      Errors
	warns     Errors
	recorded  int // ErrorAt calls, repeats included
	steps     int
	full      bool
}

// NewDecoder returns a Decoder for the file named file in messages.
func NewDecoder(file string) *Decoder {
	return &Decoder{file: file, steps: maxSteps}
}

// File returns the file name given to NewDecoder.
func (d *Decoder) File() string { return d.file }

// ErrorAt records an error at a line and column (0: unknown). An error
// already recorded (an alias expanded twice) is not recorded again, so
// repeats do not count against the cap of errors per file.
func (d *Decoder) ErrorAt(line, col int, format string, args ...any) {
	d.recorded++
	if d.full {
		return
	}
	e := &Error{File: d.file, Line: line, Column: col, Message: fmt.Sprintf(format, args...)}
	if slices.ContainsFunc(d.errs, func(o *Error) bool { return *o == *e }) {
		return
	}
	if len(d.errs) == maxErrors {
		e.Message = fmt.Sprintf("more than %d errors; stopping", maxErrors)
		d.full = true
	}
	d.errs = append(d.errs, e)
}

// Errorf records an error at n (nil: no position).
func (d *Decoder) Errorf(n *yaml.Node, format string, args ...any) {
	if n == nil {
		d.ErrorAt(0, 0, format, args...)
		return
	}
	d.ErrorAt(n.Line, n.Column, format, args...)
}

// Warnf records a warning at n: a setting with no effect, not an error.
func (d *Decoder) Warnf(n *yaml.Node, format string, args ...any) {
	if len(d.warns) < maxErrors {
		d.warns = append(d.warns, &Error{File: d.file, Line: n.Line, Column: n.Column, Message: fmt.Sprintf(format, args...)})
	}
}

// Errors returns the errors recorded so far, sorted.
func (d *Decoder) Errors() Errors {
	d.errs.Sort()
	return d.errs
}

// Warnings returns the warnings recorded, sorted.
func (d *Decoder) Warnings() Errors {
	d.warns.Sort()
	return d.warns
}

// Err returns the errors recorded (Errors, sorted), or nil.
func (d *Decoder) Err() error {
	if len(d.errs) == 0 {
		return nil
	}
	return d.Errors()
}

// NumErrors is how many errors were recorded so far, repeats included: it
// grows whenever a check fails.
func (d *Decoder) NumErrors() int { return d.recorded }

// Stopped reports whether the decoder gave up: too many errors, or the
// step budget spent.
func (d *Decoder) Stopped() bool { return d.full }

// step charges n units of work, and reports false when the budget runs out.
func (d *Decoder) step(n int, at *yaml.Node) bool {
	if d.steps -= n; d.steps < 0 {
		if !d.full {
			d.Errorf(at, "the file expands to more than %d keys and items (aliases and merge keys expanded)", maxSteps)
			d.full = true
		}
		return false
	}
	return !d.full
}

// Document parses data, which must hold one YAML document, and returns its
// top-level mapping; allowed describes it for messages. It returns nil when
// the data is not such a document (an error is recorded) or, when emptyOK,
// empty (no error).
func (d *Decoder) Document(data []byte, allowed string, emptyOK bool) *yaml.Node {
	var doc yaml.Node
	if !d.documents(data, &doc, allowed, emptyOK) {
		return nil
	}
	root := deref(&doc)
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			if !emptyOK {
				d.ErrorAt(1, 0, "the file is empty (allowed: %s)", allowed)
			}
			return nil
		}
		root = deref(root.Content[0])
	}
	if root.Kind != yaml.MappingNode {
		if emptyOK && IsNull(root) {
			return nil
		}
		d.Errorf(root, "the file is %s (allowed: %s)", KindName(root), allowed)
		return nil
	}
	return root
}

// documents decodes the first document of data into doc, and reports a
// second one unless it is empty or null (a trailing "---").
func (d *Decoder) documents(data []byte, doc *yaml.Node, allowed string, emptyOK bool) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(doc); err != nil {
		if !errors.Is(err, io.EOF) {
			d.syntaxError(err, data)
		} else if !emptyOK {
			d.ErrorAt(1, 0, "the file is empty (allowed: %s)", allowed)
		}
		return false
	}
	for {
		var extra yaml.Node
		err := dec.Decode(&extra)
		switch {
		case errors.Is(err, io.EOF):
			return true
		case err != nil:
			d.syntaxError(err, data)
			return true
		case !emptyDocument(&extra):
			d.Errorf(&extra, "a second YAML document starts here (allowed: one document per file)")
			return true
		}
	}
}

// emptyDocument reports whether a document holds nothing, or null.
func emptyDocument(doc *yaml.Node) bool {
	if doc.Kind != yaml.DocumentNode {
		return IsNull(doc)
	}
	return len(doc.Content) == 0 || IsNull(doc.Content[0])
}

// syntaxError records a YAML syntax error with its line.
func (d *Decoder) syntaxError(err error, data []byte) {
	line, msg := syntaxLine(err, data)
	d.ErrorAt(line, 0, "invalid YAML: %s", msg)
}

// Mapping calls fn for each entry of the mapping n whose key keys allows:
// first the entries written in n, in file order, then those that "<<"
// merge keys bring and that n does not set itself. Unknown keys (with a
// hint), repeated keys and keys that are not scalars are errors; null reads
// as an empty mapping. what names n in the error when it is not a mapping,
// and then Mapping returns false.
func (d *Decoder) Mapping(n *yaml.Node, what string, keys *Keys, fn func(key string, k, v *yaml.Node)) bool {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		if IsNull(n) {
			return true
		}
		d.Errorf(n, "%s is %s (allowed: %s)", what, KindName(n), keys.allowed)
		return false
	}
	key := func(k *yaml.Node) (string, bool) {
		switch {
		case k.Kind != yaml.ScalarNode:
			d.Errorf(k, "a key is %s (allowed: %s)", KindName(k), keys.list)
			return "", false
		case keys.ext && strings.HasPrefix(k.Value, "x-"):
			return "", false // a place for YAML anchors, ignored
		case !slices.Contains(keys.names, k.Value):
			if d.full {
				return "", false // no hint to compute: nothing more is reported
			}
			in := ""
			if keys.in != "" {
				in = " in " + keys.in
			}
			d.Errorf(k, "unknown key %q%s (allowed: %s)%s", k.Value, in, keys.list, d.hint(k.Value, keys))
			return "", false
		}
		return k.Value, true
	}
	var buf [16]*yaml.Node
	d.entries(n, "", key, fn, &seenKeys{keys: buf[:0]}, 0)
	return true
}

// Item is Mapping for a list item, which may not be empty.
func (d *Decoder) Item(n *yaml.Node, what string, keys *Keys, fn func(key string, k, v *yaml.Node)) bool {
	if IsNull(n) {
		d.Errorf(n, "%s is empty (allowed: %s)", what, keys.allowed)
		return false
	}
	return d.Mapping(n, what, keys, fn)
}

// seenKeys are the keys a mapping set so far: those of the levels that win
// over the one being read, then this level's. A key is in it once at most,
// so it is never longer than the distinct keys, however many mappings
// aliases merge; large ones are indexed.
type seenKeys struct {
	keys  []*yaml.Node
	names []string
	index map[string]int
}

// find returns the position of name, or -1.
func (s *seenKeys) find(name string) int {
	if s.index != nil {
		if i, ok := s.index[name]; ok {
			return i
		}
		return -1
	}
	return slices.Index(s.names, name)
}

func (s *seenKeys) add(k *yaml.Node, name string) {
	const small = 16
	s.keys, s.names = append(s.keys, k), append(s.names, name)
	switch {
	case s.index != nil:
		s.index[name] = len(s.names) - 1
	case len(s.names) > small:
		s.index = make(map[string]int, 2*len(s.names))
		for i, n := range s.names {
			s.index[n] = i
		}
	}
}

// entries walks one level of a mapping (Mapping, StringMap): key reads an
// entry's key and records why it refuses one; a key set twice at this
// level is an error (prefix starts its message), and one that a level
// merging this one sets is skipped. Then the "<<" merge keys' mappings are
// walked, their keys losing to the keys seen.
func (d *Decoder) entries(n *yaml.Node, prefix string, key func(k *yaml.Node) (string, bool), fn func(key string, k, v *yaml.Node), seen *seenKeys, depth int) {
	if !d.step(len(n.Content)/2+1, n) { // +1: an empty mapping merged costs too
		return
	}
	outer := len(seen.names)
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := deref(n.Content[i])
		v := deref(n.Content[i+1])
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merges = append(merges, v)
			continue
		}
		name, ok := key(k)
		if !ok {
			continue
		}
		if j := seen.find(name); j >= outer {
			d.Errorf(k, "%skey %q is repeated (first at line %d); each key may appear once", prefix, name, seen.keys[j].Line)
			continue
		} else if j >= 0 {
			continue // set by a mapping that merges this one
		}
		seen.add(k, name)
		fn(name, k, v)
	}
	for _, mv := range merges {
		if depth >= maxMergeDepth {
			d.Errorf(mv, "merge keys (<<) nest more than %d deep", maxMergeDepth)
			return
		}
		srcs := []*yaml.Node{mv}
		if mv.Kind == yaml.SequenceNode {
			srcs = mv.Content
		}
		for _, src := range srcs {
			src = deref(src)
			if src.Kind != yaml.MappingNode {
				d.Errorf(src, "a merge key (<<) takes %s (allowed: a mapping or a list of mappings)", KindName(src))
				continue
			}
			d.entries(src, prefix, key, fn, seen, depth+1)
		}
	}
}

// hint tells where a misplaced key belongs, or which allowed key a misspelt
// one meant.
func (d *Decoder) hint(key string, keys *Keys) string {
	if where, ok := d.Home[key]; ok {
		return fmt.Sprintf("; %q belongs %s", key, where)
	}
	return Hint(key, keys.names)
}

// List returns the items of the list n, aliases resolved; null reads as an
// empty list. what and allowed describe n in the error when it is not a
// list, and then List returns nil.
func (d *Decoder) List(n *yaml.Node, what, allowed string) []*yaml.Node {
	n = deref(n)
	if n.Kind != yaml.SequenceNode {
		if !IsNull(n) {
			d.Errorf(n, "%s is %s (allowed: %s)", what, KindName(n), allowed)
		}
		return nil
	}
	if !d.step(len(n.Content), n) {
		return nil
	}
	for i, c := range n.Content {
		n.Content[i] = deref(c)
	}
	return n.Content
}

// scalar reads a scalar as its text (numbers and booleans as written; null
// as ""), refusing control characters (see Printable) and invalid UTF-8.
func (d *Decoder) scalar(n *yaml.Node, what, allowed string) (string, bool) {
	n = deref(n)
	if s, ok := d.text(n); ok {
		return s, true
	}
	d.scalarError(n, what, allowed)
	return "", false
}

// text returns the text of a scalar without control characters; tabs and
// line breaks are text unless Printable is set.
func (d *Decoder) text(n *yaml.Node) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		return "", false
	}
	if n.ShortTag() == "!!null" {
		return "", true
	}
	if !utf8.ValidString(n.Value) || strings.ContainsFunc(n.Value, d.control) {
		return "", false
	}
	return n.Value, true
}

func (d *Decoder) control(r rune) bool {
	if !d.Printable && (r == '\t' || r == '\n' || r == '\r') {
		return false
	}
	return r < 0x20 || r == 0x7f
}

// scalarError reports the node that text refused.
func (d *Decoder) scalarError(n *yaml.Node, what, allowed string) {
	if n.Kind != yaml.ScalarNode {
		d.Errorf(n, "%s is %s (allowed: %s)", what, KindName(n), allowed)
		return
	}
	if d.Printable {
		d.Errorf(n, "%s %q contains a control character or invalid UTF-8 (allowed: printable text)", what, n.Value)
		return
	}
	d.Errorf(n, "%s %q contains a control character other than tab and line break, or invalid UTF-8 (allowed: text)", what, n.Value)
}

// String reads a scalar as text (see scalar).
func (d *Decoder) String(n *yaml.Node, what string) (string, bool) {
	return d.scalar(n, what, "a string")
}

// NonEmpty reads a string that may not be empty.
func (d *Decoder) NonEmpty(n *yaml.Node, what string) (string, bool) {
	s, ok := d.String(n, what)
	if ok && s == "" {
		d.Errorf(n, "%s is empty (allowed: a non-empty string)", what)
		return "", false
	}
	return s, ok
}

// Strings calls fn for each item of a list of strings; allowed describes
// the list.
func (d *Decoder) Strings(n *yaml.Node, what, allowed string, fn func(item *yaml.Node, s string)) {
	for _, item := range d.List(n, what, allowed) {
		if s, ok := d.text(item); ok {
			fn(item, s)
		} else {
			d.scalarError(item, "an item of "+what, allowed)
		}
	}
}

// StringMap calls fn for each entry of a mapping of strings to strings:
// first the entries written in n, in file order, then those that "<<"
// merge keys bring (as in Mapping). Empty and repeated keys are errors.
func (d *Decoder) StringMap(n *yaml.Node, what, allowed string, fn func(k *yaml.Node, key, val string)) {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		if !IsNull(n) {
			d.Errorf(n, "%s is %s (allowed: %s)", what, KindName(n), allowed)
		}
		return
	}
	key := func(kn *yaml.Node) (string, bool) {
		k, ok := d.text(kn)
		switch {
		case !ok:
			d.scalarError(kn, "a key of "+what, allowed)
			return "", false
		case k == "":
			d.Errorf(kn, "%s has an empty key (allowed: %s)", what, allowed)
			return "", false
		}
		return k, true
	}
	d.entries(n, what+": ", key, func(k string, kn, vn *yaml.Node) {
		if val, ok := d.text(vn); ok {
			fn(kn, k, val)
		} else {
			d.scalarError(vn, fmt.Sprintf("%s %q", what, k), allowed)
		}
	}, &seenKeys{}, 0)
}

// Bool reads true or false (see YAML11Bools).
func (d *Decoder) Bool(n *yaml.Node, what string) (bool, bool) {
	n = deref(n)
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!bool":
			if b, err := strconv.ParseBool(n.Value); err == nil {
				return b, true
			}
		case "!!str":
			if !d.YAML11Bools {
				break
			}
			switch n.Value {
			case "y", "Y", "yes", "Yes", "YES", "on", "On", "ON":
				return true, true
			case "n", "N", "no", "No", "NO", "off", "Off", "OFF":
				return false, true
			}
		}
	}
	d.Errorf(n, "%s is %s (allowed: true, false)", what, KindName(n))
	return false, false
}

// integer reads a whole number from lo to hi. A float that is a whole
// number (1e6, 1.0) is one too, as yaml.v3 reads it into an int.
func (d *Decoder) integer(n *yaml.Node, what string, lo, hi int64) (int64, bool) {
	n = deref(n)
	var tag string
	if n.Kind == yaml.ScalarNode {
		tag = n.ShortTag()
	}
	if tag != "!!int" && tag != "!!float" {
		d.Errorf(n, "%s is %s (allowed: %s)", what, KindName(n), wholeNumber(lo, hi))
		return 0, false
	}
	i, err := parseInt(n.Value, tag)
	switch {
	case errors.Is(err, strconv.ErrRange), err == nil && (i < lo || i > hi):
		d.Errorf(n, "%s %s is out of range (allowed: %s)", what, n.Value, wholeNumber(lo, hi))
		return 0, false
	case err != nil:
		d.Errorf(n, "%s %s is not a whole number (allowed: %s)", what, n.Value, wholeNumber(lo, hi))
		return 0, false
	}
	return i, true
}

// Float reads a finite number (an !!int or an !!float such as 0.25 or 1e-3).
func (d *Decoder) Float(n *yaml.Node, what string) (float64, bool) {
	n = deref(n)
	var tag string
	if n.Kind == yaml.ScalarNode {
		tag = n.ShortTag()
	}
	if tag != "!!int" && tag != "!!float" {
		d.Errorf(n, "%s is %s (allowed: a number such as 0.25)", what, KindName(n))
		return 0, false
	}
	f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
	if tag == "!!int" && err != nil { // 0x10, 0o17: as yaml.v3 reads ints
		var i int64
		if i, err = strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64); err == nil {
			f = float64(i)
		}
	}
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		d.Errorf(n, "%s %s is not a finite number (allowed: a number such as 0.25)", what, n.Value)
		return 0, false
	}
	return f, true
}

// parseInt reads an !!int, or a !!float that is a whole number.
func parseInt(s, tag string) (int64, error) {
	s = strings.ReplaceAll(s, "_", "")
	if tag == "!!int" {
		return strconv.ParseInt(s, 0, 64)
	}
	f, err := strconv.ParseFloat(s, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange), math.IsNaN(f), f != math.Trunc(f):
		return 0, strconv.ErrSyntax
	case err != nil, f < math.MinInt64, f >= math.MaxInt64: // 2^63 is the float above MaxInt64
		return 0, strconv.ErrRange
	}
	return int64(f), nil
}

// Uint32 reads a whole number from lo to hi, at most math.MaxUint32.
func (d *Decoder) Uint32(n *yaml.Node, what string, lo, hi uint32) (uint32, bool) {
	i, ok := d.integer(n, what, int64(lo), int64(min(hi, math.MaxUint32)))
	return uint32(i), ok
}

// Duration reads a Go duration such as 200ms or 15s ("0" too). Negative
// durations are errors, and so is 0 unless zero says what it means ("none",
// "the default"), for messages.
func (d *Decoder) Duration(n *yaml.Node, what, zero string) (time.Duration, bool) {
	allowed := "a duration above 0 such as 200ms, 15s or 1m"
	if zero != "" {
		allowed = "a duration such as 200ms, 15s or 1m, or 0s for " + zero
	}
	n = deref(n)
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" {
		d.Errorf(n, "%s is %s (allowed: %s)", what, KindName(n), allowed)
		return 0, false
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil && n.Value == "0" {
		v, err = 0, nil
	}
	switch {
	case err != nil:
		d.Errorf(n, "%s %q is not a duration (allowed: %s)", what, n.Value, allowed)
		return 0, false
	case v < 0:
		d.Errorf(n, "%s %q is negative (allowed: %s)", what, n.Value, allowed)
		return 0, false
	case v == 0 && zero == "":
		d.Errorf(n, "%s %q is out of range (allowed: %s)", what, n.Value, allowed)
		return 0, false
	}
	return v, true
}

// Enum reads one of allowed.
func (d *Decoder) Enum(n *yaml.Node, what string, allowed []string) (string, bool) {
	s, ok := d.String(n, what)
	if !ok {
		return "", false
	}
	if !slices.Contains(allowed, s) {
		d.Errorf(n, "%s %q is not allowed (allowed: %s)%s", what, s, strings.Join(allowed, ", "), Hint(s, allowed))
		return "", false
	}
	return s, true
}
