// Package directory is the key directory: consumers (who pays, on which
// plan) and their API keys, stored hashed (SHA-256, never the key itself),
// and a Resolver that turns a presented credential into its consumer on
// the hot path without a database round trip at steady state.
//
// Stores: PostgreSQL (the store of record; every change is one
// transaction that writes the row and a row of an append-only change log,
// then notifies every replica) and memory (seeded from a file; not
// durable). A Resolver on each replica keeps a bounded cache of resolved
// keys and a membership filter of every key hash, and follows the change
// log so that a revocation, rotation or plan change is seen everywhere
// within a second.
package directory

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"
)

// Consumer statuses. A suspended consumer still resolves (with its
// status) so that the policy can answer 402 or 403 with a reason rather
// than 401.
const (
	StatusActive    = "active"
	StatusSuspended = "suspended"
)

// DefaultKeyPrefix starts every generated key unless Options say
// otherwise.
const DefaultKeyPrefix = "tg_"

// Errors callers branch on.
var (
	// ErrNotFound: no such consumer or key.
	ErrNotFound = errors.New("not found")
	// ErrExists: a consumer with that id exists already.
	ErrExists = errors.New("already exists")
	// ErrIdempotencyConflict: the idempotency key was used before for a
	// different operation or different arguments.
	ErrIdempotencyConflict = errors.New("idempotency key reused with a different request")
	// ErrInvalid: an argument is out of its allowed range (the message
	// says which and what is allowed).
	ErrInvalid = errors.New("invalid")
	// ErrKeyInactive: the key is revoked (or expired) and cannot be
	// rotated.
	ErrKeyInactive = errors.New("key is revoked or expired")
)

// Consumer is who a key belongs to.
type Consumer struct {
	ID        string         `json:"id"`
	Plan      string         `json:"plan"`
	Status    string         `json:"status"`
	Metadata  map[string]any `json:"metadata,omitempty"`
	CreatedAt time.Time      `json:"created_at"`
	UpdatedAt time.Time      `json:"updated_at"`
}

