package rlsconfig

import (
	"math"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tollgate-dev/tollgate/internal/yamlstrict"
)

// Limits that keep hostile or broken files (alias bombs, anchors that
// contain themselves) from taking unbounded time; the decoder bounds the
// keys and items read.
const (
	maxDepth       = 32     // nested descriptor levels
	maxDescriptors = 100000 // descriptors of a file, aliases expanded
)

// Keys allowed at each level, in the order messages list them.
var (
	rootKeys       = yamlstrict.NewKeys("domain", "descriptors")
	descriptorKeys = yamlstrict.NewKeys("key", "value", "rate_limit", "descriptors", "shadow_mode", "replaces",
		"detailed_metric", "unlimited", "value_to_metric", "share_threshold")
	rateLimitKeys = yamlstrict.NewKeys("unit", "requests_per_unit", "unlimited", "name", "replaces")
	replacesKeys  = yamlstrict.NewKeys("name")
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
	*yamlstrict.Decoder
	budget int // descriptors left to read
	domain string

	// Filled while reading descriptors, checked at the end.
	rules    []ruleAt
	fullKeys map[string]descAt // rule FullKey -> its descriptor
}

type ruleAt struct {
	rule     *Rule
	replaces []nameAt
}

// nameAt is a name of a replaces list and where it stands.
type nameAt struct {
	name string
	at   *yaml.Node
}

type descAt struct {
	line       int
	key, value string
}

// parseFile reads one file. The result is nil when the domain is unknown.
func parseFile(name string, data []byte) (*parsedFile, Errors, Errors) {
	p := &parser{Decoder: yamlstrict.NewDecoder(name), budget: maxDescriptors, fullKeys: map[string]descAt{}}
	p.Home = home
	p.YAML11Bools = true // as envoyproxy's YAML decoder
	f := p.parse(data)
	return f, p.Errors(), p.Warnings()
}

const rootAllowed = "a mapping with domain and descriptors"

func (p *parser) parse(data []byte) *parsedFile {
	root := p.Document(data, rootAllowed, false)
	if root == nil {
		return nil
	}
	f := &parsedFile{root: &node{}}
	var descs *yaml.Node
	at := root
	p.Mapping(root, "the file", rootKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "domain":
			f.domain, _ = p.String(v, key)
			f.domainLine, at = k.Line, k
		case "descriptors":
			descs = v
		}
	})
	if f.domain == "" {
		p.Errorf(at, "domain is missing (allowed: a non-empty name that Envoy's rate limit requests give as their domain)")
		return nil
	}
	p.domain = f.domain
	if descs != nil {
		p.descriptors(f.root, descs, f.domain, nil, 1)
	}
	p.checkReplaces()
	return f
}

// boolean reads a boolean; null reads as false, as in envoyproxy.
func (p *parser) boolean(v *yaml.Node, what string) bool {
	if yamlstrict.IsNull(v) {
		return false
	}
	b, _ := p.Bool(v, what)
	return b
}

// descriptor is one descriptor as read, before it joins the tree. The
// nodes are the keys of the settings given, for messages.
type descriptor struct {
	at                 *yaml.Node // the descriptor
	key, value         string
	keyAt              *yaml.Node
	rateLimit          *yaml.Node // mapping, or nil
	rateLimitAt        *yaml.Node
	children           *yaml.Node
	shadow, detailed   bool
	shadowAt, detailAt *yaml.Node
	unlimited          bool
	unlimitedAt        *yaml.Node
	replaces           *yaml.Node // the descriptor-level list
	replacesAt         *yaml.Node
	share              bool
	shareAt            *yaml.Node
}

const descriptorsAllowed = "a list of descriptors, each a mapping with key and optional value, rate_limit, descriptors"

