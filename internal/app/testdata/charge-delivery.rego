# Every request is allowed and costs its consumer 1 credit, settled on
# delivery: the fault test's policy (charged must equal delivered).
package tollgate

decision := {
	"allow": true,
	"consumer": "acme",
	"charge": {"account": "acme", "credits": 1, "settle": "delivery"},
}
