# Charges 3 credits to the consumer named by x-account, settled as
# x-settle says (check by default), and sets dynamic metadata of its own
# that the reservation's must be merged with.
package tollgate

account := object.get(input.attributes.request.http.headers, "x-account", "acme")

settle := object.get(input.attributes.request.http.headers, "x-settle", "check")

decision := {
	"allow": true,
	"consumer": account,
	"charge": {"credits": 3, "settle": settle},
	"dynamic_metadata": {"route": "chat"},
}
