# A policy that waits on the test: each Check calls the URL in its x-hook
# header and allows the request when the hook answers 200. The test knows
# the call is in flight when the hook is called, and ends it by answering.
package tollgate

decision := {"allow": http.send({
	"method": "GET",
	"url": input.attributes.request.http.headers["x-hook"],
	"timeout": "60s",
	"raise_error": false,
}).status_code == 200}
