// Package ratelimit is Tollgate's limit engine: rate limits, period quotas
// and prepaid credit charges, applied atomically per request.
//
// This file holds the vocabulary shared by the ext_authz decision document
// and the rate limit service; the engine and its stores carry it out.
package ratelimit

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Period is a calendar period for quotas.
type Period string

// Calendar periods a quota may use.
const (
	Hour  Period = "hour"
	Day   Period = "day"
	Week  Period = "week"
	Month Period = "month"
	Year  Period = "year"
)

// periods lists the valid periods, for error messages.
var periods = []Period{Hour, Day, Week, Month, Year}

// ParsePeriod checks a period name.
func ParsePeriod(s string) (Period, error) {
	for _, p := range periods {
		if string(p) == s {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q is not a period (allowed: hour, day, week, month, year)", s)
}

// Limit is one limit of a request: either a rate over a short Window (GCRA,
// with Burst) or a quota over a calendar Period.
type Limit struct {
	// Name identifies the limit in headers, bodies and logs ("per_second").
	Name string
	// Key is the counter's identity, usually the consumer ("acme").
	Key string
	// Limit is how many units the window or period allows.
	Limit int64
	// Window is set for rate limits; Period for calendar quotas.
	Window time.Duration
	Period Period
	// Location is the time zone of a Period (UTC when nil).
	Location *time.Location
	// Burst is how many units may be taken at once beyond the smooth rate
	// (rate limits only; 0 means Limit).
	Burst int64
	// Cost is how many units this request consumes (default 1).
	Cost int64
	// OnExceed is the HTTP status when the limit is exceeded (429 for rate
	// limits, 402 for quotas by default).
	OnExceed int
	// Overage lets a request past an exhausted quota when the request's
	// charge can be paid instead (quotas only).
	Overage bool
	// FailOpen allows the request when the store cannot be reached (the
	// default for rate limits and quotas); otherwise it is refused.
	FailOpen bool
	// Shadow limits are counted and reported but never refuse: an exceeded
	// shadow limit is marked Exceeded, consumes nothing, and the request
	// goes on (envoyproxy/ratelimit's shadow_mode).
	Shadow bool
}

// IsRate reports whether l is a rate limit (GCRA over Window) rather than a
// calendar quota.
func (l *Limit) IsRate() bool { return l.Window > 0 }

// Kind is "rate" or "quota", for metrics and headers.
func (l *Limit) Kind() string {
	if l.IsRate() {
		return "rate"
	}
	return "quota"
}

// Charge takes prepaid credits from an account.
type Charge struct {
	Account string
	Credits int64
	// Overdraft is how far below zero the balance may go.
	Overdraft int64
	// OverageOnly charges only when a quota marked Overage is exhausted.
	OverageOnly bool
	// FailOpen allows the request uncharged when the store cannot be
	// reached; by default a charge fails closed.
	FailOpen bool
	// Settle is when the charge becomes final: at Check (SettleCheck, the
	// default), or — the credits reserved at Check — once Envoy's access
	// log says the request reached the upstream (SettleDelivery) and the
	// upstream answered below 500 (SettleSuccess).
	Settle Settle
}

// Settle is when a charge is settled.
type Settle string

// Settle modes.
const (
	// SettleCheck charges at Check (also the empty value).
	SettleCheck Settle = "check"
	// SettleDelivery reserves at Check and captures only if Envoy sent
	// the request upstream; otherwise the reservation is released.
	SettleDelivery Settle = "delivery"
	// SettleSuccess is SettleDelivery that also releases when the
	// upstream answered 500 or more.
	SettleSuccess Settle = "success"
)

// Reserves reports whether the charge is reserved at Check and settled
// later (delivery or success).
func (c *Charge) Reserves() bool { return c.Settle == SettleDelivery || c.Settle == SettleSuccess }

// MaxWindow bounds a rate's window; longer spans are calendar quotas.
const MaxWindow = 366 * 24 * time.Hour

// Validate reports the first way l breaks the engine's invariants, in the
// decision document's vocabulary. Engine.Take refuses a request with an
// invalid limit rather than dividing by zero or panicking on it.
func (l *Limit) Validate() error {
	switch {
	case l.Name == "":
		return errors.New(`"name" is required`)
	case l.Limit <= 0 || l.Limit > MaxCredits:
		return fmt.Errorf("limit %q: \"limit\" must be a positive integer no larger than %d, not %d", l.Name, int64(MaxCredits), l.Limit)
	case l.Burst > MaxCredits || l.Cost > MaxCredits:
		return fmt.Errorf("limit %q: \"burst\" and \"cost\" must not exceed %d", l.Name, int64(MaxCredits))
	case l.Window < 0:
		return fmt.Errorf("limit %q: window %s must be positive", l.Name, l.Window)
	case l.Window > MaxWindow:
		return fmt.Errorf("limit %q: window %s is longer than a year; use \"period\" for quotas", l.Name, l.Window)
	case (l.Window == 0) == (l.Period == ""):
		return fmt.Errorf("limit %q: set exactly one of \"window\" (a rate, such as \"1s\") or \"period\" (a quota: hour, day, week, month, year)", l.Name)
	case l.Burst < 0:
		return fmt.Errorf("limit %q: \"burst\" must not be negative", l.Name)
	case l.Burst > 0 && l.Period != "":
		return fmt.Errorf("limit %q: \"burst\" applies to rate limits (window), not to period quotas", l.Name)
	case l.Cost < 0:
		return fmt.Errorf("limit %q: \"cost\" must not be negative", l.Name)
	case l.Location != nil && l.Period == "":
		return fmt.Errorf("limit %q: \"timezone\" applies to period quotas only", l.Name)
	case l.Overage && l.Period == "":
		return fmt.Errorf("limit %q: \"overage\" applies to period quotas only", l.Name)
	}
	if l.Period != "" {
		if _, err := ParsePeriod(string(l.Period)); err != nil {
			return fmt.Errorf("limit %q: period: %w", l.Name, err)
		}
	}
	return nil
}

// Validate reports the first way c breaks the engine's invariants.
func (c *Charge) Validate() error {
	switch {
	case c.Account == "":
		return errors.New(`"account" is required`)
	case c.Credits < 1:
		return fmt.Errorf("credits: %d must be at least 1 (omit the charge, or set it to null, to charge nothing)", c.Credits)
	case c.Overdraft < 0:
		return fmt.Errorf("overdraft: %d must not be negative", c.Overdraft)
	case c.Credits > MaxCredits || c.Overdraft > MaxCredits:
		return fmt.Errorf("credits and overdraft must not exceed %d", int64(MaxCredits))
	}
	switch c.Settle {
	case "", SettleCheck, SettleDelivery, SettleSuccess:
	default:
		return fmt.Errorf("settle: %q is not a settle mode (allowed: check, delivery, success)", string(c.Settle))
	}
	return nil
}

// MaxLimits bounds the limits of one request: a store applies them all in
// one step (one Lua script on Redis, which blocks the server while it
// runs), so a policy's decision with more is refused, not run.
const MaxLimits = 1024

// Validate checks every limit and the charge of r.
func (r *Request) Validate() error {
	if len(r.Limits) > MaxLimits {
		return fmt.Errorf("%d limits in one request; at most %d are allowed", len(r.Limits), MaxLimits)
	}
	for i := range r.Limits {
		if err := r.Limits[i].Validate(); err != nil {
			return fmt.Errorf("limits[%d]: %w", i, err)
		}
	}
	if r.Charge != nil {
		if err := r.Charge.Validate(); err != nil {
			return fmt.Errorf("charge: %w", err)
		}
		if err := validReservation(r.Charge, r.Reservation); err != nil {
			return fmt.Errorf("charge: %w", err)
		}
		// What the ledger records must be text PostgreSQL takes: an entry
		// it refused would hold up the ledger's stream.
		for _, f := range [...]struct{ name, v string }{
			{"account", r.Charge.Account}, {"consumer", r.Consumer}, {"revision", r.Revision}, {"request id", r.ID}, {"reservation", r.Reservation},
		} {
			if err := ledgerText(f.v); err != nil {
				return fmt.Errorf("charge: %s: %w", f.name, err)
			}
		}
	}
	return nil
}

// ledgerText checks s can be recorded in the ledger: valid UTF-8 without
// NUL.
func ledgerText(s string) error {
	if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("%q is not valid UTF-8 text without NUL", s)
	}
	return nil
}

// MaxReservationID bounds a reservation id (Envoy's x-request-id is a
// 36-character UUID).
const MaxReservationID = 256

// validReservation checks the reservation id of a charge settled later.
func validReservation(c *Charge, id string) error {
	switch {
	case !c.Reserves():
		return nil
	case id == "":
		return fmt.Errorf("settle %q needs the request's reservation id (Envoy's x-request-id)", string(c.Settle))
	case len(id) > MaxReservationID:
		return fmt.Errorf("reservation id is %d bytes long (allowed: up to %d)", len(id), MaxReservationID)
	}
	return nil
}

// MaxCredits bounds balances, charges and top-ups: 2^53-1, the largest
// integer Redis scripts (Lua numbers) handle exactly.
const MaxCredits = 1<<53 - 1
