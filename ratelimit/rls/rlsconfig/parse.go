package rlsconfig

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"github.com/tollgate-dev/tollgate/internal/yamlnode"
	"io"
	"math"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Limits that keep hostile or broken files (alias bombs, anchors that
// contain themselves) from taking unbounded time.
const (
	maxDepth       = 32      // nested descriptor levels
	maxMergeDepth  = 8       // nested "<<" merge keys
	maxDescriptors = 100000  // descriptors of a file, aliases expanded
	maxErrors      = 50      // errors reported per file
	maxSteps       = 1 << 20 // mapping keys read, aliases and merges expanded
)

// Keys allowed at each level, in the order messages list them.
var (
	rootKeys       = []string{"domain", "descriptors"}
	descriptorKeys = []string{"key", "value", "rate_limit", "descriptors", "shadow_mode", "replaces",
		"detailed_metric", "unlimited", "value_to_metric", "share_threshold"}
	rateLimitKeys = []string{"unit", "requests_per_unit", "unlimited", "name", "replaces"}
	replacesKeys  = []string{"name"}
)

// home tells where a key that is misplaced belongs, for hints.
var home = map[string]string{
	"domain":            "at the top of the file",
	"key":               "in a descriptor",
	"value":             "in a descriptor",
	"descriptors":       "at the top of the file or in a descriptor",
	"rate_limit":        "in a descriptor",
	"shadow_mode":       "in a descriptor, next to rate_limit",
	"detailed_metric":   "in a descriptor, next to rate_limit",
	"value_to_metric":   "in a descriptor",
	"share_threshold":   "in a descriptor with a wildcard value",
	"unit":              "in rate_limit",
	"requests_per_unit": "in rate_limit",
	"name":              "in rate_limit",
	"unlimited":         "in rate_limit or a descriptor",
	"replaces":          "in rate_limit or a descriptor",
}

// parsedFile is one file's domain.
type parsedFile struct {
	domain     string
	domainLine int
	root       *node
}

type parser struct {
	file   string
	errs   []error
	warns  []error
	budget int  // descriptors left to read
	steps  int  // mapping keys left to read
	full   bool // maxErrors reached
	domain string

	// Filled while reading descriptors, checked at the end.
	rules    []ruleAt
	fullKeys map[string]descAt // rule FullKey -> its descriptor
}

type ruleAt struct {
	rule     *Rule
	replaces []nameAt
}

// nameAt is a name of a replaces list and its line.
type nameAt struct {
	name string
	line int
}

type descAt struct {
	line       int
	key, value string
}

func (p *parser) errorf(line int, format string, args ...any) {
	if p.full {
		return
	}
	if len(p.errs) == maxErrors {
		p.errs = append(p.errs, &Error{File: p.file, Line: line, Msg: fmt.Sprintf("more than %d errors; stopping", maxErrors)})
		p.full = true
		return
	}
	p.errs = append(p.errs, &Error{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) warnf(line int, format string, args ...any) {
	if len(p.warns) < maxErrors {
		p.warns = append(p.warns, &Error{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)})
	}
}

// parseFile reads one file. The result is nil when the domain is unknown.
func parseFile(name string, data []byte) (*parsedFile, []error, []error) {
	p := &parser{file: name, budget: maxDescriptors, steps: maxSteps, fullKeys: map[string]descAt{}}
	f := p.parse(data)
	byLine := func(a, b error) int { return cmp.Compare(a.(*Error).Line, b.(*Error).Line) }
	slices.SortStableFunc(p.errs, byLine)
	slices.SortStableFunc(p.warns, byLine)
	return f, p.errs, p.warns
}

func (p *parser) parse(data []byte) *parsedFile {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errorf(1, "domain is missing (allowed: a mapping with domain and descriptors); the file is empty")
		} else {
			p.yamlError(err, data)
		}
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.errorf(extra.Line, "a second YAML document starts here (allowed: one document, with one domain, per file)")
	} else if !errors.Is(err, io.EOF) {
		p.yamlError(err, data)
	}

	root := yamlnode.Deref(&doc)
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			p.errorf(1, "domain is missing (allowed: a mapping with domain and descriptors); the file is empty")
			return nil
		}
		root = yamlnode.Deref(root.Content[0])
	}
	if root.Kind != yaml.MappingNode {
		p.errorf(root.Line, "the file is %s (allowed: a mapping with domain and descriptors)", yamlnode.KindName(root))
		return nil
	}

	f := &parsedFile{root: &node{}}
	var descs *yaml.Node
	for _, fl := range p.fields(root, rootKeys, 0) {
		switch fl.name {
		case "domain":
			f.domain, _ = p.str(fl, "domain")
			f.domainLine = fl.key.Line
		case "descriptors":
			descs = fl.val
		}
	}
	if f.domain == "" {
		line := root.Line
		if f.domainLine != 0 {
			line = f.domainLine
		}
		p.errorf(line, "domain is missing (allowed: a non-empty name that Envoy's rate limit requests give as their domain)")
		return nil
	}
	p.domain = f.domain
	if descs != nil {
		p.descriptors(f.root, yamlnode.Deref(descs), f.domain, nil, 1)
	}
	p.checkReplaces()
	return f
}