// descriptors reads a list of descriptors into n. path is the FullKey of n;
// shares holds the share_threshold wildcard of each level above.
func (p *parser) descriptors(n *node, seq *yaml.Node, path string, shares []string, depth int) {
	items := p.List(seq, "descriptors", descriptorsAllowed)
	if len(items) > 0 && depth > maxDepth {
		p.Errorf(seq, "descriptors nest more than %d levels deep", maxDepth)
		return
	}
	type entryKey struct{ key, value string }
	seen := map[entryKey]int{} // line of each key and value at this level
	for _, item := range items {
		if p.Stopped() {
			return
		}
		if p.budget--; p.budget < 0 {
			p.Errorf(item, "more than %d descriptors (aliases expanded)", maxDescriptors)
			return
		}
		d, ok := p.readDescriptor(item)
		if !ok {
			continue
		}
		if d.key == "" {
			p.Errorf(d.keyAt, "descriptor has an empty key (allowed: the non-empty key of a descriptor entry, e.g. remote_address)")
			continue
		}
		ek := entryKey{d.key, d.value}
		if first, dup := seen[ek]; dup {
			if d.value == "" {
				p.Errorf(item, "duplicate descriptor key=%s with no value (first at line %d); a key and value may appear once per level", d.key, first)
			} else {
				p.Errorf(item, "duplicate descriptor key=%s value=%s (first at line %d); a key and value may appear once per level", d.key, d.value, first)
			}
			continue
		}
		seen[ek] = item.Line

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
				p.Errorf(d.shareAt, "share_threshold needs a wildcard value (allowed: on a descriptor whose value ends with *; value is %q)", d.value)
			}
		}
		childShares := append(slices.Clip(shares), levelShare)

		next := &node{rule: p.rule(d, fullKey, childShares)}
		if d.children != nil {
			p.descriptors(next, d.children, fullKey, childShares, depth+1)
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

func (p *parser) readDescriptor(m *yaml.Node) (descriptor, bool) {
	d := descriptor{at: m, keyAt: m}
	ok := p.Item(m, "a descriptor", descriptorKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "key":
			d.key, _ = p.String(v, key)
			d.keyAt = k
		case "value":
			d.value, _ = p.String(v, key)
		case "rate_limit":
			d.rateLimitAt = k
			switch {
			case v.Kind == yaml.MappingNode:
				d.rateLimit = v
			case yamlstrict.IsNull(v):
				p.Warnf(k, "rate_limit is empty, so the descriptor has no limit (as in envoyproxy); give unit and requests_per_unit, or unlimited: true")
			default:
				p.Errorf(v, "rate_limit is %s (allowed: a mapping with unit and requests_per_unit, or unlimited: true)", yamlstrict.KindName(v))
			}
		case "descriptors":
			d.children = v
		case "shadow_mode":
			d.shadow, d.shadowAt = p.boolean(v, key), k
		case "detailed_metric":
			d.detailed, d.detailAt = p.boolean(v, key), k
		case "unlimited":
			d.unlimited, d.unlimitedAt = p.boolean(v, key), k
		case "replaces":
			d.replaces, d.replacesAt = v, k
		case "value_to_metric":
			p.boolean(v, key) // names envoyproxy's statistics only; Tollgate's metrics never carry values
		case "share_threshold":
			d.share, d.shareAt = p.boolean(v, key), k
		}
	})
	return d, ok
}

