// Package rlsconfig reads rate limit configuration files written for
// envoyproxy/ratelimit and matches Envoy rate limit descriptors against them,
// so that those files run unchanged on Tollgate.
//
// A file holds one domain and a tree of descriptors:
//
//	domain: messaging
//	descriptors:
//	  - key: message_type
//	    value: marketing
//	    descriptors:
//	      - key: to_number          # no value: any value matches
//	        rate_limit: {unit: day, requests_per_unit: 5}
//	  - key: path
//	    value: "/api/*"             # trailing *: prefix match
//	    rate_limit: {unlimited: true}
//
// Load decodes files strictly (an unknown or misplaced key is an error with
// its file and line) and builds lookup maps once; Match walks them per
// request without allocating. A Config is immutable and safe for concurrent
// use, so a reload builds a new one and publishes it with one atomic swap.
package rlsconfig

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/tollgate-dev/tollgate/internal/yamlstrict"
)

// Rule is the limit of one descriptor of the configuration. Rules returned
// by Match are shared: callers must not modify them.
type Rule struct {
	// Name is rate_limit.name, or FullKey when the file gives no name. Other
	// rules name it in their replaces list.
	Name string
	// Unit is the lower-case unit: second, minute, hour, day, week, month or
	// year; empty for unlimited rules.
	Unit string
	// RequestsPerUnit is how many requests a unit allows (0 refuses all).
	RequestsPerUnit uint32
	// Unlimited rules allow every request without counting it.
	Unlimited bool
	// ShadowMode rules are counted and reported but never refuse.
	ShadowMode bool
	// DetailedMetric is envoyproxy's detailed_metric flag. envoyproxy names
	// the rule's statistics after the request's values when it is set;
	// Tollgate never puts descriptor values in metric labels, so it is only
	// reported here.
	DetailedMetric bool
	// Replaces lists the names of rules this one replaces when both match
	// the descriptors of one request (see ApplyReplaces).
	Replaces []string
	// FullKey names the rule in envoyproxy's style: the domain, then each
	// level's key or key_value, joined by dots ("messaging.message_type_
	// marketing.to_number"). It identifies the rule in metrics and logs.
	// It is not a counter key: a rule without a value counts each value
	// apart (see AppendCounterKey).
	FullKey string

	domain string
	// share holds, per level, the wildcard value ("files*") whose matching
	// values share one counter (share_threshold), or "".
	share []string
}

// Entry is one key and value of a request's descriptor.
type Entry struct{ Key, Value string }

// GetKey returns e.Key; with GetValue, it lets Entry satisfy KeyValue.
func (e Entry) GetKey() string { return e.Key }

// GetValue returns e.Value.
func (e Entry) GetValue() string { return e.Value }

// KeyValue is a descriptor entry. Entry satisfies it, and so does go-control-
// plane's *RateLimitDescriptor_Entry, which MatchEntries and AppendCounterKey
// therefore take without conversion.
type KeyValue interface {
	GetKey() string
	GetValue() string
}

// Config holds the domains of a set of files. The zero value has no domains.
type Config struct {
	domains  map[string]*node
	warnings Errors
}

// node is one level of a domain's descriptor tree.
type node struct {
	keys map[string]*keyNodes
	rule *Rule
}

// keyNodes are the descriptors of one key at one level.
type keyNodes struct {
	values    map[string]*node // by exact value
	wildcards []wildcard       // longest prefix first
	any       *node            // the descriptor without a value
}

type wildcard struct {
	prefix string // the value without its trailing '*'
	next   *node
}

// Error is a problem in a configuration file, at a line and column (0 when
// the YAML parser could not tell where).
type Error = yamlstrict.Error

// Errors is every problem of a set of files, sorted by file, line and
// column.
type Errors = yamlstrict.Errors

// Load reads configuration files, keyed by the name used in errors. Each file
// defines one domain; two files may not define the same domain (envoyproxy's
// MERGE_DOMAIN_CONFIG is not supported). All errors of all files are returned
// together (Errors), and then the Config is nil.
func Load(files map[string][]byte) (*Config, error) {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)

	c := &Config{domains: make(map[string]*node, len(files))}
	type origin struct {
		file string
		line int
	}
	seen := make(map[string]origin, len(files))
	var errs Errors
	for _, name := range names {
		f, ferrs, warns := parseFile(name, files[name])
		errs = append(errs, ferrs...)
		c.warnings = append(c.warnings, warns...)
		if f == nil || f.domain == "" {
			continue
		}
		if first, dup := seen[f.domain]; dup {
			errs = append(errs, &Error{File: name, Line: f.domainLine, Message: fmt.Sprintf(
				"domain %q is already defined in %s:%d; each domain must be in one file only",
				f.domain, first.file, first.line)})
			continue
		}
		seen[f.domain] = origin{name, f.domainLine}
		if len(ferrs) == 0 {
			c.domains[f.domain] = f.root
		}
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	c.warnings.Sort()
	return c, nil
}

