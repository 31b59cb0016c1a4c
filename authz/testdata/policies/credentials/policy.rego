# Allows every request. When the client sent an Authorization header, the
# policy passes an upstream token of its own in it: Tollgate must then not
# remove the header the policy sets, even when the client's bearer token
# was the presented credential.
package creds

decision := {"allow": true, "headers": {"authorization": "Bearer upstream-token"}} if {
	input.attributes.request.http.headers.authorization
} else := {"allow": true}
