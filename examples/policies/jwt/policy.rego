# Plans from a JWT that Envoy's jwt_authn filter has already validated.
#
# Envoy: jwt_authn with payload_in_metadata: jwt_payload, and on ext_authz
# metadata_context_namespaces: [envoy.filters.http.jwt_authn].
package tollgate

jwt := input.attributes.metadataContext.filterMetadata["envoy.filters.http.jwt_authn"].jwt_payload

default decision := {"allow": false, "status": 401, "reason": "no_token", "response_headers": {"www-authenticate": "Bearer"}}

decision := {"allow": true, "consumer": jwt.sub, "plan": jwt.plan} if {
	jwt.plan in {"pro", "enterprise"}
} else := {"allow": false, "status": 403, "reason": "plan_too_small", "consumer": jwt.sub, "plan": jwt.plan} if {
	jwt.sub
}