// Warnings lists settings of the loaded files that have no effect but that
// envoyproxy/ratelimit accepts too (shadow_mode without a rate_limit, a
// replaces naming no rule, ...), sorted, for logging.
func (c *Config) Warnings() Errors { return c.warnings }

// Domains lists the loaded domains, sorted.
func (c *Config) Domains() []string {
	ds := make([]string, 0, len(c.domains))
	for d := range c.domains {
		ds = append(ds, d)
	}
	slices.Sort(ds)
	return ds
}

// HasDomain reports whether the configuration defines domain.
func (c *Config) HasDomain(domain string) bool {
	_, ok := c.domains[domain]
	return ok
}

// Match returns the rule of a request descriptor, or nil when none applies.
//
// As in envoyproxy/ratelimit, the entries walk the domain's tree one level
// each. At each level an entry takes the descriptor with its key and exact
// value, else the wildcard descriptor (value ending in '*') with its key whose
// prefix its value starts with (the longest such prefix), else the descriptor
// with its key and no value; there is no backtracking. The rule is the one of
// the descriptor the last entry reaches: a descriptor reached earlier or
// later, or one without rate_limit, gives nil. An unknown domain gives nil.
func (c *Config) Match(domain string, entries []Entry) *Rule {
	return MatchEntries(c, domain, entries)
}

// MatchEntries is Match for any entry type, such as go-control-plane's
// []*RateLimitDescriptor_Entry.
func MatchEntries[E KeyValue](c *Config, domain string, entries []E) *Rule {
	n := c.domains[domain]
	if n == nil {
		return nil
	}
	for _, e := range entries {
		if n = n.next(e.GetKey(), e.GetValue()); n == nil {
			return nil
		}
	}
	return n.rule
}

func (n *node) next(key, value string) *node {
	k := n.keys[key]
	if k == nil {
		return nil
	}
	if next := k.values[value]; next != nil {
		return next
	}
	for _, w := range k.wildcards {
		if strings.HasPrefix(value, w.prefix) {
			return w.next
		}
	}
	return k.any
}

// AppendCounterKey appends to dst the identity of the counter that a request
// descriptor matched by r counts against: the domain and every entry's key and
// value, as envoyproxy's cache keys are, so that a rule without a value
// counts each value apart. A value matched by a share_threshold wildcard is
// replaced by the wildcard, so that all such values share one counter. Each
// part is length-prefixed, so values holding separators cannot make two
// descriptors share a counter. The caller adds the window.
func AppendCounterKey[E KeyValue](dst []byte, r *Rule, entries []E) []byte {
	dst = appendPart(dst, r.domain)
	for i, e := range entries {
		dst = appendPart(dst, e.GetKey())
		if i < len(r.share) && r.share[i] != "" {
			dst = appendPart(dst, r.share[i])
		} else {
			dst = appendPart(dst, e.GetValue())
		}
	}
	return dst
}

func appendPart(dst []byte, s string) []byte {
	dst = strconv.AppendInt(dst, int64(len(s)), 10)
	dst = append(dst, ':')
	return append(dst, s...)
}

// ApplyReplaces sets to nil, in place, each rule that another rule of the
// same request replaces: rules holds the Match result of each descriptor of
// one request (nil where none matched). As in envoyproxy/ratelimit, every
// matched rule's replaces list counts, unlimited and replaced rules' too.
func ApplyReplaces(rules []*Rule) {
	// Decide for all before removing any: a replaced rule's list counts.
	var small [32]bool
	replaced := small[:]
	if len(rules) > len(small) {
		replaced = make([]bool, len(rules))
	}
	for i, r := range rules {
		if r == nil {
			continue
		}
		for _, o := range rules {
			if o != nil && slices.Contains(o.Replaces, r.Name) {
				replaced[i] = true
				break
			}
		}
	}
	for i := range rules {
		if replaced[i] {
			rules[i] = nil
		}
	}
}

// sortWildcards orders a level's wildcards longest prefix first.
func (n *node) sortWildcards() {
	for _, k := range n.keys {
		slices.SortStableFunc(k.wildcards, func(a, b wildcard) int {
			return cmp.Compare(len(b.prefix), len(a.prefix))
		})
	}
}
