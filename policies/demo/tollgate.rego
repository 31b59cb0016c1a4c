# Tollgate's demo billing policy.
#
# Consumers present an API key in `x-api-key` or `Authorization: Bearer`.
# Keys are stored as SHA-256 hashes in data.demo.keys; each consumer has a
# plan and a billing status; each plan lists, per HTTP method ("*" for any),
# the path prefixes it includes.
#
#   unknown or missing key           -> 401 (with WWW-Authenticate)
#   route not in the consumer's plan -> 403
#   consumer past_due or suspended   -> 402 (with the plan's payment link)
#   otherwise                        -> allow; Tollgate sets x-tollgate-consumer/plan
#
# Policies are pure: they return a decision document and Tollgate carries it
# out. See README.md, "Writing a policy".
#
# Limits: free 5 req/s (burst 10) and 1,000 a month, then 402; pro 50 req/s
# and 100,000 a month, then prepaid credits per request (POST /v1/chat/
# costs 5); enterprise 500 req/s, no monthly cap. Tollgate's limit engine
# counts them (in memory, or in Redis for several replicas).
#
# Performance: the allowed path is one rule body with local variables, and
# data.demo is read from the store once. Every rule or builtin call on this
# path costs microseconds per request; denials take the slower, more
# descriptive path below.
package tollgate

# The presented credential: x-api-key wins over Authorization: Bearer.
api_key := input.attributes.request.http.headers["x-api-key"]

api_key := substring(auth, 7, -1) if {
	not input.attributes.request.http.headers["x-api-key"]
	auth := input.attributes.request.http.headers.authorization
	startswith(auth, "Bearer ")
}

# The consumer, its plan and the route prefix it matched; undefined when
# the key is unknown, the account inactive or the route not in the plan.
# Only the key's hash is looked up: a timing side channel can reveal
# nothing about the stored keys. Prefixes of one plan must not overlap.
match := {"id": id, "consumer": consumer, "plan": plan, "prefix": prefix} if {
	http := input.attributes.request.http
	demo := data.demo
	id := demo.keys[crypto.sha256(api_key)]
	consumer := demo.consumers[id]
	consumer.status == "active"
	plan := demo.plans[consumer.plan]
	some method in [http.method, "*"]
	prefix := plan.routes[method][_]
	startswith(http.path, prefix)
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

consumer_id := data.demo.keys[crypto.sha256(api_key)]

consumer := data.demo.consumers[consumer_id]

plan := data.demo.plans[consumer.plan]

# The request path without its query string (Envoy puts the query in :path).
path := p if {
	[p, _] := split(input.attributes.request.http.path, "?")
} else := input.attributes.request.http.path

route_in_plan if {
	some method in [input.attributes.request.http.method, "*"]
	startswith(path, plan.routes[method][_])
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
