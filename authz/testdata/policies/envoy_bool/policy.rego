# An opa-envoy-plugin policy with a boolean decision, unchanged.
package envoy.authz

default allow := false

allow if {
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "public"
}
