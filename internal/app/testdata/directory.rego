# Allows the consumers the key directory resolves the request's credential
# to (input.tollgate.consumer), and says what it saw upstream; 401 for no
# consumer: no credential, an unknown, expired or revoked key, or the
# directory off.
package tollgate

decision := {
	"allow": true,
	"consumer": c.id,
	"plan": c.plan,
	"headers": {"x-key-name": c.key.name},
} if {
	c := input.tollgate.consumer
	c.status == "active"
} else := {"allow": false, "status": 401, "reason": "unauthenticated"}