// yamlError records a YAML syntax error with its line.
func (p *parser) yamlError(err error, data []byte) {
	line, msg := yamlnode.SyntaxLine(err, data)
	p.errorf(line, "invalid YAML: %s", msg)
}

type field struct {
	name     string
	key, val *yaml.Node
}

// fields returns a mapping's fields, with "<<" merge keys expanded (explicit
// keys win), reporting repeated and unknown keys.
func (p *parser) fields(m *yaml.Node, allowed []string, mergeDepth int) []field {
	var out []field
	var merges []*yaml.Node
	if p.steps -= len(m.Content) / 2; p.steps < 0 {
		if !p.full {
			p.errorf(m.Line, "the file expands to more than %d keys (aliases and merge keys expanded)", maxSteps)
			p.full = true
		}
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := yamlnode.Deref(m.Content[i]), m.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.errorf(k.Line, "a key is %s (allowed: %s)", yamlnode.KindName(k), strings.Join(allowed, ", "))
			continue
		}
		if k.ShortTag() == "!!merge" {
			merges = append(merges, v)
			continue
		}
		if j := slices.IndexFunc(out, func(f field) bool { return f.name == k.Value }); j >= 0 {
			p.errorf(k.Line, "key %q is repeated (first at line %d); each key may appear once", k.Value, out[j].key.Line)
			continue
		}
		if !slices.Contains(allowed, k.Value) {
			p.errorf(k.Line, "unknown key %q (allowed: %s)%s", k.Value, strings.Join(allowed, ", "), hint(k.Value, allowed))
			continue
		}
		out = append(out, field{k.Value, k, v})
	}
	for _, mv := range merges {
		if mergeDepth >= maxMergeDepth {
			p.errorf(mv.Line, "merge keys (<<) nest more than %d deep", maxMergeDepth)
			break
		}
		mv = yamlnode.Deref(mv)
		srcs := []*yaml.Node{mv}
		if mv.Kind == yaml.SequenceNode {
			srcs = mv.Content
		}
		for _, src := range srcs {
			src = yamlnode.Deref(src)
			if src.Kind != yaml.MappingNode {
				p.errorf(src.Line, "a merge key (<<) takes %s (allowed: a mapping or a list of mappings)", yamlnode.KindName(src))
				continue
			}
			for _, f := range p.fields(src, allowed, mergeDepth+1) {
				if !slices.ContainsFunc(out, func(o field) bool { return o.name == f.name }) {
					out = append(out, f)
				}
			}
		}
	}
	return out
}

// hint suggests where a misplaced key belongs, or which allowed key a
// misspelt one meant.
func hint(key string, allowed []string) string {
	if where, ok := home[key]; ok {
		return fmt.Sprintf("; %q belongs %s", key, where)
	}
	best, bestDist := "", 3
	for _, a := range allowed {
		if d := yamlnode.EditDistance(key, a); d < bestDist {
			best, bestDist = a, d
		}
	}
	if best != "" {
		return fmt.Sprintf("; did you mean %q?", best)
	}
	return ""
}

// str reads a string field; null reads as "". Numbers and booleans read as
// their text, as envoyproxy's YAML decoder reads them into strings.
func (p *parser) str(f field, what string) (string, bool) {
	v := yamlnode.Deref(f.val)
	if v.Kind != yaml.ScalarNode {
		p.errorf(v.Line, "%s is %s (allowed: a string)", what, yamlnode.KindName(v))
		return "", false
	}
	if v.ShortTag() == "!!null" {
		return "", true
	}
	return v.Value, true
}

