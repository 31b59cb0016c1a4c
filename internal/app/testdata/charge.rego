# Every request is allowed and costs its consumer 1 credit: the fault
# test's policy (charged must equal allowed).
package tollgate

decision := {
	"allow": true,
	"consumer": "acme",
	"charge": {"account": "acme", "credits": 1},
}
