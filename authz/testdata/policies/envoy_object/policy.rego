# An opa-envoy-plugin policy with an object result, unchanged.
package envoy.authz

default allow := {"allowed": false, "http_status": 403, "body": "denied by default"}

allow := {
	"allowed": true,
	"headers": {"x-ext-auth-user": input.parsed_body.user, "x-tags": ["a", "b"]},
	"response_headers_to_add": {"x-served-by": "opa"},
	"request_headers_to_remove": ["authorization"],
	"dynamic_metadata": {"user": input.parsed_body.user, "tier": 2},
} if {
	input.attributes.request.http.method == "POST"
	input.parsed_body.user
}

allow := {
	"allowed": false,
	"http_status": 429,
	"headers": {"retry-after": "30", "content-type": "text/plain"},
	"body": "slow down",
} if {
	input.parsed_query.burst == ["true"]
}