func (p *parser) boolean(f field) bool {
	v := yamlnode.Deref(f.val)
	var b bool
	if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
		return false
	}
	if v.Kind != yaml.ScalarNode || v.Decode(&b) != nil {
		p.errorf(v.Line, "%s is %s (allowed: true, false)", f.name, yamlnode.KindName(v))
		return false
	}
	return b
}

// descriptor is one descriptor as read, before it joins the tree.
type descriptor struct {
	line                   int
	key, value             string
	keyLine                int
	rateLimit              *yaml.Node // mapping, or nil
	rateLimitLine          int
	children               *yaml.Node
	shadow, detailed       bool
	shadowLine, detailLine int
	unlimited              bool
	unlimitedLine          int
	replaces               *yaml.Node // the descriptor-level list
	replacesLine           int
	share                  bool
	shareLine              int
}

// descriptors reads a list of descriptors into n. path is the FullKey of n;
// shares holds the share_threshold wildcard of each level above.
func (p *parser) descriptors(n *node, seq *yaml.Node, path string, shares []string, depth int) {
	if seq.Kind == yaml.ScalarNode && seq.ShortTag() == "!!null" {
		return
	}
	if seq.Kind != yaml.SequenceNode {
		p.errorf(seq.Line, "descriptors is %s (allowed: a list of descriptors, each a mapping with key and optional value, rate_limit, descriptors)", yamlnode.KindName(seq))
		return
	}
	if depth > maxDepth {
		p.errorf(seq.Line, "descriptors nest more than %d levels deep", maxDepth)
		return
	}
	type entryKey struct{ key, value string }
	seen := map[entryKey]int{} // line of each key and value at this level
	for _, item := range seq.Content {
		if p.full {
			return
		}
		if p.budget--; p.budget < 0 {
			p.errorf(item.Line, "more than %d descriptors (aliases expanded)", maxDescriptors)
			p.full = true
			return
		}
		item = yamlnode.Deref(item)
		if item.Kind != yaml.MappingNode {
			p.errorf(item.Line, "a descriptor is %s (allowed: a mapping with key and optional value, rate_limit, descriptors)", yamlnode.KindName(item))
			continue
		}
		d := p.readDescriptor(item)
		if d.key == "" {
			p.errorf(d.keyLine, "descriptor has an empty key (allowed: the non-empty key of a descriptor entry, e.g. remote_address)")
			continue
		}
		ek := entryKey{d.key, d.value}
		if first, dup := seen[ek]; dup {
			if d.value == "" {
				p.errorf(d.line, "duplicate descriptor key=%s with no value (first at line %d); a key and value may appear once per level", d.key, first)
			} else {
				p.errorf(d.line, "duplicate descriptor key=%s value=%s (first at line %d); a key and value may appear once per level", d.key, d.value, first)
			}
			continue
		}
		seen[ek] = d.line

		finalKey := d.key
		if d.value != "" {
			finalKey += "_" + d.value
		}
		fullKey := path + "." + finalKey
		wild := strings.HasSuffix(d.value, "*")

		levelShare := ""
		if d.share {
			if wild {
				levelShare = d.value
			} else {
				p.errorf(d.shareLine, "share_threshold needs a wildcard value (allowed: on a descriptor whose value ends with *; value is %q)", d.value)
			}
		}
		childShares := append(slices.Clip(shares), levelShare)

		next := &node{rule: p.rule(d, fullKey, childShares)}
		if d.children != nil {
			p.descriptors(next, yamlnode.Deref(d.children), fullKey, childShares, depth+1)
		}
		if n.keys == nil {
			n.keys = map[string]*keyNodes{}
		}
		k := n.keys[d.key]
		if k == nil {
			k = &keyNodes{}
			n.keys[d.key] = k
		}
		switch {
		case d.value == "":
			k.any = next
		case wild:
			k.wildcards = append(k.wildcards, wildcard{strings.TrimSuffix(d.value, "*"), next})
		default:
			if k.values == nil {
				k.values = map[string]*node{}
			}
			k.values[d.value] = next
		}
	}
	n.sortWildcards()
}

