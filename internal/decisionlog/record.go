package decisionlog

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"

	"github.com/tollgate-dev/tollgate/ratelimit"
)

// Services that write records.
const (
	ServiceAuthz     = "authz"     // envoy.service.auth.v3.Authorization/Check
	ServiceRateLimit = "ratelimit" // envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit
)

// Record is one decision. The request's goroutine fills it with values and
// references only (the request's header map, the decision's limits and
// outcome), nothing copied or encoded; nothing may change what it refers
// to once it is logged. The Logger masks it before a sink sees it, and a
// sink reads it from one goroutine.
type Record struct {
	// ID identifies the record (set by the Logger): unique per process
	// start, a key for a database sink.
	ID      string
	Service string
	// RequestID is Envoy's x-request-id (ext_authz); the RLS request
	// carries none, so it is the caller's x-request-id gRPC metadata
	// when there is one.
	RequestID string
	Time      time.Time
	Latency   time.Duration
	// Revision is the policy revision in force (set by the Logger).
	Revision string

	// ext_authz requests. Path has no query string nor fragment (SetPath).
	Method, Host, Path string
	// Headers are the request's headers; Authorization, cookies, API keys
	// and the configured names are masked, and the query string is cut
	// from :path, before any sink sees them.
	Headers map[string]string
	// RLS requests.
	Domain      string
	Descriptors []*ratelimitv3.RateLimitDescriptor

	Consumer, Plan string
	Allow          bool
	// Status is the HTTP status of the answer (200 when allowed); 0 when
	// the answer was a gRPC error (Reason says which).
	Status int
	Reason string
	// Limit is the limit that denied.
	Limit   string
	Limits  []ratelimit.Limit
	Outcome *ratelimit.Outcome // the limits' states and the charge, when the limits were applied
	Charge  *ratelimit.Charge
	Balance *int64 // the balance that could not pay, without an outcome
}

// SetPath sets Path to p without its query string and fragment, which may
// hold credentials (?api_key=...). It does not allocate.
func (r *Record) SetPath(p string) {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	r.Path = p
}

// Masked is the value written in place of a masked header or descriptor
// entry.
const Masked = "[masked]"

// DefaultMask lists the header names and descriptor keys always masked.
var DefaultMask = []string{"authorization", "proxy-authorization", "cookie", "set-cookie",
	"x-api-key", "api-key", "api_key", "apikey", "x-auth-token"}

// pathHeaders hold the request path, query string included: it is cut.
var pathHeaders = map[string]bool{":path": true, "x-envoy-original-path": true}

// mask replaces the values of masked headers and descriptor entries with
// Masked, and cuts the query string from the path headers, in copies: the
// request's own map and descriptors are left alone.
func (r *Record) mask(names map[string]bool) {
	for k := range r.Headers {
		if k = strings.ToLower(k); names[k] || pathHeaders[k] {
			m := make(map[string]string, len(r.Headers))
			for k, v := range r.Headers {
				switch lk := strings.ToLower(k); {
				case names[lk]:
					v = Masked
				case pathHeaders[lk]:
					if i := strings.IndexAny(v, "?#"); i >= 0 {
						v = v[:i]
					}
				}
				m[k] = v
			}
			r.Headers = m
			break
		}
	}
	for i, d := range r.Descriptors {
		for _, e := range d.GetEntries() {
			if names[strings.ToLower(e.GetKey())] {
				r.Descriptors = maskDescriptors(r.Descriptors, i, names)
				return
			}
		}
	}
}

// maskDescriptors copies ds from index i on, masking the entries names
// lists; only keys and values are kept (a record writes nothing else).
func maskDescriptors(ds []*ratelimitv3.RateLimitDescriptor, from int, names map[string]bool) []*ratelimitv3.RateLimitDescriptor {
	out := append([]*ratelimitv3.RateLimitDescriptor(nil), ds...)
	for i := from; i < len(out); i++ {
		d := &ratelimitv3.RateLimitDescriptor{Entries: make([]*ratelimitv3.RateLimitDescriptor_Entry, len(out[i].GetEntries()))}
		for j, e := range out[i].GetEntries() {
			v := e.GetValue()
			if names[strings.ToLower(e.GetKey())] {
				v = Masked
			}
			d.Entries[j] = &ratelimitv3.RateLimitDescriptor_Entry{Key: e.GetKey(), Value: v}
		}
		out[i] = d
	}
	return out
}

