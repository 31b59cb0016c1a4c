package tollgate_test

import data.tollgate

# req is the input Tollgate builds for a request. parsed_path is the path's
# segments; Tollgate also percent-decodes them (as opa-envoy-plugin does),
# which these tests leave out: the demo denies any percent-encoding, and
# authz/paths_test.go sends encoded paths through Tollgate's own input.
req(method, path, headers) := {
	"attributes": {"request": {"http": {
		"method": method,
		"path": path,
		"headers": headers,
	}}},
	"parsed_path": split(trim_left(split(path, "?")[0], "/"), "/"),
}

test_api_key_header_allows if {
	d := tollgate.decision with input as req("GET", "/v1/invoices?limit=10", {"x-api-key": "tg_live_3f9a1c0d5e7b4a2c"})
	d.allow == true
	d.consumer == "acme"
	d.plan == "pro"
}

test_bearer_token_allows if {
	d := tollgate.decision with input as req("POST", "/v1/chat/completions", {"authorization": "Bearer tg_live_77aa0b1c2d3e4f50"})
	d.allow == true
	d.consumer == "globex"
	d.plan == "enterprise"
}

test_api_key_header_wins_over_bearer if {
	d := tollgate.decision with input as req("GET", "/v1/invoices", {
		"x-api-key": "tg_demo_free_0001",
		"authorization": "Bearer tg_live_77aa0b1c2d3e4f50",
	})
	d.consumer == "initech"
}

test_missing_key_is_401 if {
	d := tollgate.decision with input as req("GET", "/v1/invoices", {})
	d.allow == false
	d.status == 401
	d.response_headers["www-authenticate"] == `Bearer realm="tollgate"`
}

test_unknown_key_is_401 if {
	d := tollgate.decision with input as req("GET", "/v1/invoices", {"x-api-key": "tg_live_guess"})
	d.status == 401
	not d.consumer
}

test_basic_auth_is_not_a_bearer_key if {
	d := tollgate.decision with input as req("GET", "/v1/invoices", {"authorization": "Basic dGdfZGVtb19mcmVlXzAwMDE="})
	d.status == 401
}

test_plaintext_key_in_data_is_not_accepted if {
	# A request presenting the stored hash itself must not authenticate.
	d := tollgate.decision with input as req("GET", "/v1/invoices", {"x-api-key": "f396b2c0d7c24fe771572afd93eb3c7b88fe0aa4ce6bf1e78b0e58bab4c442b4"})
	d.status == 401
}

test_route_outside_plan_is_403 if {
	d := tollgate.decision with input as req("POST", "/v1/chat/completions", {"x-api-key": "tg_demo_free_0001"})
	d.allow == false
	d.status == 403
	d.reason == "route_not_in_plan"
	d.consumer == "initech"
	d.plan == "free"
}

test_method_is_part_of_the_route if {
	d := tollgate.decision with input as req("DELETE", "/v1/invoices/inv_1", {"x-api-key": "tg_live_3f9a1c0d5e7b4a2c"})
	d.status == 403
}

test_query_string_does_not_affect_route_match if {
	d := tollgate.decision with input as req("GET", "/v1/status?verbose=/v1/admin", {"x-api-key": "tg_demo_free_0001"})
	d.allow == true
}

test_past_due_is_402_with_payment_link if {
	d := tollgate.decision with input as req("GET", "/v1/invoices", {"x-api-key": "tg_demo_pastdue_0002"})
	d.allow == false
	d.status == 402
	d.reason == "subscription_past_due"
	d.payment.url == "https://billing.example.com/pay?plan=pro"
}

test_suspended_is_402 if {
	d := tollgate.decision with input as req("GET", "/v1/invoices", {"x-api-key": "tg_demo_suspended_0003"})
	d.status == 402
	d.reason == "subscription_suspended"
	d.payment.url == "https://billing.example.com/pay?plan=free"
}

test_unknown_status_is_403 if {
	d := tollgate.decision with input as req("GET", "/v1/invoices", {"x-api-key": "tg_demo_free_0001"})
		with data.demo.consumers.initech.status as "cancelled"
	d.status == 403
	d.reason == "account_inactive"
}

test_enterprise_reaches_any_route if {
	d := tollgate.decision with input as req("DELETE", "/admin/anything", {"authorization": "Bearer tg_live_77aa0b1c2d3e4f50"})
	d.allow == true
}

test_free_plan_limits if {
	d := tollgate.decision with input as req("GET", "/v1/invoices", {"x-api-key": "tg_demo_free_0001"})
	d.limits == [
		{"name": "per_second", "limit": 5, "window": "1s", "burst": 10},
		{"name": "monthly", "limit": 1000, "period": "month", "on_exceed": 402},
	]
	not d.charge
	d.payment.upgrade_url
}

