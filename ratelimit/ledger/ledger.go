// Package ledger is the record of every balance change the limit engine
// makes — charges, refunds, top-ups, and (with settle-on-delivery)
// reservations, captures and releases. A store records each entry in the
// same atomic step as the change it describes (the Redis store: inside the
// same script); a shipper then delivers the entries at least once to a Sink,
// which makes them exactly once by their ID (PostgreSQL: a unique key).
package ledger

import (
	"context"
	"time"
)

// Kind is what changed a balance.
type Kind string

// The kinds of balance change.
const (
	Charge  Kind = "charge"  // a request's credits taken at Check
	Refund  Kind = "refund"  // a charge given back (a voided or undeliverable request)
	TopUp   Kind = "topup"   // credits added through the admin API
	Reserve Kind = "reserve" // credits held for a request settled later
	Capture Kind = "capture" // held credits taken
	Release Kind = "release" // held credits given back
)

// Entry is one balance change.
type Entry struct {
	// ID is unique across the store: a Sink keeps one row per ID, so an
	// entry delivered twice is recorded once.
	ID string `json:"id"`
	// Account is the balance that changed.
	Account string `json:"account"`
	// Consumer made the request (empty for top-ups).
	Consumer string `json:"consumer,omitempty"`
	Kind     Kind   `json:"kind"`
	// Amount is the signed change of the balance: negative for a charge.
	Amount int64 `json:"amount"`
	// BalanceAfter is the balance right after the change.
	BalanceAfter int64 `json:"balance_after"`
	// RequestID is the request's id (a charge, its refund), or the
	// idempotency key of a top-up.
	RequestID string `json:"request_id,omitempty"`
	// Reason says why, in the decision's words ("credits", "refund:void").
	Reason string `json:"reason,omitempty"`
	// PolicyRevision is the policy in force when the request was decided.
	PolicyRevision string `json:"policy_revision,omitempty"`
	// Time is the store's time of the change.
	Time time.Time `json:"time"`
}

// Sink receives entries at least once and records each exactly once (by
// ID). Write returns only when every entry is durable; on error the caller
// retries them.
type Sink interface {
	Write(ctx context.Context, entries []Entry) error
}

// Source is a store's record of entries: one or more streams, each read in
// the order it was written. Each stream has a short name; an entry's ID is
// "<stream>/<position>", its position in the stream.
type Source interface {
	// Streams names the streams to ship; they are fixed for a store.
	Streams() []string
	// Read returns, for each stream in after, up to n entries recorded
	// after the position after[stream] ("": from the oldest), in order.
	Read(ctx context.Context, after map[string]string, n int) (map[string][]Entry, error)
	// Trim forgets the entries of each stream up to and including the
	// position given (they are durable elsewhere).
	Trim(ctx context.Context, through map[string]string) error
}

// Position is the position part of an entry's ID ("<stream>/<position>").
func Position(id string) string {
	for i := len(id) - 1; i >= 0; i-- {
		if id[i] == '/' {
			return id[i+1:]
		}
	}
	return id
}