// rule builds the rule of a descriptor, or returns nil when it has none.
func (p *parser) rule(d descriptor, fullKey string, shares []string) *Rule {
	if d.rateLimit == nil && !d.unlimited {
		if d.shadow {
			p.Warnf(d.shadowAt, "shadow_mode has no effect without a rate_limit on the same descriptor (it is not inherited by nested descriptors)")
		}
		if d.detailed {
			p.Warnf(d.detailAt, "detailed_metric has no effect without a rate_limit on the same descriptor")
		}
		if d.replaces != nil {
			p.Errorf(d.replacesAt, "replaces needs a rate_limit on the same descriptor (allowed: replaces in a descriptor with rate_limit, or inside rate_limit)")
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
			p.Errorf(d.unlimitedAt, "unlimited: true and rate_limit (line %d) on the same descriptor (allowed: one of them; envoyproxy's form is rate_limit: {unlimited: true})", d.rateLimitAt.Line)
		}
	}
	if d.rateLimit != nil {
		rlReplaces := p.rateLimit(r, d.rateLimit)
		if rlReplaces != nil && d.replaces != nil {
			p.Errorf(d.replacesAt, "replaces is given both here and in rate_limit (allowed: one list, preferably inside rate_limit as in envoyproxy)")
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
			p.Errorf(rn.at, "replaces names the rule itself (%q) (allowed: names of other rules of the domain)", rn.name)
			continue
		}
		r.Replaces = append(r.Replaces, rn.name)
	}
	if first, dup := p.fullKeys[fullKey]; dup {
		p.Errorf(d.at, "descriptor key=%s value=%s has the same full key %q as key=%s value=%s at line %d (allowed: keys and values that keep full keys apart, e.g. without _ or . at their ends)",
			d.key, d.value, fullKey, first.key, first.value, first.line)
	} else {
		p.fullKeys[fullKey] = descAt{d.at.Line, d.key, d.value}
	}
	p.rules = append(p.rules, ruleAt{r, replaces})
	return r
}

// rateLimit reads a rate_limit mapping into r and returns its replaces list
// (nil when it has none).
func (p *parser) rateLimit(r *Rule, m *yaml.Node) []nameAt {
	var unitK, unitV, rpuK, rpuV, replaces *yaml.Node
	unlimited := false
	p.Mapping(m, "rate_limit", rateLimitKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "unit":
			unitK, unitV = k, v
		case "requests_per_unit":
			rpuK, rpuV = k, v
		case "unlimited":
			unlimited = p.boolean(v, key)
		case "name":
			r.Name, _ = p.String(v, key)
		case "replaces":
			replaces = v
		}
	})
	var names []nameAt
	if replaces != nil {
		names = p.replaces(replaces)
		if names == nil {
			names = []nameAt{} // given, even if empty
		}
	}
	if unlimited {
		r.Unlimited = true
		if unitK != nil {
			p.Errorf(unitK, "unit has no meaning when unlimited is true (allowed: unlimited: true alone, or unit and requests_per_unit; envoyproxy rejects both together too)")
		}
		if rpuK != nil {
			p.Warnf(rpuK, "requests_per_unit is ignored when unlimited is true")
		}
		return names
	}
	if r.Unlimited { // descriptor-level unlimited, already reported
		return names
	}

	if unitV == nil {
		p.Errorf(m, "rate_limit has no unit (allowed: %s; or unlimited: true)", unitList)
	} else if u, ok := p.String(unitV, "unit"); ok {
		lu := strings.ToLower(u)
		if slices.Contains(units, lu) {
			r.Unit = lu
		} else {
			p.Errorf(unitV, "unit %q is not one of %s%s", u, unitList, yamlstrict.Hint(lu, units))
		}
	}

	if rpuV == nil {
		p.Errorf(m, "rate_limit has no requests_per_unit (allowed: a whole number from 0 to %d; 0 refuses every request)", uint32(math.MaxUint32))
		return names
	}
	if n, ok := p.Uint32(rpuV, "requests_per_unit", 0, math.MaxUint32); ok {
		r.RequestsPerUnit = n
	}
	return names
}

// replaces reads a replaces list.
func (p *parser) replaces(list *yaml.Node) []nameAt {
	var names []nameAt
	for _, item := range p.List(list, "replaces", "a list of mappings such as - name: other_limit") {
		name := nameAt{at: item}
		ok := p.Item(item, "a replaces entry", replacesKeys, func(key string, k, v *yaml.Node) {
			name.name, _ = p.String(v, key)
			name.at = k
		})
		if !ok {
			continue
		}
		if name.name == "" {
			p.Errorf(name.at, "a replaces entry has no name (allowed: the name of another rate_limit of the domain)")
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
				p.Warnf(rn.at, "replaces %q names no rule of domain %q, so it has no effect", rn.name, p.domain)
			}
		}
	}
}