// Key is an API key as stored: its SHA-256 hash and a short display
// prefix, never the key.
type Key struct {
	ID       string   `json:"id"`
	Hash     [32]byte `json:"-"`
	Prefix   string   `json:"prefix"` // the key prefix and the first 8 characters after it
	Consumer string   `json:"consumer"`
	Name     string   `json:"name"`
	// RotatedFrom is the key this one replaced, if any.
	RotatedFrom string     `json:"rotated_from,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	RevokedAt   *time.Time `json:"revoked_at,omitempty"`
	// LastUsedAt is coarse (each replica writes the keys it saw used
	// in batches, every TouchInterval; a time within a minute of the one
	// stored is not written), nil when never recorded.
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

// Active reports whether the key is neither revoked nor expired at now.
func (k *Key) Active(now time.Time) bool {
	return k.RevokedAt == nil && (k.ExpiresAt == nil || now.Before(*k.ExpiresAt))
}

// Resolved is what a credential resolves to. A Resolver shares one value
// between callers: treat it as read-only.
type Resolved struct {
	Consumer Consumer
	Key      Key
	// memo is what a reader derived from this value (Memo).
	memo atomic.Pointer[any]
}

// Memo returns what build derives from r: built on the first call and
// kept with r, so that every later caller shares it (a change to the
// consumer or key makes a new Resolved). build must depend on r alone, and
// callers must treat its result as read-only; two first calls at once
// may both build, and one result is kept.
func (r *Resolved) Memo(build func(*Resolved) any) any {
	if p := r.memo.Load(); p != nil {
		return *p
	}
	v := build(r)
	if r.memo.CompareAndSwap(nil, &v) {
		return v
	}
	return *r.memo.Load()
}

// NewKey is a key just created: the stored Key and its plaintext, which
// is returned this once and never stored. On an idempotent replay
// Plaintext is empty and Replayed is true (the plaintext cannot be shown
// again: rotate the key if it was lost).
type NewKey struct {
	Key       Key
	Plaintext string
	Replayed  bool
}

// KeyRequest describes a key to create.
type KeyRequest struct {
	Consumer  string
	Name      string
	ExpiresAt *time.Time
}

// ConsumerUpdate changes the fields that are set (nil leaves a field as
// it is). Metadata replaces the whole map.
type ConsumerUpdate struct {
	Plan     *string
	Status   *string
	Metadata map[string]any
}

// Meta comes with every change: who asks for it, and how to recognise
// its retries.
type Meta struct {
	// IdempotencyKey makes a retried call do nothing again (empty: none;
	// at most 128 bytes).
	IdempotencyKey string
	// Actor is who made the change (an admin token's name, "cli"...),
	// recorded in the change log for audit.
	Actor string
}

// Change is one entry of the change log with the current state of what
// it changed: a consumer, or a key (with its consumer). A Resolver applies
// changes in Seq order; applying the same change twice is harmless.
type Change struct {
	Seq      int64
	Op       string    // create, update, rotate, revoke or expiry
	Actor    string    // Meta.Actor of the call
	At       time.Time // when it was made
	Consumer *Consumer // the consumer changed, or the key's consumer
	Key      *Key      // nil for a consumer change
}

// Hash is the SHA-256 of a credential, as stored.
func Hash(credential string) [32]byte {
	// The string's bytes, read and never kept or written: no copy.
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(credential), len(credential)))
}

// HashHex is Hash as lowercase hex, as seed files and data files write it.
func HashHex(credential string) string {
	h := Hash(credential)
	return hex.EncodeToString(h[:])
}

var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// keyRandomBytes is the randomness of a generated key: 160 bits, 32
// base32 characters.
const keyRandomBytes = 20

// displayChars is how many characters after the key prefix the display
// prefix keeps (40 of its 160 bits: enough to tell keys apart in a list,
// too few to help a guess).
const displayChars = 8

// GenerateKey returns a new key: prefix and 160 bits from crypto/rand in
// lowercase base32, with its hash and display prefix.
func GenerateKey(prefix string) (plaintext string, hash [32]byte, display string) {
	var b [keyRandomBytes]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics rather)
	plaintext = prefix + lowerBase32.EncodeToString(b[:])
	return plaintext, Hash(plaintext), plaintext[:len(prefix)+displayChars]
}

// newID returns a random identifier with a kind prefix ("key_...").
func newID(kind string) string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return kind + "_" + lowerBase32.EncodeToString(b[:])
}

// touchResolution: a key's last use is not written again within this of
// the one stored.
const touchResolution = time.Minute

// maxIDLen bounds consumer ids, key names and idempotency keys.
const maxIDLen = 128

// checkConsumerID refuses ids that are empty, too long, or carry
// characters other than letters, digits and . _ - : @.
func checkConsumerID(id string) error {
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("%w: consumer id %q: want 1 to %d characters", ErrInvalid, id, maxIDLen)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-:@", r)) {
			return fmt.Errorf("%w: consumer id %q: character %q (allowed: letters, digits and . _ - : @)", ErrInvalid, id, r)
		}
	}
	return nil
}

func checkStatus(s string) error {
	if s != StatusActive && s != StatusSuspended {
		return fmt.Errorf("%w: status %q (allowed: %s, %s)", ErrInvalid, s, StatusActive, StatusSuspended)
	}
	return nil
}

func checkName(name string) error {
	if len(name) > maxIDLen {
		return fmt.Errorf("%w: key name of %d bytes (at most %d)", ErrInvalid, len(name), maxIDLen)
	}
	return nil
}

func checkIdempotencyKey(k string) error {
	if len(k) > maxIDLen {
		return fmt.Errorf("%w: idempotency key of %d bytes (at most %d)", ErrInvalid, len(k), maxIDLen)
	}
	return nil
}
