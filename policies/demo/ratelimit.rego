# Plan-aware limits for Envoy's rate limit filter.
#
# With `ratelimit.decision: tollgate/ratelimit`, Tollgate's rate limit
# service evaluates this rule with input.domain and input.descriptors and
# applies, to each descriptor, the limits returned at its index. A
# descriptor that carries a plan (the x-tollgate-plan header, set by
# ext_authz) gets that plan's limits from data.demo.plans; their counters
# are keyed by the descriptor's entries (so per consumer and plan).
package tollgate

ratelimit := [plan_limits(d) | some d in input.descriptors]

plan_limits(d) := limits if {
	limits := data.demo.plans[d.entries_map.plan].limits
} else := null
