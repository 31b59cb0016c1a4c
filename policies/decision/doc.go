// Package decision is the Rego decision contract: the decision document a
// policy returns (allow, status, reason, consumer, plan, headers, limits,
// charge, ...), the limit and charge vocabulary that ext_authz decisions
// and the rate limit service's Rego limits share, and the opa-envoy-plugin
// result forms (a boolean, or an object with "allowed") that run
// unchanged. Parse validates a decision term and says which key is wrong
// and what is allowed; the adapters (authz, the RLS) carry decisions out.
package decision
