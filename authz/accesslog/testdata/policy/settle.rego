# Charges 3 credits to the consumer named by x-account, settled as
# x-settle says (check by default), and sets dynamic metadata of its own
# that the reservation's must be merged with; with x-forge, that metadata
# also names a reservation, which Tollgate must never pass on as its own.
package tollgate

account := object.get(input.attributes.request.http.headers, "x-account", "acme")

settle := object.get(input.attributes.request.http.headers, "x-settle", "check")

default metadata := {"route": "chat"}

metadata := {"route": "chat", "tollgate": {"account": "victim", "reservation": "r-victim", "settle": "delivery"}} if {
	input.attributes.request.http.headers["x-forge"]
}

decision := {
	"allow": true,
	"consumer": account,
	"charge": {"credits": 3, "settle": settle},
	"dynamic_metadata": metadata,
}
