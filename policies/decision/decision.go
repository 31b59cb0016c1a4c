package decision

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tollgate-dev/tollgate/internal/wire"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

// Decision is a policy's answer, in either of the forms Tollgate accepts:
// its own decision document, or an opa-envoy-plugin result (a boolean, or an
// object with "allowed").
type Decision struct {
	Allow bool
	// Status is the HTTP status of a denial.
	Status   int
	Reason   string
	Detail   string
	Consumer string
	Plan     string
	// Headers go to the upstream on allow.
	Headers []Header
	// ResponseHeaders go to the client, on allow and on deny.
	ResponseHeaders []Header
	// RemoveHeaders are request headers to remove before the upstream.
	RemoveHeaders []string
	// Body, when set, replaces the problem+json body of a denial.
	Body *string
	// Payment holds payment details for a 402 body (url, upgrade_url, ...).
	Payment         map[string]string
	DynamicMetadata *structpb.Struct
	Limits          []ratelimit.Limit
	Charge          *ratelimit.Charge

	// Set by the limit engine.
	Outcome *ratelimit.Outcome
	Limit   string // the limit that denied
	Balance *int64 // the balance, when the charge could not be paid
}

// Header is one header to add. Append adds a value instead of replacing
// (opa-envoy-plugin's list-valued headers).
type Header struct {
	Key, Value string
	Append     bool
}

var tollgateKeys = []string{"allow", "status", "reason", "detail", "consumer", "plan", "headers",
	"response_headers", "request_headers_to_remove", "body", "payment", "dynamic_metadata", "limits", "charge"}

// Parse validates a decision term. A denial without a status gets
// defaultStatus. Errors say which key is wrong and what is allowed.
func Parse(t *ast.Term, defaultStatus int) (*Decision, error) {
	switch v := t.Value.(type) {
	case ast.Boolean:
		d := &Decision{Allow: bool(v)}
		if !d.Allow {
			d.Status = defaultStatus
		}
		return d, nil
	case ast.Object:
		if v.Get(ast.InternedTerm("allowed")) != nil {
			return parseEnvoy(v, defaultStatus)
		}
		if v.Get(ast.InternedTerm("allow")) != nil {
			return parseTollgate(v, defaultStatus)
		}
		return nil, errors.New(`decision object has neither "allow" (Tollgate decision) nor "allowed" (opa-envoy-plugin result)`)
	}
	return nil, fmt.Errorf("decision is %s %s, want a boolean or an object with \"allow\"", ast.ValueName(t.Value), truncate(t.String()))
}

