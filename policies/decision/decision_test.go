package decision_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate-dev/tollgate/policies/decision"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

func TestParseDecision(t *testing.T) {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	tests := []struct {
		name  string
		doc   string
		check func(t *testing.T, d *decision.Decision)
	}{
		{"boolean allow", `true`, func(t *testing.T, d *decision.Decision) {
			if !d.Allow {
				t.Error("not allowed")
			}
		}},
		{"boolean deny gets the default status", `false`, func(t *testing.T, d *decision.Decision) {
			if d.Allow || d.Status != 403 {
				t.Errorf("got %+v", d)
			}
		}},
		{"tollgate deny with status", `{"allow": false, "status": 402, "reason": "credits_exhausted", "payment": {"url": "https://pay"}}`, func(t *testing.T, d *decision.Decision) {
			if d.Status != 402 || d.Reason != "credits_exhausted" || d.Payment["url"] != "https://pay" {
				t.Errorf("got %+v", d)
			}
		}},
		{"tollgate deny without status", `{"allow": false}`, func(t *testing.T, d *decision.Decision) {
			if d.Status != 403 {
				t.Errorf("status %d, want the default 403", d.Status)
			}
		}},
		{"headers are sorted and lower-cased", `{"allow": true, "headers": {"X-B": "2", "x-a": "1"}}`, func(t *testing.T, d *decision.Decision) {
			want := []decision.Header{{Key: "x-a", Value: "1"}, {Key: "x-b", Value: "2"}}
			if !slices.Equal(d.Headers, want) {
				t.Errorf("headers %+v, want %+v", d.Headers, want)
			}
		}},
		{"limits and charge", `{"allow": true, "limits": [
			{"name": "per_second", "key": "acme", "limit": 20, "window": "1s", "burst": 40},
			{"name": "monthly", "key": "acme", "limit": 100000, "period": "month", "timezone": "Europe/Berlin", "cost": 5}],
			"charge": {"account": "acme", "credits": 3, "overdraft": 10}}`, func(t *testing.T, d *decision.Decision) {
			want := []ratelimit.Limit{
				{Name: "per_second", Key: "acme", Limit: 20, Window: time.Second, Burst: 40, Cost: 1, OnExceed: 429},
				{Name: "monthly", Key: "acme", Limit: 100000, Period: ratelimit.Month, Location: berlin, Cost: 5, OnExceed: 402},
			}
			if len(d.Limits) != 2 {
				t.Fatalf("limits %+v", d.Limits)
			}
			for i := range want {
				if d.Limits[i].Name != want[i].Name || d.Limits[i].Window != want[i].Window || d.Limits[i].Period != want[i].Period ||
					d.Limits[i].Cost != want[i].Cost || d.Limits[i].OnExceed != want[i].OnExceed || d.Limits[i].Burst != want[i].Burst ||
					d.Limits[i].Location.String() != want[i].Location.String() {
					t.Errorf("limit %d = %+v, want %+v", i, d.Limits[i], want[i])
				}
			}
			if *d.Charge != (ratelimit.Charge{Account: "acme", Credits: 3, Overdraft: 10}) {
				t.Errorf("charge %+v", d.Charge)
			}
		}},
		{"key and account default to the consumer; failure modes", `{"allow": true, "consumer": "acme",
			"limits": [{"name": "m", "limit": 5, "period": "day", "failure_mode": "closed"}, {"name": "r", "limit": 5, "window": "1s"}],
			"charge": {"credits": 2, "overage_only": true}}`, func(t *testing.T, d *decision.Decision) {
			if d.Limits[0].Key != "acme" || d.Charge.Account != "acme" || !d.Charge.OverageOnly {
				t.Errorf("got %+v %+v", d.Limits, d.Charge)
			}
			if d.Limits[0].FailOpen || !d.Limits[1].FailOpen || d.Charge.FailOpen {
				t.Errorf("failure modes: limit closed=%v, limit default open=%v, charge default closed=%v", !d.Limits[0].FailOpen, d.Limits[1].FailOpen, !d.Charge.FailOpen)
			}
		}},
		{"settle on delivery", `{"allow": true, "consumer": "acme", "charge": {"credits": 2, "settle": "delivery"}}`, func(t *testing.T, d *decision.Decision) {
			if d.Charge == nil || d.Charge.Settle != ratelimit.SettleDelivery || !d.Charge.Reserves() {
				t.Errorf("charge %+v, want settle delivery", d.Charge)
			}
		}},
		{"settle at check", `{"allow": true, "consumer": "acme", "charge": {"credits": 2, "settle": "check"}}`, func(t *testing.T, d *decision.Decision) {
			if d.Charge == nil || d.Charge.Reserves() {
				t.Errorf("charge %+v, want settled at check", d.Charge)
			}
		}},
		{"null charge is no charge", `{"allow": true, "charge": null}`, func(t *testing.T, d *decision.Decision) {
			if d.Charge != nil {
				t.Errorf("charge %+v", d.Charge)
			}
		}},
		{"opa-envoy object with list headers", `{"allowed": true, "headers": {"x-tags": ["a", "b"]}, "unknown_key": 1}`, func(t *testing.T, d *decision.Decision) {
			if !d.Allow || len(d.Headers) != 2 || d.Headers[0].Append || !d.Headers[1].Append {
				t.Errorf("got %+v", d)
			}
		}},
		{"a denial's headers may use any x-tollgate- name (they go to the client)", `{"allowed": false, "http_status": 429, "headers": {"x-tollgate-request-id": "r1"}}`, func(t *testing.T, d *decision.Decision) {
			if d.Allow || d.Status != 429 || len(d.ResponseHeaders) != 1 || d.ResponseHeaders[0].Key != "x-tollgate-request-id" {
				t.Errorf("got %+v", d)
			}
		}},
		{"a Tollgate denial with x-tollgate- headers is valid", `{"allow": false, "status": 402, "headers": {"x-tollgate-trace": "1"}}`, func(t *testing.T, d *decision.Decision) {
			if d.Allow || d.Status != 402 {
				t.Errorf("got %+v", d)
			}
		}},
		{"opa-envoy deny moves headers to the client", `{"allowed": false, "headers": {"retry-after": "3"}}`, func(t *testing.T, d *decision.Decision) {
			if d.Allow || d.Status != 403 || len(d.Headers) != 0 || len(d.ResponseHeaders) != 1 {
				t.Errorf("got %+v", d)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := decision.Parse(ast.MustParseTerm(tt.doc), 403)
			if err != nil {
				t.Fatalf("ParseDecision: %v", err)
			}
			tt.check(t, d)
		})
	}
}

func TestParseDecisionErrors(t *testing.T) {
	tests := []struct{ doc, want string }{
		{`"yes"`, `decision is string "yes", want a boolean or an object`},
		{`{"permit": true}`, `neither "allow" (Tollgate decision) nor "allowed"`},
		{`{"allow": "true"}`, `allow: want true or false, got "true"`},
		{`{"allow": false, "status": 999}`, `status: 999 is not an HTTP status Envoy can send`},
		{`{"allow": false, "status": 4.5}`, `status: want an integer, got 4.5`},
		{`{"allow": true, "alow": 1}`, `alow: unknown key (allowed: allow, status, reason`},
		{`{"allow": true, "headers": {"bad name": "x"}}`, `header name "bad name" has the invalid character ' '`},
		{`{"allow": true, "headers": {"x-a": "a\r\nb"}}`, `header "x-a": value contains CR, LF or NUL`},
		{`{"allow": true, "headers": {"x-a": 1}}`, `want a string or a list of strings, got 1`},
		{`{"allow": true, "headers": ["x-a"]}`, `headers: want an object of header names to values`},
		{`{"allow": true, "limits": [{"key": "k", "limit": 1, "window": "1s"}]}`, `"name" is required`},
		{`{"allow": true, "limits": [{"name": "a", "limit": 1, "window": "1s"}]}`, `limit "a": "key" is required when the decision names no consumer`},
		{`{"allow": true, "limits": [{"name": "a", "key": "k", "limit": 0, "window": "1s"}]}`, `"limit" must be a positive integer`},
		{`{"allow": true, "limits": [{"name": "a", "key": "k", "limit": 1}]}`, `set exactly one of "window"`},
		{`{"allow": true, "limits": [{"name": "a", "key": "k", "limit": 1, "window": "1s", "period": "day"}]}`, `set exactly one of "window"`},
		{`{"allow": true, "limits": [{"name": "a", "key": "k", "limit": 1, "window": "fast"}]}`, `window: time: invalid duration "fast"`},
		{`{"allow": true, "limits": [{"name": "a", "key": "k", "limit": 1, "period": "fortnight"}]}`, `"fortnight" is not a period (allowed: hour, day, week, month, year)`},
		{`{"allow": true, "limits": [{"name": "a", "key": "k", "limit": 1, "period": "day", "timezone": "Mars/Base"}]}`, `timezone "Mars/Base" is not an IANA time zone`},
		{`{"allow": true, "limits": [{"name": "a", "key": "k", "limit": 1, "period": "day", "burst": 3}]}`, `"burst" applies to rate limits`},
		{`{"allow": true, "limits": [{"name": "a", "key": "k", "limit": 1, "window": "1s", "colour": 3}]}`, `limits: [0]: colour: unknown key (allowed: name, key, limit`},
		{`{"allow": true, "limits": [{"name": "a", "key": "k", "limit": 1, "window": "1s"}, {"name": "a", "key": "k", "limit": 2, "window": "1m"}]}`, `name "a" is used by two limits`},
		{`{"allow": true, "charge": {"account": "a", "credits": -1}}`, `credits: -1 must be at least 1`},
		{`{"allow": true, "charge": {"account": "a", "credits": 0}}`, `credits: 0 must be at least 1 (omit the charge`},
		{`{"allow": true, "limits": [{"name": "a", "key": "k", "limit": 1, "window": "1s", "cost": 9007199254740992}]}`, `"cost" must not exceed 9007199254740991`},
		{`{"allow": true, "limits": [{"name": "a", "key": "k", "limit": 9007199254740992, "window": "1s"}]}`, `no larger than 9007199254740991`},
		{`{"allow": true, "limits": [{"name": "a", "key": "k", "limit": 1, "window": "9000h"}]}`, `longer than a year`},
		{`{"allow": true, "charge": {"credits": 1}}`, `"account" is required when the decision names no consumer`},
		{`{"allow": true, "limits": [{"name": "a", "key": "k", "limit": 1, "window": "1s", "overage": true}]}`, `"overage" applies to period quotas only`},
		{`{"allow": true, "limits": [{"name": "a", "key": "k", "limit": 1, "window": "1s", "failure_mode": "maybe"}]}`, `"maybe" is not a failure mode (allowed: open, closed)`},
		{`{"allow": true, "charge": {"account": "a", "credits": 1.5}}`, `want an integer, got 1.5`},
		{`{"allow": true, "charge": {"account": "a", "credits": 1, "settle": "later"}}`, `settle: "later" is not a settle mode (allowed: check, delivery, success)`},
		{`{"allow": true, "charge": {"account": "a", "credits": 1, "settle": 1}}`, `settle: want a string`},
		{`{"allowed": true, "http_status": "429"}`, `http_status: want an integer`},
		{`{"allow": true, "headers": {"X-Tollgate-Tier": "gold"}}`, `header "x-tollgate-tier": the x-tollgate- prefix is Tollgate's (allowed: x-tollgate-consumer, x-tollgate-plan, x-tollgate-balance, x-tollgate-degraded)`},
		{`{"allowed": true, "headers": {"x-tollgate-user": "u"}}`, `header "x-tollgate-user": the x-tollgate- prefix is Tollgate's`},
	}
	for _, tt := range tests {
		t.Run(tt.doc, func(t *testing.T) {
			_, err := decision.Parse(ast.MustParseTerm(tt.doc), 403)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v\nwant it to contain: %s", err, tt.want)
			}
		})
	}
}
