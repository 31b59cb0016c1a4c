# Tollgate's demo billing policy.
#
# Consumers present an API key in `x-api-key` or `Authorization: Bearer`.
# Keys are stored as SHA-256 hashes in data.demo.keys; each consumer has a
# plan and a billing status; each plan lists the routes it includes.
#
#   unknown or missing key          -> 401 (with WWW-Authenticate)
#   route not in the consumer's plan -> 403
#   consumer past_due or suspended   -> 402 (with the plan's payment link)
#   otherwise                        -> allow, x-tollgate-consumer/plan set
#
# Policies are pure: they return a decision document and Tollgate carries it
# out. See README.md, "Writing a policy".
package tollgate

http := input.attributes.request.http

# The request path without its query string (Envoy puts the query in :path).
path := p if {
	[p, _] := split(http.path, "?")
} else := http.path

# The presented credential: x-api-key wins over Authorization: Bearer.
api_key := http.headers["x-api-key"]

api_key := substring(http.headers.authorization, 7, -1) if {
	not http.headers["x-api-key"]
	startswith(http.headers.authorization, "Bearer ")
}

# Only the key's hash is ever compared, so a timing side channel leaks
# nothing about stored keys.
consumer_id := data.demo.keys[crypto.sha256(api_key)]

consumer := data.demo.consumers[consumer_id]

plan := data.demo.plans[consumer.plan]

route_allowed if {
	some r in plan.routes
	r.method in {"*", http.method}
	startswith(path, r.prefix)
}

default decision := {
	"allow": false,
	"status": 401,
	"reason": "invalid_credential",
	"detail": "Send a valid API key in the x-api-key header or as Authorization: Bearer <key>.",
	"response_headers": {"www-authenticate": `Bearer realm="tollgate"`},
}

decision := {
	"allow": false,
	"status": 403,
	"reason": "route_not_in_plan",
	"detail": sprintf("The %s plan does not include %s %s.", [consumer.plan, http.method, path]),
	"consumer": consumer_id,
	"plan": consumer.plan,
} if {
	consumer
	not route_allowed
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
	"allow": true,
	"consumer": consumer_id,
	"plan": consumer.plan,
} if {
	consumer.status == "active"
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
