// Package wire is Tollgate's vocabulary on the wire, shared by every
// adapter: the x-tollgate-* headers it sets for the upstream (one exhaustive
// list, so what ext_authz may set is exactly what the xDS routes and the
// Envoy configs strip from a client's request), and the RFC 9457 problem
// document of every denial and API error (ext_authz, RLS, admin API, CLI).
package wire

import "strings"

// HeaderPrefix marks the headers only Tollgate sets for the upstream.
const HeaderPrefix = "x-tollgate-"

// The x-tollgate-* headers Tollgate sets for the upstream.
const (
	// HeaderConsumer is the consumer the policy identified.
	HeaderConsumer = HeaderPrefix + "consumer"
	// HeaderPlan is the consumer's plan.
	HeaderPlan = HeaderPrefix + "plan"
	// HeaderBalance is the prepaid balance after this request's charge.
	HeaderBalance = HeaderPrefix + "balance"
	// HeaderDegraded says the limits were not enforced (store unreachable,
	// failing open).
	HeaderDegraded = HeaderPrefix + "degraded"
)

// headers is every x-tollgate-* header.
var headers = [...]string{HeaderConsumer, HeaderPlan, HeaderBalance, HeaderDegraded}

// Headers returns every x-tollgate-* header Tollgate may set. Envoy
// removes request headers by exact name, so a config that strips a
// client's forged headers lists exactly these.
func Headers() []string { return append([]string(nil), headers[:]...) }

// HasPrefix reports whether name starts with x-tollgate-, in any case.
func HasPrefix(name string) bool {
	return len(name) >= len(HeaderPrefix) && strings.EqualFold(name[:len(HeaderPrefix)], HeaderPrefix)
}

// IsHeader reports whether name (lower case) is one of Headers.
func IsHeader(name string) bool {
	for _, h := range headers {
		if h == name {
			return true
		}
	}
	return false
}