func parseTollgate(obj ast.Object, defaultStatus int) (*Decision, error) {
	d := &Decision{}
	err := fields(obj, func(key string, v *ast.Term) (err error) {
		switch key {
		case "allow":
			d.Allow, err = asBool(v)
		case "status":
			d.Status, err = asStatus(v)
		case "reason":
			d.Reason, err = asString(v)
		case "detail":
			d.Detail, err = asString(v)
		case "consumer":
			d.Consumer, err = asString(v)
		case "plan":
			d.Plan, err = asString(v)
		case "headers":
			d.Headers, err = asHeaders(v)
		case "response_headers":
			d.ResponseHeaders, err = asHeaders(v)
		case "request_headers_to_remove":
			d.RemoveHeaders, err = asHeaderNames(v)
		case "body":
			var s string
			s, err = asString(v)
			d.Body = &s
		case "payment":
			d.Payment, err = asStringMap(v)
		case "dynamic_metadata":
			d.DynamicMetadata, err = asStruct(v)
		case "limits":
			d.Limits, err = asLimits(v)
		case "charge":
			if v.Value.Compare(ast.NullValue) != 0 { // null: no charge
				d.Charge, err = asCharge(v)
			}
		default:
			err = fmt.Errorf("unknown key (allowed: %s)", strings.Join(tollgateKeys, ", "))
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := checkUpstreamHeaders(d); err != nil {
		return nil, err
	}
	// A limit's key and the charge's account default to the consumer, so
	// a plan's limits can come straight from data.
	for i := range d.Limits {
		if d.Limits[i].Key == "" {
			if d.Consumer == "" {
				return nil, fmt.Errorf("limits[%d]: limit %q: \"key\" is required when the decision names no consumer", i, d.Limits[i].Name)
			}
			d.Limits[i].Key = d.Consumer
		}
	}
	if d.Charge != nil {
		if d.Charge.Account == "" {
			if d.Consumer == "" {
				return nil, errors.New(`charge: "account" is required when the decision names no consumer`)
			}
			d.Charge.Account = d.Consumer
		}
		if err := d.Charge.Validate(); err != nil {
			return nil, fmt.Errorf("charge: %w", err)
		}
	}
	if !d.Allow && d.Status == 0 {
		d.Status = defaultStatus
	}
	return d, nil
}

func parseEnvoy(obj ast.Object, defaultStatus int) (*Decision, error) {
	d := &Decision{}
	err := fields(obj, func(key string, v *ast.Term) (err error) {
		switch key {
		case "allowed":
			d.Allow, err = asBool(v)
		case "http_status":
			d.Status, err = asStatus(v)
		case "headers":
			d.Headers, err = asHeaders(v)
		case "response_headers_to_add":
			d.ResponseHeaders, err = asHeaders(v)
		case "request_headers_to_remove":
			d.RemoveHeaders, err = asHeaderNames(v)
		case "body":
			var s string
			s, err = asString(v)
			d.Body = &s
		case "dynamic_metadata":
			d.DynamicMetadata, err = asStruct(v)
		default:
			// opa-envoy-plugin ignores keys it does not know; so do we,
			// so that its policies run unchanged.
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := checkUpstreamHeaders(d); err != nil {
		return nil, err
	}
	if !d.Allow {
		// A denial from an opa-envoy-plugin policy keeps its headers as
		// response headers, as opa-envoy-plugin sends them to the client.
		d.ResponseHeaders = append(d.Headers, d.ResponseHeaders...)
		d.Headers = nil
		if d.Status == 0 {
			d.Status = defaultStatus
		}
	}
	return d, nil
}

func asBool(t *ast.Term) (bool, error) {
	b, ok := t.Value.(ast.Boolean)
	if !ok {
		return false, fmt.Errorf("want true or false, got %s", truncate(t.String()))
	}
	return bool(b), nil
}

func asString(t *ast.Term) (string, error) {
	s, ok := t.Value.(ast.String)
	if !ok {
		return "", fmt.Errorf("want a string, got %s", truncate(t.String()))
	}
	return string(s), nil
}

func asInt(t *ast.Term) (int64, error) {
	n, ok := t.Value.(ast.Number)
	if !ok {
		return 0, fmt.Errorf("want an integer, got %s", truncate(t.String()))
	}
	i, ok := n.Int64()
	if !ok {
		return 0, fmt.Errorf("want an integer, got %s", n)
	}
	return i, nil
}

// asStatus accepts the HTTP statuses Envoy's denied response can carry.
func asStatus(t *ast.Term) (int, error) {
	i, err := asInt(t)
	if err != nil {
		return 0, err
	}
	if _, ok := typev3.StatusCode_name[int32(i)]; !ok || i < 200 || i > 599 || int64(int32(i)) != i {
		return 0, fmt.Errorf("%d is not an HTTP status Envoy can send (allowed: 200-599 as listed in envoy.type.v3.StatusCode)", i)
	}
	return int(i), nil
}

// asHeaders reads {"name": "value"} or opa-envoy-plugin's
// {"name": ["v1", "v2"]}, sorted by lower-cased name for stable responses.
func asHeaders(t *ast.Term) ([]Header, error) {
	obj, ok := t.Value.(ast.Object)
	if !ok {
		return nil, fmt.Errorf("want an object of header names to values, got %s", truncate(t.String()))
	}
	keys := obj.Keys()
	slices.SortFunc(keys, func(a, b *ast.Term) int {
		as, _ := a.Value.(ast.String)
		bs, _ := b.Value.(ast.String)
		return cmp.Or(strings.Compare(strings.ToLower(string(as)), strings.ToLower(string(bs))), a.Value.Compare(b.Value))
	})
	out := make([]Header, 0, len(keys))
	for _, k := range keys {
		name, err := headerName(k)
		if err != nil {
			return nil, err
		}
		switch v := obj.Get(k).Value.(type) {
		case ast.String:
			if err := headerValue(name, string(v)); err != nil {
				return nil, err
			}
			out = append(out, Header{Key: name, Value: string(v)})
		case *ast.Array:
			for i := range v.Len() {
				s, ok := v.Elem(i).Value.(ast.String)
				if !ok {
					return nil, fmt.Errorf("header %q: want string values, got %s", name, truncate(v.Elem(i).String()))
				}
				if err := headerValue(name, string(s)); err != nil {
					return nil, err
				}
				out = append(out, Header{Key: name, Value: string(s), Append: i > 0})
			}
		default:
			return nil, fmt.Errorf("header %q: want a string or a list of strings, got %s", name, truncate(obj.Get(k).String()))
		}
	}
	return out, nil
}

// checkUpstreamHeaders checks the headers an allow sends upstream: of the
// x-tollgate-* names, only wire.Headers may be set, since Envoy removes a
// client's forged copies by exact name and any other could be forged. A
// denial's headers go to the client (or nowhere) and may use any name.
func checkUpstreamHeaders(d *Decision) error {
	if !d.Allow {
		return nil
	}
	for _, h := range d.Headers {
		if wire.HasPrefix(h.Key) && !wire.IsHeader(h.Key) {
			return fmt.Errorf("headers: header %q: the x-tollgate- prefix is Tollgate's (allowed: %s)", h.Key, strings.Join(wire.Headers(), ", "))
		}
	}
	return nil
}

func asHeaderNames(t *ast.Term) ([]string, error) {
	terms, ok := elems(t)
	if !ok {
		return nil, fmt.Errorf("want a list of header names, got %s", truncate(t.String()))
	}
	out := make([]string, 0, len(terms))
	for _, e := range terms {
		name, err := headerName(e)
		if err != nil {
			return nil, err
		}
		out = append(out, name)
	}
	return out, nil
}

// headerName checks a header name is an RFC 9110 token and lower-cases it
// (Envoy's header maps are lower-case).
func headerName(t *ast.Term) (string, error) {
	s, ok := t.Value.(ast.String)
	if !ok || len(s) == 0 {
		return "", fmt.Errorf("header name %s is not a non-empty string", truncate(t.String()))
	}
	for i := range len(s) {
		if !isTchar(s[i]) {
			return "", fmt.Errorf("header name %q has the invalid character %q (allowed: letters, digits and !#$%%&'*+-.^_`|~)", string(s), s[i])
		}
	}
	return strings.ToLower(string(s)), nil
}

func headerValue(name, v string) error {
	if strings.ContainsAny(v, "\r\n\x00") {
		return fmt.Errorf("header %q: value contains CR, LF or NUL", name)
	}
	return nil
}

func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func asStringMap(t *ast.Term) (map[string]string, error) {
	obj, ok := t.Value.(ast.Object)
	if !ok {
		return nil, fmt.Errorf("want an object of strings, got %s", truncate(t.String()))
	}
	out := make(map[string]string, obj.Len())
	var err error
	obj.Foreach(func(k, v *ast.Term) {
		ks, ok1 := k.Value.(ast.String)
		vs, ok2 := v.Value.(ast.String)
		if (!ok1 || !ok2) && err == nil {
			err = fmt.Errorf("want string keys and values, got %s: %s", k, truncate(v.String()))
			return
		}
		out[string(ks)] = string(vs)
	})
	return out, err
}

func asStruct(t *ast.Term) (*structpb.Struct, error) {
	if _, ok := t.Value.(ast.Object); !ok {
		return nil, fmt.Errorf("want an object, got %s", truncate(t.String()))
	}
	x, err := ast.JSON(t.Value)
	if err != nil {
		return nil, err
	}
	m, _ := x.(map[string]any)
	s, err := structpb.NewStruct(m)
	if err != nil {
		return nil, err
	}
	return s, nil
}

var limitKeys = "name, key, limit, window, period, timezone, burst, cost, on_exceed, overage, failure_mode"

// ParseLimits reads a list of limits in the decision document's vocabulary
// (name, key, limit, window or period, timezone, burst, cost, on_exceed,
// overage, failure_mode). The rate limit service's Rego source uses it too.
func ParseLimits(t *ast.Term) ([]ratelimit.Limit, error) { return asLimits(t) }

func asLimits(t *ast.Term) ([]ratelimit.Limit, error) {
	list, ok := elems(t)
	if !ok {
		return nil, fmt.Errorf("want a list of limit objects, got %s", truncate(t.String()))
	}
	out := make([]ratelimit.Limit, 0, len(list))
	names := make(map[string]bool, len(list))
	for i, e := range list {
		l, err := asLimit(e)
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		if names[l.Name] {
			return nil, fmt.Errorf("[%d]: name %q is used by two limits", i, l.Name)
		}
		names[l.Name] = true
		out = append(out, l)
	}
	return out, nil
}

func asLimit(t *ast.Term) (ratelimit.Limit, error) {
	var l ratelimit.Limit
	obj, ok := t.Value.(ast.Object)
	if !ok {
		return l, fmt.Errorf("want an object with %s; got %s", limitKeys, truncate(t.String()))
	}
	var tz string
	failureMode := "open" // limits fail open by default
	err := fields(obj, func(key string, v *ast.Term) (err error) {
		switch key {
		case "name":
			l.Name, err = asString(v)
		case "key":
			l.Key, err = asString(v)
		case "limit":
			l.Limit, err = asInt(v)
		case "window":
			var s string
			if s, err = asString(v); err == nil {
				l.Window, err = time.ParseDuration(s)
				if err == nil && l.Window <= 0 {
					err = fmt.Errorf("%q must be positive", s)
				}
			}
		case "period":
			var s string
			if s, err = asString(v); err == nil {
				l.Period, err = ratelimit.ParsePeriod(s)
			}
		case "timezone":
			tz, err = asString(v)
		case "burst":
			l.Burst, err = asInt(v)
		case "cost":
			l.Cost, err = asInt(v)
		case "on_exceed":
			l.OnExceed, err = asStatus(v)
		case "overage":
			l.Overage, err = asBool(v)
		case "failure_mode":
			failureMode, err = asFailureMode(v)
		default:
			err = fmt.Errorf("unknown key (allowed: %s)", limitKeys)
		}
		return err
	})
	if err != nil {
		return l, err
	}
	if tz != "" {
		if l.Period == "" {
			return l, fmt.Errorf("limit %q: \"timezone\" applies to period quotas only", l.Name)
		}
		loc, err := location(tz)
		if err != nil {
			return l, fmt.Errorf("limit %q: timezone %q is not an IANA time zone such as \"Europe/Berlin\"", l.Name, tz)
		}
		l.Location = loc
	}
	if err := l.Validate(); err != nil {
		return l, err
	}
	l.FailOpen = failureMode == "open"
	if l.Cost == 0 {
		l.Cost = 1
	}
	if l.OnExceed == 0 {
		l.OnExceed = 429
		if l.Period != "" {
			l.OnExceed = 402
		}
	}
	return l, nil
}

var locations sync.Map // string -> *time.Location

// location caches time zones: loading one reads the zoneinfo database.
func location(name string) (*time.Location, error) {
	if l, ok := locations.Load(name); ok {
		return l.(*time.Location), nil
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	locations.Store(name, l)
	return l, nil
}

func asCharge(t *ast.Term) (*ratelimit.Charge, error) {
	obj, ok := t.Value.(ast.Object)
	if !ok {
		return nil, fmt.Errorf("want an object with account, credits, overdraft, settle; got %s", truncate(t.String()))
	}
	c := &ratelimit.Charge{}
	failureMode := "closed" // money is never given away: charges fail closed by default
	err := fields(obj, func(key string, v *ast.Term) (err error) {
		switch key {
		case "account":
			c.Account, err = asString(v)
		case "credits":
			c.Credits, err = asInt(v)
		case "overdraft":
			c.Overdraft, err = asInt(v)
		case "overage_only":
			c.OverageOnly, err = asBool(v)
		case "failure_mode":
			failureMode, err = asFailureMode(v)
		case "settle":
			var s string
			if s, err = asString(v); err == nil {
				c.Settle = ratelimit.Settle(s)
			}
		default:
			err = errors.New("unknown key (allowed: account, credits, overdraft, overage_only, failure_mode, settle)")
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	c.FailOpen = failureMode == "open"
	return c, nil
}

// fields calls fn for each member of obj and joins the errors it returns,
// each prefixed with its key, so one decision reports every mistake.
func fields(obj ast.Object, fn func(key string, v *ast.Term) error) error {
	var errs []error
	obj.Foreach(func(k, v *ast.Term) {
		key, ok := k.Value.(ast.String)
		if !ok {
			errs = append(errs, fmt.Errorf("key %s is not a string", k))
			return
		}
		if err := fn(string(key), v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", string(key), err))
		}
	})
	return errors.Join(errs...)
}

// elems returns the elements of an array, or of a set in sorted order.
func elems(t *ast.Term) ([]*ast.Term, bool) {
	var arr *ast.Array
	switch v := t.Value.(type) {
	case *ast.Array:
		arr = v
	case ast.Set:
		arr = v.Sorted()
	default:
		return nil, false
	}
	out := make([]*ast.Term, arr.Len())
	for i := range out {
		out[i] = arr.Elem(i)
	}
	return out, true
}

func asFailureMode(t *ast.Term) (string, error) {
	s, err := asString(t)
	if err == nil && s != "open" && s != "closed" {
		err = fmt.Errorf("%q is not a failure mode (allowed: open, closed)", s)
	}
	return s, err
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}
