# The demo policy (policies/demo/tollgate.rego) with its consumers in the
# key directory instead of data.demo.keys and data.demo.consumers: the
# consumer is input.tollgate.consumer, resolved by Tollgate before the
# policy runs. Plans stay in data.demo.plans. For BenchmarkCheckDirectory,
# next to BenchmarkCheck.
package tollgate

# The consumer, its plan and the route prefix it matched; undefined when
# the key is unknown, the account inactive or the route not in the plan.
# Only the key's hash is looked up: a timing side channel can reveal
# nothing about the stored keys. Prefixes of one plan must not overlap.
match := {"id": id, "consumer": consumer, "plan": plan, "prefix": prefix} if {
	http := input.attributes.request.http
	consumer := input.tollgate.consumer
	consumer.status == "active"
	id := consumer.id
	plan := data.demo.plans[consumer.plan]
	normal_path
	some method in [http.method, "*"]
	prefix := plan.routes[method][_]
	within(input.parsed_path, prefix)
}

# The path is in the normal form Envoy gives it (normalize_path,
# merge_slashes, path_with_escaped_slashes_action: REJECT_REQUEST, as in
# envoy/*.yaml), and its segments are exactly the bytes the upstream routes
# on. Envoy resolves "." and ".." (also %2e), "\" and "//" before asking
# Tollgate, so a path that still has them bypassed that normalization (a
# misconfigured Envoy, or a client reaching Tollgate directly): denied, as
# is anything an upstream might read as another path. Each segment is
# made of RFC 3986 path characters without "%" (no percent-encoding at all:
# parsed_path is decoded, so nothing decoded may differ from what was sent)
# and without ";" (path parameters, "..;" to Tomcat), with a character
# other than "." (no ".", ".." or "..."); no empty segment but a trailing
# "/". One regular expression says it all: each builtin call costs
# microseconds on the allowed path.
normal_path if {
	regex.match(`^(/\.*[A-Za-z0-9_~!$&'()*+,=:@-][A-Za-z0-9._~!$&'()*+,=:@-]*)*/?$`, path)

	# parsed_path takes "//host/..." for an authority (as opa-envoy-plugin
	# does); the segments must spell the path itself.
	concat("/", array.concat([""], input.parsed_path)) == path
}

# within(segments, prefix): the path segments start with the prefix's
# whole segments; a prefix ending in "/" needs one segment more; "/" is
# every path.
within(_, "/")

within(segments, prefix) if {
	not endswith(prefix, "/")
	want := split(trim_prefix(prefix, "/"), "/")
	array.slice(segments, 0, count(want)) == want
}

within(segments, prefix) if {
	endswith(prefix, "/")
	prefix != "/"
	want := split(trim(prefix, "/"), "/")
	count(segments) > count(want)
	array.slice(segments, 0, count(want)) == want
}

# Allowed: the plan's limits (their key defaults to the consumer). Plans
# with overage charge prepaid credits once the monthly quota is used up,
# at the route's price (1 credit unless the plan prices the route).
decision := {
	"allow": true,
	"consumer": match.id,
	"plan": match.consumer.plan,
	"limits": match.plan.limits,
	"charge": {"credits": object.get(match.plan.prices, match.prefix, 1), "overage_only": true},
	"payment": {"url": match.plan.payment_url},
} if {
	match.plan.overage
} else := {
	"allow": true,
	"consumer": match.id,
	"plan": match.consumer.plan,
	"limits": match.plan.limits,
	"payment": {"url": match.plan.payment_url, "upgrade_url": match.plan.upgrade_url},
} if {
	match
} else := denial

# Why a request is denied, most fundamental reason first.

consumer_id := input.tollgate.consumer.id

consumer := input.tollgate.consumer

plan := data.demo.plans[consumer.plan]

# The request path without its query string (Envoy puts the query in :path).
path := split(input.attributes.request.http.path, "?")[0]

route_in_plan if {
	some method in [input.attributes.request.http.method, "*"]
	within(input.parsed_path, plan.routes[method][_])
}

default denial := {
	"allow": false,
	"status": 401,
	"reason": "invalid_credential",
	"detail": "Send a valid API key in the x-api-key header or as Authorization: Bearer <key>.",
	"response_headers": {"www-authenticate": `Bearer realm="tollgate"`},
}

denial := {
	"allow": false,
	"status": 400,
	"reason": "path_not_normalized",
	"detail": sprintf("The path %q is not in normal form (dot or empty segments, backslashes, \";\" or percent-encoding). Envoy normalizes paths before it asks Tollgate.", [path]),
	"consumer": consumer_id,
	"plan": consumer.plan,
} if {
	consumer
	not normal_path
} else := {
	"allow": false,
	"status": 403,
	"reason": "route_not_in_plan",
	"detail": sprintf("The %s plan does not include %s %s.", [consumer.plan, input.attributes.request.http.method, path]),
	"consumer": consumer_id,
	"plan": consumer.plan,
} if {
	consumer
	not route_in_plan
} else := {
	"allow": false,
	"status": 402,
	"reason": sprintf("subscription_%s", [consumer.status]),
	"detail": sprintf("The subscription is %s. Pay the open invoice to restore access.", [replace(consumer.status, "_", " ")]),
	"consumer": consumer_id,
	"plan": consumer.plan,
	"payment": {"url": plan.payment_url},
} if {
	consumer.status in {"past_due", "suspended"}
} else := {
	"allow": false,
	"status": 403,
	"reason": "account_inactive",
	"detail": sprintf("The account status %q does not allow API access.", [consumer.status]),
	"consumer": consumer_id,
	"plan": consumer.plan,
} if {
	consumer
}