func (p *parser) readDescriptor(m *yaml.Node) descriptor {
	d := descriptor{line: m.Line, keyLine: m.Line}
	for _, f := range p.fields(m, descriptorKeys, 0) {
		switch f.name {
		case "key":
			d.key, _ = p.str(f, "key")
			d.keyLine = f.key.Line
		case "value":
			d.value, _ = p.str(f, "value")
		case "rate_limit":
			v := yamlnode.Deref(f.val)
			d.rateLimitLine = f.key.Line
			switch {
			case v.Kind == yaml.MappingNode:
				d.rateLimit = v
			case v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null":
				p.warnf(f.key.Line, "rate_limit is empty, so the descriptor has no limit (as in envoyproxy); give unit and requests_per_unit, or unlimited: true")
			default:
				p.errorf(v.Line, "rate_limit is %s (allowed: a mapping with unit and requests_per_unit, or unlimited: true)", yamlnode.KindName(v))
			}
		case "descriptors":
			d.children = f.val
		case "shadow_mode":
			d.shadow, d.shadowLine = p.boolean(f), f.key.Line
		case "detailed_metric":
			d.detailed, d.detailLine = p.boolean(f), f.key.Line
		case "unlimited":
			d.unlimited, d.unlimitedLine = p.boolean(f), f.key.Line
		case "replaces":
			d.replaces, d.replacesLine = f.val, f.key.Line
		case "value_to_metric":
			p.boolean(f) // names envoyproxy's statistics only; Tollgate's metrics never carry values
		case "share_threshold":
			d.share, d.shareLine = p.boolean(f), f.key.Line
		}
	}
	return d
}

// rule builds the rule of a descriptor, or returns nil when it has none.
func (p *parser) rule(d descriptor, fullKey string, shares []string) *Rule {
	if d.rateLimit == nil && !d.unlimited {
		if d.shadow {
			p.warnf(d.shadowLine, "shadow_mode has no effect without a rate_limit on the same descriptor (it is not inherited by nested descriptors)")
		}
		if d.detailed {
			p.warnf(d.detailLine, "detailed_metric has no effect without a rate_limit on the same descriptor")
		}
		if d.replaces != nil {
			p.errorf(d.replacesLine, "replaces needs a rate_limit on the same descriptor (allowed: replaces in a descriptor with rate_limit, or inside rate_limit)")
		}
		return nil
	}
	r := &Rule{
		FullKey:        fullKey,
		ShadowMode:     d.shadow,
		DetailedMetric: d.detailed,
		domain:         p.domain,
	}
	if slices.ContainsFunc(shares, func(s string) bool { return s != "" }) {
		r.share = shares
	}
	var replaces []nameAt
	if d.replaces != nil {
		replaces = p.replaces(d.replaces)
	}
	if d.unlimited {
		r.Unlimited = true
		if d.rateLimit != nil {
			p.errorf(d.unlimitedLine, "unlimited: true and rate_limit (line %d) on the same descriptor (allowed: one of them; envoyproxy's form is rate_limit: {unlimited: true})", d.rateLimitLine)
		}
	}
	if d.rateLimit != nil {
		rlReplaces := p.rateLimit(r, d.rateLimit)
		if rlReplaces != nil && d.replaces != nil {
			p.errorf(d.replacesLine, "replaces is given both here and in rate_limit (allowed: one list, preferably inside rate_limit as in envoyproxy)")
		}
		if rlReplaces != nil {
			replaces = rlReplaces
		}
	}
	if r.Name == "" {
		r.Name = fullKey
	}
	for _, rn := range replaces {
		if rn.name == r.Name {
			p.errorf(rn.line, "replaces names the rule itself (%q) (allowed: names of other rules of the domain)", rn.name)
			continue
		}
		r.Replaces = append(r.Replaces, rn.name)
	}
	if first, dup := p.fullKeys[fullKey]; dup {
		p.errorf(d.line, "descriptor key=%s value=%s has the same full key %q as key=%s value=%s at line %d (allowed: keys and values that keep full keys apart, e.g. without _ or . at their ends)",
			d.key, d.value, fullKey, first.key, first.value, first.line)
	} else {
		p.fullKeys[fullKey] = descAt{d.line, d.key, d.value}
	}
	p.rules = append(p.rules, ruleAt{r, replaces})
	return r
}

