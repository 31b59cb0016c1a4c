package pgsink

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Usage periods.
const (
	PeriodDay   = "day"
	PeriodMonth = "month"
)

// MaxUsageRows is the most groups one Usage call returns.
const MaxUsageRows = 10000

// UsageQuery selects the decisions and ledger entries a usage report
// counts.
type UsageQuery struct {
	// Consumer limits the report to one consumer; "" reports them all.
	Consumer string
	// From and To bound the time, From included, To not.
	From, To time.Time
	// Period is PeriodDay or PeriodMonth, in UTC.
	Period string
	// Limit is the most groups returned (1 to MaxUsageRows); a report
	// with more is refused with ErrTooManyRows.
	Limit int
}

// UsageRow is one group: a consumer, a period, a route (method and path
// as logged) and a plan.
type UsageRow struct {
	Consumer string    `json:"consumer"`
	Period   time.Time `json:"period"` // its start, UTC
	Method   string    `json:"method"`
	Path     string    `json:"path"`
	Plan     string    `json:"plan"`
	Allowed  int64     `json:"allowed"`
	// Denied counts the denials by reason.
	Denied map[string]int64 `json:"denied"`
	// Charged is the credits the ledger's charges took, Refunded those
	// its refunds gave back, Credits the difference.
	Charged  int64 `json:"charged"`
	Refunded int64 `json:"refunded"`
	Credits  int64 `json:"credits"`
}

// TooManyRowsError says a report has more groups than its limit.
type TooManyRowsError struct{ Limit int }

func (e *TooManyRowsError) Error() string {
	return fmt.Sprintf("the report has more than %d groups: narrow the range, pick a consumer, or use period month", e.Limit)
}

// usageSQL counts decisions per group (a request both services logged,
// by its request id, once: its ext_authz record, which has the route) and sums the ledger's charges and
// refunds per group. A ledger entry belongs to the route and plan of its
// request's decision (same consumer; the entry's request_id is the
// decision's charge id, Outcome.ChargeID: random, made once per charged
// Take, so at most one decision has it); an entry whose decision is not
// in tollgate_decisions (no request id, sampled out, dropped, deleted by
// retention) is in a group with an empty method, path and plan. An entry
// counts in the period of its own time: a refund recorded in the next
// period than its charge lowers that period's credits, so each period's
// credits are what the ledger moved in it.
const usageSQL = `WITH dec AS (
	SELECT consumer, date_trunc($3, time, 'UTC') AS period, method, path, plan, allow, reason, count(*) AS n
	FROM tollgate_decisions d
	WHERE time >= $1 AND time < $2 AND ($4 = '' OR consumer = $4)
		AND (service = 'authz' OR request_id = '' OR NOT EXISTS (
			SELECT 1 FROM tollgate_decisions a
			WHERE a.consumer = d.consumer AND a.request_id = d.request_id AND a.request_id <> '' AND a.service = 'authz'))
	GROUP BY 1, 2, 3, 4, 5, 6, 7
), req AS (
	SELECT consumer, period, method, path, plan,
		coalesce(sum(n) FILTER (WHERE allow), 0)::bigint AS allowed,
		coalesce(jsonb_object_agg(reason, n) FILTER (WHERE NOT allow), '{}') AS denied
	FROM dec GROUP BY 1, 2, 3, 4, 5
), cred AS (
	-- Each entry goes to one decision: the latest with its charge id
	-- (reservation ids are Envoy's x-request-id, which can repeat), of
	-- its consumer when the entry names one (refunds and releases may not).
	SELECT coalesce(nullif(l.consumer, ''), d.consumer, '') AS consumer, date_trunc($3, l.time, 'UTC') AS period,
		coalesce(d.method, '') AS method, coalesce(d.path, '') AS path, coalesce(d.plan, '') AS plan,
		coalesce(-sum(l.amount) FILTER (WHERE l.kind IN ('charge', 'reserve')), 0)::bigint AS charged,
		coalesce(sum(l.amount) FILTER (WHERE l.kind IN ('refund', 'release')), 0)::bigint AS refunded
	FROM tollgate_ledger l
	LEFT JOIN LATERAL (
		SELECT d.consumer, d.method, d.path, d.plan FROM tollgate_decisions d
		WHERE d.charge_id = l.request_id AND d.charge_id <> '' AND (l.consumer = '' OR d.consumer = l.consumer)
		ORDER BY d.time DESC LIMIT 1
	) d ON true
	WHERE l.kind IN ('charge', 'refund', 'reserve', 'release') AND l.time >= $1 AND l.time < $2
		AND ($4 = '' OR coalesce(nullif(l.consumer, ''), d.consumer, '') = $4)
	GROUP BY 1, 2, 3, 4, 5
)
SELECT consumer, period, method, path, plan,
	coalesce(allowed, 0), coalesce(denied, '{}'), coalesce(charged, 0), coalesce(refunded, 0)
FROM req FULL JOIN cred USING (consumer, period, method, path, plan)
ORDER BY consumer, period, method, path, plan
LIMIT $5`

// Usage reports requests allowed, denied by reason, and credits per
// consumer, period, route and plan, ordered by them. It reads
// tollgate_ledger too: the ledger's tables must be migrated.
func (s *Sink) Usage(ctx context.Context, q UsageQuery) ([]UsageRow, error) {
	if q.Period != PeriodDay && q.Period != PeriodMonth {
		return nil, fmt.Errorf("usage: period %q (allowed: day, month)", q.Period)
	}
	if q.Limit < 1 || q.Limit > MaxUsageRows {
		return nil, fmt.Errorf("usage: limit %d is out of range (allowed: 1 to %d)", q.Limit, MaxUsageRows)
	}
	rows, err := s.pool.Query(ctx, usageSQL, q.From, q.To, q.Period, q.Consumer, q.Limit+1)
	if err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	defer rows.Close()
	out := []UsageRow{}
	for rows.Next() {
		var r UsageRow
		var denied []byte
		if err := rows.Scan(&r.Consumer, &r.Period, &r.Method, &r.Path, &r.Plan, &r.Allowed, &denied, &r.Charged, &r.Refunded); err != nil {
			return nil, fmt.Errorf("usage: %w", err)
		}
		if err := json.Unmarshal(denied, &r.Denied); err != nil {
			return nil, fmt.Errorf("usage: denied: %w", err)
		}
		r.Period = r.Period.UTC()
		r.Credits = r.Charged - r.Refunded
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	if len(out) > q.Limit {
		return nil, &TooManyRowsError{Limit: q.Limit}
	}
	return out, nil
}
