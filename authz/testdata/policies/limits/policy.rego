# Decisions with limits and charges, carried out by the limit engine (a
# memory store on a fixed clock in the golden tests). Each case uses its own
# key, so cases do not share counters.
package tollgate

path := input.attributes.request.http.path

base := {"allow": true, "consumer": "c1", "plan": "pro", "payment": {"url": "https://billing.example.com/topup", "upgrade_url": "https://billing.example.com/upgrade"}}

# Within every limit: RateLimit headers, the balance upstream.
decision := object.union(base, {
	"limits": [
		{"name": "per_second", "key": "allowed", "limit": 20, "window": "1s", "burst": 40},
		{"name": "monthly", "key": "allowed", "limit": 1000, "period": "month"},
	],
	"charge": {"account": "allowed", "credits": 3, "overdraft": 10},
}) if path == "/allowed"

# Two per second: the third request at once is a 429 (the case repeats it).
decision := object.union(base, {"limits": [
	{"name": "per_second", "key": "rate", "limit": 2, "window": "1s"},
	{"name": "monthly", "key": "rate", "limit": 1000, "period": "month"},
]}) if path == "/rate"

# Two a month: the third request is a 402 with payment details.
decision := object.union(base, {"limits": [
	{"name": "per_second", "key": "quota", "limit": 20, "window": "1s"},
	{"name": "monthly", "key": "quota", "limit": 2, "period": "month"},
]}) if path == "/quota"

# A request that costs more than the limit ever allows at once.
decision := object.union(base, {"limits": [{"name": "tokens", "key": "big", "limit": 100, "window": "1m", "cost": 500}]}) if path == "/too-large"

# An empty prepaid balance: 402 credits_exhausted, nothing consumed.
decision := object.union(base, {
	"limits": [{"name": "per_second", "key": "credits", "limit": 20, "window": "1s"}],
	"charge": {"account": "credits", "credits": 5},
}) if path == "/credits"

# As many limits as the request's x-limits header says: up to
# ratelimit.MaxLimits they are applied in one step; more is an invalid
# decision.
decision := object.union(base, {"limits": [{"name": sprintf("l%d", [i]), "key": "many", "limit": 2, "window": "1m"} |
	some i in numbers.range(1, to_number(input.attributes.request.http.headers["x-limits"]))
]}) if path == "/many"