test_pro_plan_overage_charges_credits if {
	d := tollgate.decision with input as req("GET", "/v1/invoices", {"x-api-key": "tg_live_3f9a1c0d5e7b4a2c"})
	d.limits[1] == {"name": "monthly", "limit": 100000, "period": "month", "overage": true}
	d.charge == {"credits": 1, "overage_only": true}
}

test_chat_costs_more if {
	d := tollgate.decision with input as req("POST", "/v1/chat/completions", {"x-api-key": "tg_live_3f9a1c0d5e7b4a2c"})
	d.charge.credits == 5
}

test_enterprise_has_no_monthly_cap if {
	d := tollgate.decision with input as req("GET", "/anything", {"authorization": "Bearer tg_live_77aa0b1c2d3e4f50"})
	[l | some l in d.limits; l.period] == []
	d.limits[0].limit == 500
}

test_ratelimit_plan_limits if {
	r := tollgate.ratelimit with input as {"domain": "tollgate", "descriptors": [
		{"entries": [{"key": "consumer", "value": "acme"}, {"key": "plan", "value": "free"}], "entries_map": {"consumer": "acme", "plan": "free"}},
		{"entries": [{"key": "remote_address", "value": "203.0.113.7"}], "entries_map": {"remote_address": "203.0.113.7"}},
	]}
	r[0][0] == {"name": "per_second", "limit": 5, "window": "1s", "burst": 10}
	r[1] == null
}

# Routes match whole path segments (input.parsed_path), never a prefix of
# one; Envoy normalizes the path first (envoy/*.yaml), and a path that is
# not normalized is denied.

free := {"x-api-key": "tg_demo_free_0001"}

test_prefix_matches_whole_segments if {
	tollgate.decision.allow with input as req("GET", "/v1/invoices", free)
	tollgate.decision.allow with input as req("GET", "/v1/invoices/", free)
	tollgate.decision.allow with input as req("GET", "/v1/invoices/inv_1/lines", free)
	d := tollgate.decision with input as req("GET", "/v1/invoicesXYZ-admin", free)
	d.status == 403
	d.reason == "route_not_in_plan"
}

test_query_with_question_marks_is_not_path if {
	tollgate.decision.allow with input as req("GET", "/v1/status?next=/v1/a?b", free)
}

test_trailing_slash_prefix_needs_a_segment_after_it if {
	pro := {"x-api-key": "tg_live_3f9a1c0d5e7b4a2c"}
	tollgate.decision.allow with input as req("POST", "/v1/chat/completions", pro)
	tollgate.decision.allow with input as req("GET", "/v1/anything", pro)
	d := tollgate.decision with input as req("GET", "/v1", pro)
	d.status == 403
	e := tollgate.decision with input as req("POST", "/v1/chatbot", pro)
	e.status == 403
}

test_paths_not_normalized_are_400 if {
	every p in [
		"/v1/invoices/../admin",
		"/v1/invoices/./x",
		"/v1/invoices/...",
		"/v1/invoices/..",
		"/v1//invoices",
		"//v1/invoices",
		"/v1/invoices/%2e%2e/admin",
		"/v1/invoices%2Fadmin",
		`/v1/invoices\..\admin`,
		"/v1/invoices;/../admin",
		"/v1/invoices/..;/admin",
		"/v1/invoices/a b",
		"/v1/invoices/é",
		"",
	] {
		d := tollgate.decision with input as req("GET", p, free)
		d.status == 400
		d.reason == "path_not_normalized"
		d.consumer == "initech"
	}
}

test_parsed_path_must_spell_the_path if {
	# Tollgate reads "//admin/v1/invoices" as host "admin", path
	# "/v1/invoices" (as opa-envoy-plugin does).
	d := tollgate.decision with input as object.union(req("GET", "/v1/invoices", free), {"parsed_path": ["v1", "invoices", "x"]})
	d.status == 400
	e := tollgate.decision with input as object.remove(req("GET", "/v1/invoices", free), ["parsed_path"])
	e.status == 400
}

test_enterprise_also_needs_a_normalized_path if {
	d := tollgate.decision with input as req("GET", "/a/../b", {"authorization": "Bearer tg_live_77aa0b1c2d3e4f50"})
	d.status == 400
}

test_unknown_key_with_bad_path_is_still_401 if {
	d := tollgate.decision with input as req("GET", "/v1/../admin", {"x-api-key": "tg_live_guess"})
	d.status == 401
}
