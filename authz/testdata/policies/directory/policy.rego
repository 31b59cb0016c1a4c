# Decides by the consumer the key directory resolved the request's
# credential to (input.tollgate.consumer): an active one is allowed and
# what the policy saw of it goes upstream in headers; a suspended one is a
# 402; no consumer (no credential, an unknown, expired or revoked key, or
# no directory) is a 401.
package dir

decision := {
	"allow": true,
	"consumer": c.id,
	"plan": c.plan,
	"headers": {
		"x-key": sprintf("%s/%s/%s", [c.key.id, c.key.name, object.get(c.key, "expires_at", "never")]),
		"x-team": object.get(c.metadata, "team", "none"),
	},
} if {
	c := input.tollgate.consumer
	c.status == "active"
} else := {"allow": false, "status": 402, "reason": "suspended"} if {
	input.tollgate.consumer.status == "suspended"
} else := {"allow": false, "status": 401, "reason": "unauthenticated"}
