package pgsink

import (
	"context"
	"fmt"

	"github.com/tollgate-dev/tollgate/ratelimit"
)

var _ ratelimit.PendingStore = (*Sink)(nil)

// maxPendingLoad bounds what one start loads.
const maxPendingLoad = 100_000

// SavePending implements ratelimit.PendingStore; an item kept already is
// left as it is.
func (s *Sink) SavePending(ctx context.Context, items []ratelimit.Pending) error {
	n := len(items)
	kind, account, id, rsv, settle, reason := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	credits, capture := make([]int64, n), make([]bool, n)
	for i, p := range items {
		kind[i], account[i], id[i], rsv[i], settle[i], reason[i] = p.Kind, p.Account, p.ID, p.Reservation, string(p.Settle), p.Reason
		credits[i], capture[i] = p.Credits, p.Capture
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO tollgate_pending (kind, account, id, reservation, credits, settle, capture, reason)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::boolean[], $8::text[])
		ORDER BY 1, 2, 3
		ON CONFLICT (kind, account, id) DO NOTHING`, kind, account, id, rsv, credits, settle, capture, reason)
	if err != nil {
		return fmt.Errorf("ledger: save %d pending: %w", n, err)
	}
	return nil
}

// LoadPending implements ratelimit.PendingStore, oldest first.
func (s *Sink) LoadPending(ctx context.Context) ([]ratelimit.Pending, error) {
	rows, err := s.pool.Query(ctx, `SELECT kind, account, id, reservation, credits, settle, capture, reason
		FROM tollgate_pending ORDER BY created_at LIMIT $1`, maxPendingLoad)
	if err != nil {
		return nil, fmt.Errorf("ledger: load pending: %w", err)
	}
	defer rows.Close()
	var out []ratelimit.Pending
	for rows.Next() {
		var p ratelimit.Pending
		var settle string
		if err := rows.Scan(&p.Kind, &p.Account, &p.ID, &p.Reservation, &p.Credits, &settle, &p.Capture, &p.Reason); err != nil {
			return nil, fmt.Errorf("ledger: load pending: %w", err)
		}
		p.Settle = ratelimit.Settle(settle)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: load pending: %w", err)
	}
	return out, nil
}

// DeletePending implements ratelimit.PendingStore.
func (s *Sink) DeletePending(ctx context.Context, items []ratelimit.Pending) error {
	n := len(items)
	kind, account, id := make([]string, n), make([]string, n), make([]string, n)
	for i, p := range items {
		kind[i], account[i], id[i] = p.Kind, p.Account, p.ID
	}
	_, err := s.pool.Exec(ctx, `DELETE FROM tollgate_pending p
		USING unnest($1::text[], $2::text[], $3::text[]) AS d(kind, account, id)
		WHERE p.kind = d.kind AND p.account = d.account AND p.id = d.id`, kind, account, id)
	if err != nil {
		return fmt.Errorf("ledger: delete %d pending: %w", n, err)
	}
	return nil
}