// Document is a record as written: the JSON shape of the README, with
// masked values. Sinks that store fields apart (a database) read it; tests
// decode lines into it.
type (
	Document struct {
		ID        string      `json:"decision_id"`
		Service   string      `json:"service"`
		RequestID string      `json:"request_id,omitempty"`
		Time      string      `json:"time"` // RFC 3339, UTC, nanoseconds
		LatencyUS int64       `json:"latency_us"`
		Revision  string      `json:"revision,omitempty"`
		Consumer  string      `json:"consumer,omitempty"`
		Plan      string      `json:"plan,omitempty"`
		Request   DocRequest  `json:"request"`
		Decision  DocDecision `json:"decision"`
	}
	DocRequest struct {
		Method      string            `json:"method,omitempty"`
		Host        string            `json:"host,omitempty"`
		Path        string            `json:"path,omitempty"`
		Headers     map[string]string `json:"headers,omitempty"`
		Domain      string            `json:"domain,omitempty"`
		Descriptors [][]DocEntry      `json:"descriptors,omitempty"`
	}
	DocEntry struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	}
	DocDecision struct {
		Allow  bool       `json:"allow"`
		Status int        `json:"status,omitempty"`
		Reason string     `json:"reason,omitempty"`
		Limit  string     `json:"limit,omitempty"`
		Limits []DocLimit `json:"limits,omitempty"`
		Charge *DocCharge `json:"charge,omitempty"`
	}
	// DocLimit is a limit and its state once applied; never its counter
	// key, which may hold descriptor values (an API key from a header).
	DocLimit struct {
		Name      string `json:"name"`
		Limit     int64  `json:"limit"`
		Window    string `json:"window,omitempty"`
		Period    string `json:"period,omitempty"`
		Cost      int64  `json:"cost"`
		Shadow    bool   `json:"shadow,omitempty"`
		Remaining *int64 `json:"remaining,omitempty"`
		ResetMS   *int64 `json:"reset_ms,omitempty"`
		Exceeded  bool   `json:"exceeded,omitempty"`
		Overage   bool   `json:"overage,omitempty"`
	}
	DocCharge struct {
		// ID is the request's id in the ledger (its entries' request_id).
		ID      string `json:"id,omitempty"`
		Account string `json:"account"`
		Credits int64  `json:"credits"`
		Charged *int64 `json:"charged,omitempty"`
		Balance *int64 `json:"balance,omitempty"`
	}
)

// MarshalJSON encodes the record's Document as one JSON object. Sinks
// call it off the request path.
func (r *Record) MarshalJSON() ([]byte, error) {
	doc := r.Document()
	return json.Marshal(&doc)
}

// Document is the record as written. Sinks call it off the request path.
func (r *Record) Document() Document {
	doc := Document{
		ID: r.ID, Service: r.Service, RequestID: r.RequestID,
		Time:      r.Time.UTC().Format(time.RFC3339Nano),
		LatencyUS: r.Latency.Microseconds(),
		Revision:  r.Revision, Consumer: r.Consumer, Plan: r.Plan,
		Request:  DocRequest{Method: r.Method, Host: r.Host, Path: r.Path, Headers: r.Headers, Domain: r.Domain},
		Decision: DocDecision{Allow: r.Allow, Status: r.Status, Reason: r.Reason, Limit: r.Limit},
	}
	for _, d := range r.Descriptors {
		es := make([]DocEntry, len(d.GetEntries()))
		for i, e := range d.GetEntries() {
			es[i] = DocEntry{Key: e.GetKey(), Value: e.GetValue()}
		}
		doc.Request.Descriptors = append(doc.Request.Descriptors, es)
	}
	out := r.Outcome
	if out != nil && out.Degraded {
		out = nil
	}
	for i := range r.Limits {
		l := &r.Limits[i]
		dl := DocLimit{Name: l.Name, Limit: l.Limit, Period: string(l.Period), Cost: l.Cost, Shadow: l.Shadow}
		if l.Window > 0 {
			dl.Window = l.Window.String()
		}
		if out != nil && i < len(out.Limits) {
			st := &out.Limits[i]
			rem, reset := st.Remaining, st.Reset.Milliseconds()
			dl.Remaining, dl.ResetMS, dl.Exceeded, dl.Overage = &rem, &reset, st.Exceeded, st.Overage
		}
		doc.Decision.Limits = append(doc.Decision.Limits, dl)
	}
	if c := r.Charge; c != nil {
		dc := &DocCharge{Account: c.Account, Credits: c.Credits}
		switch {
		case out != nil:
			charged, balance := out.Charged, out.Balance
			dc.ID, dc.Charged, dc.Balance = out.ChargeID, &charged, &balance
		case r.Balance != nil:
			balance := *r.Balance
			dc.Balance = &balance
		}
		doc.Decision.Charge = dc
	}
	return doc
}

// appendID is the decision id of the n-th record of a process: its random
// prefix, a dash, n.
func appendID(prefix string, n uint64) string {
	return prefix + "-" + strconv.FormatUint(n, 10)
}
