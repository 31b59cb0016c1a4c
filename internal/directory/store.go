package directory

import (
	"context"
	"time"
)

// Store is the directory's store of record. Every mutation takes a Meta:
// who asks (recorded in the change log) and an idempotency key (empty:
// none). A call retried with the same key and the
// same arguments does nothing again and returns what the first call
// created or changed, as it is now (a key without its plaintext); the same
// key with another operation, other arguments or another actor is
// ErrIdempotencyConflict. Every mutation appends to the change log.
type Store interface {
	// CreateConsumer adds a consumer (status active when empty).
	CreateConsumer(ctx context.Context, m Meta, c Consumer) (Consumer, error)
	// UpdateConsumer changes a consumer's plan, status or metadata.
	UpdateConsumer(ctx context.Context, m Meta, id string, u ConsumerUpdate) (Consumer, error)
	// Consumer returns one consumer.
	Consumer(ctx context.Context, id string) (Consumer, error)
	// CreateKey makes a key for an existing consumer; the plaintext is
	// in the result this once.
	CreateKey(ctx context.Context, m Meta, r KeyRequest) (NewKey, error)
	// RotateKey makes a new key for the consumer of key id, with its
	// name, and makes the old one expire after grace (at once when 0),
	// or earlier if it expired earlier already.
	RotateKey(ctx context.Context, m Meta, id string, grace time.Duration) (NewKey, error)
	// RevokeKey revokes a key at once; revoking a revoked key changes
	// nothing.
	RevokeKey(ctx context.Context, m Meta, id string) (Key, error)
	// SetExpiry sets (nil: clears) a key's expiry.
	SetExpiry(ctx context.Context, m Meta, id string, at *time.Time) (Key, error)
	// ListKeys returns a consumer's keys, oldest first; their display
	// prefixes, never their hashes, are for showing.
	ListKeys(ctx context.Context, consumer string) ([]Key, error)
	// LookupHash returns the key with that hash and its consumer, active
	// or not, or ErrNotFound.
	LookupHash(ctx context.Context, hash [32]byte) (Consumer, Key, error)
	// TouchKeys records that keys were used at about at (coarse: a key
	// used within the minute before keeps its time). It is not a change:
	// nothing is logged or announced.
	TouchKeys(ctx context.Context, ids []string, at time.Time) error
	// ChangesSince returns up to limit changes after seq, in order.
	ChangesSince(ctx context.Context, seq int64, limit int) ([]Change, error)
	// AllHashes calls size with the number of keys active now, then add
	// with the hash of each, and returns the change log's position that
	// this set is as of.
	AllHashes(ctx context.Context, size func(n int), add func(hash [32]byte)) (seq int64, err error)
	// Watch calls fn once at start, after each change, after each
	// reconnection (so that changes missed while disconnected are read),
	// and at least every poll interval, until ctx is done. fn runs on
	// Watch's goroutine.
	Watch(ctx context.Context, poll time.Duration, fn func(ctx context.Context)) error
	// Durable reports whether changes outlive the process.
	Durable() bool
}
