package pgsink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-dev/tollgate/ratelimit"
)

var _ ratelimit.PendingStore = (*Sink)(nil)

// maxPendingLoad bounds what one start loads.
const maxPendingLoad = 100_000

// SavePending implements ratelimit.PendingStore; an item kept already is
// left as it is.
func (s *Sink) SavePending(ctx context.Context, items []ratelimit.Pending) error {
	n := len(items)
	kind, account, id, rsv, settle, reason, state := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	credits, capture := make([]int64, n), make([]bool, n)
	for i, p := range items {
		kind[i], account[i], id[i], rsv[i], settle[i], reason[i], state[i] = p.Kind, p.Account, p.ID, p.Reservation, string(p.Settle), p.Reason, p.State
		credits[i], capture[i] = p.Credits, p.Capture
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO tollgate_pending (kind, account, id, reservation, credits, settle, capture, reason, state)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::boolean[], $8::text[], $9::text[])
		ORDER BY 1, 2, 3
		ON CONFLICT (kind, account, id) DO NOTHING`, kind, account, id, rsv, credits, settle, capture, reason, state)
	if err != nil {
		return fmt.Errorf("ledger: save %d pending: %w", n, err)
	}
	return nil
}

// LoadPending implements ratelimit.PendingStore, oldest first.
func (s *Sink) LoadPending(ctx context.Context) ([]ratelimit.Pending, error) {
	rows, err := s.pool.Query(ctx, `SELECT kind, account, id, reservation, credits, settle, capture, reason, state
		FROM tollgate_pending ORDER BY created_at LIMIT $1`, maxPendingLoad)
	if err != nil {
		return nil, fmt.Errorf("ledger: load pending: %w", err)
	}
	defer rows.Close()
	var out []ratelimit.Pending
	for rows.Next() {
		var p ratelimit.Pending
		var settle string
		if err := rows.Scan(&p.Kind, &p.Account, &p.ID, &p.Reservation, &p.Credits, &settle, &p.Capture, &p.Reason, &p.State); err != nil {
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

// FindCharge is a ratelimit.DurableLedger: the credits of requestID's
// charge to account, recorded between from and to (a void looks here once
// the entries of its window were trimmed from Redis; they were shipped
// first).
func (s *Sink) FindCharge(ctx context.Context, account, requestID string, from, to time.Time) (int64, bool, error) {
	var amount int64
	err := s.pool.QueryRow(ctx, `SELECT -amount FROM tollgate_ledger
		WHERE account = $1 AND time >= $2 AND time <= $3 AND request_id = $4 AND kind = 'charge'
		LIMIT 1`, account, from, to, requestID).Scan(&amount)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("ledger: find charge: %w", err)
	}
	return amount, true, nil
}
