package tollgate_test

import data.tollgate

with_jwt(payload) := {"attributes": {"metadataContext": {"filterMetadata": {"envoy.filters.http.jwt_authn": {"jwt_payload": payload}}}}}

test_pro_plan_allowed if {
	d := tollgate.decision with input as with_jwt({"sub": "acme", "plan": "pro"})
	d.allow
	d.consumer == "acme"
}

test_free_plan_forbidden if {
	d := tollgate.decision with input as with_jwt({"sub": "acme", "plan": "free"})
	d.status == 403
}

test_no_token_unauthenticated if {
	d := tollgate.decision with input as {}
	d.status == 401
}