// rateLimit reads a rate_limit mapping into r and returns its replaces list
// (nil when it has none).
func (p *parser) rateLimit(r *Rule, m *yaml.Node) []nameAt {
	var unit, rpu, replaces *field
	fields := p.fields(m, rateLimitKeys, 0)
	unlimited := false
	for i := range fields {
		f := &fields[i]
		switch f.name {
		case "unit":
			unit = f
		case "requests_per_unit":
			rpu = f
		case "unlimited":
			unlimited = p.boolean(*f)
		case "name":
			r.Name, _ = p.str(*f, "name")
		case "replaces":
			replaces = f
		}
	}
	var names []nameAt
	if replaces != nil {
		names = p.replaces(replaces.val)
		if names == nil {
			names = []nameAt{} // given, even if empty
		}
	}
	if unlimited {
		r.Unlimited = true
		if unit != nil {
			p.errorf(unit.key.Line, "unit has no meaning when unlimited is true (allowed: unlimited: true alone, or unit and requests_per_unit; envoyproxy rejects both together too)")
		}
		if rpu != nil {
			p.warnf(rpu.key.Line, "requests_per_unit is ignored when unlimited is true")
		}
		return names
	}
	if r.Unlimited { // descriptor-level unlimited, already reported
		return names
	}

	if unit == nil {
		p.errorf(m.Line, "rate_limit has no unit (allowed: %s; or unlimited: true)", unitList)
	} else if u, ok := p.str(*unit, "unit"); ok {
		lu := strings.ToLower(u)
		if slices.Contains(units, lu) {
			r.Unit = lu
		} else {
			p.errorf(yamlnode.Deref(unit.val).Line, "unit %q is not one of %s", u, unitList)
		}
	}

	if rpu == nil {
		p.errorf(m.Line, "rate_limit has no requests_per_unit (allowed: an integer from 0 to %d; 0 refuses every request)", uint32(math.MaxUint32))
		return names
	}
	v := yamlnode.Deref(rpu.val)
	var n int64
	switch {
	case v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || v.Decode(&n) != nil:
		p.errorf(v.Line, "requests_per_unit is %s (allowed: an integer from 0 to %d)", yamlnode.KindName(v), uint32(math.MaxUint32))
	case n < 0:
		p.errorf(v.Line, "requests_per_unit %d is negative (allowed: an integer from 0 to %d)", n, uint32(math.MaxUint32))
	case n > math.MaxUint32:
		p.errorf(v.Line, "requests_per_unit %d is too large (allowed: an integer from 0 to %d)", n, uint32(math.MaxUint32))
	default:
		r.RequestsPerUnit = uint32(n)
	}
	return names
}

// replaces reads a replaces list.
func (p *parser) replaces(list *yaml.Node) []nameAt {
	list = yamlnode.Deref(list)
	if list.Kind == yaml.ScalarNode && list.ShortTag() == "!!null" {
		return nil
	}
	if list.Kind != yaml.SequenceNode {
		p.errorf(list.Line, "replaces is %s (allowed: a list of mappings such as - name: other_limit)", yamlnode.KindName(list))
		return nil
	}
	var names []nameAt
	for _, item := range list.Content {
		item = yamlnode.Deref(item)
		if item.Kind != yaml.MappingNode {
			p.errorf(item.Line, "a replaces entry is %s (allowed: a mapping such as name: other_limit)", yamlnode.KindName(item))
			continue
		}
		name := nameAt{line: item.Line}
		for _, f := range p.fields(item, replacesKeys, 0) {
			name.name, _ = p.str(f, "name")
			name.line = f.key.Line
		}
		if name.name == "" {
			p.errorf(name.line, "a replaces entry has no name (allowed: the name of another rate_limit of the domain)")
			continue
		}
		names = append(names, name)
	}
	return names
}

// checkReplaces warns about replaces naming no rule of the domain.
func (p *parser) checkReplaces() {
	names := map[string]bool{}
	for _, ra := range p.rules {
		names[ra.rule.Name] = true
	}
	for _, ra := range p.rules {
		for _, rn := range ra.replaces {
			if !names[rn.name] && rn.name != ra.rule.Name {
				p.warnf(rn.line, "replaces %q names no rule of domain %q, so it has no effect", rn.name, p.domain)
			}
		}
	}
}
