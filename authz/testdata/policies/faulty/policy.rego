# Decisions that must fail safe: runtime errors, undefined and invalid
# decision documents all become denials.
package tollgate

path := input.attributes.request.http.path

# Two outputs for one complete rule: a runtime conflict error.
decision := {"allow": true} if path == "/conflict"

decision := {"allow": false} if path == "/conflict"

decision := {"allow": "yes"} if path == "/invalid-type"

decision := {"allow": false, "status": 999} if path == "/invalid-status"

decision := {"allow": true, "headers": {"bad header": "x"}} if path == "/invalid-header"

decision := {"allow": true, "alow": true} if path == "/unknown-key"

decision := {"allow": true, "limits": [{"name": "m", "key": "k", "limit": 10, "window": "1s", "period": "month"}]} if path == "/invalid-limit"

decision := {"allow": 1 / to_number(input.attributes.request.http.headers.zero)} if path == "/divide"

decision := 42 if path == "/number"

decision := {"allow": true, "consumer": "c1", "plan": "p1", "limits": [
	{"name": "per_second", "key": "c1", "limit": 20, "window": "1s", "burst": 40},
	{"name": "monthly", "key": "c1", "limit": 100000, "period": "month", "timezone": "Europe/Berlin"},
], "charge": {"account": "c1", "credits": 3}} if path == "/with-limits"
