package directory

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/pg"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Component names the directory's migrations in
// tollgate_schema_migrations.
const Component = "directory"

// Channel is the PostgreSQL notification channel each change is announced
// on (the payload is its seq).
const Channel = "tollgate_directory"

// ListenerApplicationName is the application_name of the connection a
// PGStore's Watch listens on.
const ListenerApplicationName = "tollgate-directory-listener"

// writeLock is the advisory lock every mutation holds from before it
// takes its seq until it commits ("tgdir" in ASCII), so that changes
// commit in seq order and a reader that has seen seq n has seen all before
// it.
const writeLock int64 = 0x7467646972

// Migrate creates or upgrades the directory's tables. Run it once at
// start-up, before NewPG.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return pg.MigrateDir(ctx, pool, Component, migrationFiles, "migrations")
}

// PGOptions configure a PGStore.
type PGOptions struct {
	// KeyPrefix starts generated keys (default "tg_").
	KeyPrefix string
	// MaxBackoff caps the wait between reconnections of the listener
	// (default 5s; the first wait is 100ms, doubling).
	MaxBackoff time.Duration
	Logger     *slog.Logger
	// Registerer receives the listener's metrics; none when nil.
	Registerer prometheus.Registerer
}

// PGStore is the Store of record in PostgreSQL. It is safe for concurrent
// use; it does not own the pool.
type PGStore struct {
	pool       *pgxpool.Pool
	opts       PGOptions
	reconnects prometheus.Counter
}

var _ Store = (*PGStore)(nil)

// NewPG returns a PGStore on a pool whose database Migrate has prepared.
func NewPG(pool *pgxpool.Pool, opts PGOptions) (*PGStore, error) {
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = DefaultKeyPrefix
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	opts.Logger = opts.Logger.With("component", "directory")
	s := &PGStore{pool: pool, opts: opts,
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_directory_listener_reconnects_total",
			Help: "Connection attempts of the directory's change listener after it lost its PostgreSQL connection or failed to connect (changes missed meanwhile are replayed).",
		}),
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(s.reconnects); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Durable implements Store: true.
func (s *PGStore) Durable() bool { return true }

// activeKey is the condition of a key that is neither revoked nor expired
// (now() is the transaction's start).
const activeKey = `revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())`

const (
	consumerCols = `c.id, c.plan, c.status, nullif(c.metadata, '{}'), c.created_at, c.updated_at` // no metadata: a nil map
	keyCols      = `k.id, k.hash, k.prefix, k.consumer, k.name, k.rotated_from, k.created_at, k.expires_at, k.revoked_at, k.last_used_at`
)

func consumerDest(c *Consumer) []any {
	return []any{&c.ID, &c.Plan, &c.Status, &c.Metadata, &c.CreatedAt, &c.UpdatedAt}
}

// keyDest scans into k; hash receives the hash, to be copied with
// setHash.
func keyDest(k *Key, hash *[]byte) []any {
	return []any{&k.ID, hash, &k.Prefix, &k.Consumer, &k.Name, &k.RotatedFrom, &k.CreatedAt, &k.ExpiresAt, &k.RevokedAt, &k.LastUsedAt}
}

func setHash(k *Key, hash []byte) error {
	if len(hash) != 32 {
		return fmt.Errorf("key %q: hash of %d bytes", k.ID, len(hash))
	}
	k.Hash = [32]byte(hash)
	return nil
}

func (s *PGStore) scanConsumer(row pgx.Row) (Consumer, error) {
	var c Consumer
	err := row.Scan(consumerDest(&c)...)
	return c, err
}

func (s *PGStore) scanKey(row pgx.Row) (Key, error) {
	var k Key
	var hash []byte
	if err := row.Scan(keyDest(&k, &hash)...); err != nil {
		return Key{}, err
	}
	return k, setHash(&k, hash)
}

// mutate runs fn in a transaction holding the write lock, unless idem
// was used before: then it returns that call's result id, or
// ErrIdempotencyConflict when the call was a different one.
func (s *PGStore) mutate(ctx context.Context, idem, op string, fp []byte, fn func(tx pgx.Tx) (string, error)) (id string, replayed bool, err error) {
	if err := checkIdempotencyKey(idem); err != nil {
		return "", false, err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, writeLock); err != nil {
			return err
		}
		if idem != "" {
			var gotOp string
			var gotFP []byte
			err := tx.QueryRow(ctx, `SELECT operation, fingerprint, result_id FROM tollgate_directory_idempotency WHERE key = $1`, idem).
				Scan(&gotOp, &gotFP, &id)
			switch {
			case err == nil && (gotOp != op || !bytes.Equal(gotFP, fp)):
				return fmt.Errorf("idempotency key %q (used for %s): %w", idem, gotOp, ErrIdempotencyConflict)
			case err == nil:
				replayed = true
				return nil
			case !errors.Is(err, pgx.ErrNoRows):
				return err
			}
		}
		var err error
		if id, err = fn(tx); err != nil {
			return err
		}
		if idem != "" {
			_, err = tx.Exec(ctx, `INSERT INTO tollgate_directory_idempotency (key, operation, fingerprint, result_id) VALUES ($1, $2, $3, $4)`,
				idem, op, fp, id)
		}
		return err
	})
	return id, replayed, err
}

// logChange appends a change and announces its seq at commit.
func logChange(ctx context.Context, tx pgx.Tx, kind, id, op, actor string) error {
	_, err := tx.Exec(ctx, `WITH c AS (
	INSERT INTO tollgate_directory_changes (kind, id, op, actor) VALUES ($1, $2, $3, $4) RETURNING seq
) SELECT pg_notify('`+Channel+`', seq::text) FROM c`, kind, id, op, actor)
	return err
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

func isForeignKeyViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23503"
}

// PurgeIdempotency forgets the idempotency keys recorded before before
// (a retry that late runs again) and reports how many.
func (s *PGStore) PurgeIdempotency(ctx context.Context, before time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM tollgate_directory_idempotency WHERE created_at < $1`, before)
	if err != nil {
		return 0, fmt.Errorf("directory: purge idempotency keys: %w", err)
	}
	return tag.RowsAffected(), nil
}

// CreateConsumer implements Store.
func (s *PGStore) CreateConsumer(ctx context.Context, m Meta, c Consumer) (Consumer, error) {
	if c.Status == "" {
		c.Status = StatusActive
	}
	if err := checkNewConsumer(c); err != nil {
		return Consumer{}, err
	}
	id, _, err := s.mutate(ctx, m.IdempotencyKey, opCreateConsumer, fingerprint(opCreateConsumer, m.Actor, c.ID, c.Plan, c.Status, c.Metadata), func(tx pgx.Tx) (string, error) {
		_, err := tx.Exec(ctx, `INSERT INTO tollgate_consumers (id, plan, status, metadata) VALUES ($1, $2, $3, coalesce($4::jsonb, '{}'))`,
			c.ID, c.Plan, c.Status, metadataArg(c.Metadata))
		if isUniqueViolation(err) {
			return "", fmt.Errorf("consumer %q: %w", c.ID, ErrExists)
		}
		if err != nil {
			return "", err
		}
		return c.ID, logChange(ctx, tx, "consumer", c.ID, "create", m.Actor)
	})
	if err != nil {
		return Consumer{}, fmt.Errorf("directory: create consumer: %w", err)
	}
	return s.Consumer(ctx, id)
}

// metadataArg is m for a jsonb parameter; nil for none.
func metadataArg(m map[string]any) any {
	if m == nil {
		return nil
	}
	return m
}

// UpdateConsumer implements Store.
func (s *PGStore) UpdateConsumer(ctx context.Context, m Meta, id string, u ConsumerUpdate) (Consumer, error) {
	if err := checkUpdate(u); err != nil {
		return Consumer{}, err
	}
	rid, _, err := s.mutate(ctx, m.IdempotencyKey, opUpdateConsumer, fingerprint(opUpdateConsumer, m.Actor, id, u.Plan, u.Status, u.Metadata), func(tx pgx.Tx) (string, error) {
		tag, err := tx.Exec(ctx, `UPDATE tollgate_consumers SET plan = coalesce($2, plan), status = coalesce($3, status),
	metadata = coalesce($4::jsonb, metadata), updated_at = now() WHERE id = $1`, id, u.Plan, u.Status, metadataArg(u.Metadata))
		if err != nil {
			return "", err
		}
		if tag.RowsAffected() == 0 {
			return "", fmt.Errorf("consumer %q: %w", id, ErrNotFound)
		}
		return id, logChange(ctx, tx, "consumer", id, "update", m.Actor)
	})
	if err != nil {
		return Consumer{}, fmt.Errorf("directory: update consumer: %w", err)
	}
	return s.Consumer(ctx, rid)
}

// Consumer implements Store.
func (s *PGStore) Consumer(ctx context.Context, id string) (Consumer, error) {
	c, err := s.scanConsumer(s.pool.QueryRow(ctx, `SELECT `+consumerCols+` FROM tollgate_consumers c WHERE c.id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Consumer{}, fmt.Errorf("consumer %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Consumer{}, fmt.Errorf("directory: consumer %q: %w", id, err)
	}
	return c, nil
}

func (s *PGStore) key(ctx context.Context, id string) (Key, error) {
	k, err := s.scanKey(s.pool.QueryRow(ctx, `SELECT `+keyCols+` FROM tollgate_keys k WHERE k.id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Key{}, fmt.Errorf("key %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Key{}, fmt.Errorf("directory: key %q: %w", id, err)
	}
	return k, nil
}

// insertKey adds a new key of consumer in tx.
func (s *PGStore) insertKey(ctx context.Context, tx pgx.Tx, actor, consumer, name, rotatedFrom string, expires *time.Time) (NewKey, error) {
	plain, hash, display := GenerateKey(s.opts.KeyPrefix)
	id := newID("key")
	_, err := tx.Exec(ctx, `INSERT INTO tollgate_keys (id, hash, prefix, consumer, name, rotated_from, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		id, hash[:], display, consumer, name, rotatedFrom, expires)
	if isForeignKeyViolation(err) {
		return NewKey{}, fmt.Errorf("consumer %q: %w", consumer, ErrNotFound)
	}
	if err != nil {
		return NewKey{}, err
	}
	if err := logChange(ctx, tx, "key", id, "create", actor); err != nil {
		return NewKey{}, err
	}
	return NewKey{Key: Key{ID: id}, Plaintext: plain}, nil
}

// CreateKey implements Store.
func (s *PGStore) CreateKey(ctx context.Context, m Meta, r KeyRequest) (NewKey, error) {
	if err := checkName(r.Name); err != nil {
		return NewKey{}, err
	}
	r.ExpiresAt = truncate(r.ExpiresAt)
	var nk NewKey
	id, replayed, err := s.mutate(ctx, m.IdempotencyKey, opCreateKey, fingerprint(opCreateKey, m.Actor, r.Consumer, r.Name, r.ExpiresAt), func(tx pgx.Tx) (string, error) {
		var err error
		nk, err = s.insertKey(ctx, tx, m.Actor, r.Consumer, r.Name, "", r.ExpiresAt)
		return nk.Key.ID, err
	})
	return s.newKeyResult(ctx, "create key", nk, id, replayed, err)
}

func (s *PGStore) newKeyResult(ctx context.Context, what string, nk NewKey, id string, replayed bool, err error) (NewKey, error) {
	if err != nil {
		return NewKey{}, fmt.Errorf("directory: %s: %w", what, err)
	}
	k, err := s.key(ctx, id)
	if err != nil {
		return NewKey{}, err
	}
	if replayed {
		return NewKey{Key: k, Replayed: true}, nil
	}
	return NewKey{Key: k, Plaintext: nk.Plaintext}, nil
}

// RotateKey implements Store.
func (s *PGStore) RotateKey(ctx context.Context, m Meta, id string, grace time.Duration) (NewKey, error) {
	if grace < 0 {
		return NewKey{}, fmt.Errorf("%w: grace %s (want 0 or more)", ErrInvalid, grace)
	}
	var nk NewKey
	rid, replayed, err := s.mutate(ctx, m.IdempotencyKey, opRotateKey, fingerprint(opRotateKey, m.Actor, id, grace), func(tx pgx.Tx) (string, error) {
		var consumer, name string
		var active bool
		err := tx.QueryRow(ctx, `SELECT consumer, name, revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
	FROM tollgate_keys WHERE id = $1`, id).Scan(&consumer, &name, &active)
		if errors.Is(err, pgx.ErrNoRows) {
			return "", fmt.Errorf("key %q: %w", id, ErrNotFound)
		}
		if err != nil {
			return "", err
		}
		if !active {
			return "", fmt.Errorf("key %q: %w", id, ErrKeyInactive)
		}
		if _, err := tx.Exec(ctx, `UPDATE tollgate_keys SET expires_at = least(expires_at, now() + $2 * interval '1 microsecond') WHERE id = $1`,
			id, grace.Microseconds()); err != nil {
			return "", err
		}
		if err := logChange(ctx, tx, "key", id, "rotate", m.Actor); err != nil {
			return "", err
		}
		nk, err = s.insertKey(ctx, tx, m.Actor, consumer, name, id, nil)
		return nk.Key.ID, err
	})
	return s.newKeyResult(ctx, "rotate key", nk, rid, replayed, err)
}

// RevokeKey implements Store.
func (s *PGStore) RevokeKey(ctx context.Context, m Meta, id string) (Key, error) {
	rid, _, err := s.mutate(ctx, m.IdempotencyKey, opRevokeKey, fingerprint(opRevokeKey, m.Actor, id), func(tx pgx.Tx) (string, error) {
		var revoked bool
		err := tx.QueryRow(ctx, `SELECT revoked_at IS NOT NULL FROM tollgate_keys WHERE id = $1`, id).Scan(&revoked)
		if errors.Is(err, pgx.ErrNoRows) {
			return "", fmt.Errorf("key %q: %w", id, ErrNotFound)
		}
		if err != nil || revoked {
			return id, err
		}
		if _, err := tx.Exec(ctx, `UPDATE tollgate_keys SET revoked_at = now() WHERE id = $1`, id); err != nil {
			return "", err
		}
		return id, logChange(ctx, tx, "key", id, "revoke", m.Actor)
	})
	if err != nil {
		return Key{}, fmt.Errorf("directory: revoke key: %w", err)
	}
	return s.key(ctx, rid)
}

// SetExpiry implements Store.
func (s *PGStore) SetExpiry(ctx context.Context, m Meta, id string, at *time.Time) (Key, error) {
	at = truncate(at)
	rid, _, err := s.mutate(ctx, m.IdempotencyKey, opSetExpiry, fingerprint(opSetExpiry, m.Actor, id, at), func(tx pgx.Tx) (string, error) {
		tag, err := tx.Exec(ctx, `UPDATE tollgate_keys SET expires_at = $2 WHERE id = $1`, id, at)
		if err != nil {
			return "", err
		}
		if tag.RowsAffected() == 0 {
			return "", fmt.Errorf("key %q: %w", id, ErrNotFound)
		}
		return id, logChange(ctx, tx, "key", id, "expiry", m.Actor)
	})
	if err != nil {
		return Key{}, fmt.Errorf("directory: set expiry: %w", err)
	}
	return s.key(ctx, rid)
}

// ListKeys implements Store.
func (s *PGStore) ListKeys(ctx context.Context, consumer string) ([]Key, error) {
	if _, err := s.Consumer(ctx, consumer); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+keyCols+` FROM tollgate_keys k WHERE k.consumer = $1 ORDER BY k.created_at, k.id`, consumer)
	if err != nil {
		return nil, fmt.Errorf("directory: list keys: %w", err)
	}
	defer rows.Close()
	var out []Key
	for rows.Next() {
		k, err := s.scanKey(rows)
		if err != nil {
			return nil, fmt.Errorf("directory: list keys: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("directory: list keys: %w", err)
	}
	return out, nil
}

// LookupHash implements Store.
func (s *PGStore) LookupHash(ctx context.Context, hash [32]byte) (Consumer, Key, error) {
	var c Consumer
	var k Key
	var h []byte
	err := s.pool.QueryRow(ctx, `SELECT `+keyCols+`, `+consumerCols+` FROM tollgate_keys k JOIN tollgate_consumers c ON c.id = k.consumer WHERE k.hash = $1`,
		hash[:]).Scan(append(keyDest(&k, &h), consumerDest(&c)...)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return Consumer{}, Key{}, ErrNotFound
	}
	if err == nil {
		err = setHash(&k, h)
	}
	if err != nil {
		return Consumer{}, Key{}, fmt.Errorf("directory: lookup: %w", err)
	}
	return c, k, nil
}

// TouchKeys implements Store: one statement, keys in id order.
func (s *PGStore) TouchKeys(ctx context.Context, ids []string, at time.Time) error {
	_, err := s.pool.Exec(ctx, `UPDATE tollgate_keys k SET last_used_at = $2::timestamptz
FROM (SELECT id FROM tollgate_keys WHERE id = ANY($1) ORDER BY id FOR UPDATE) t
WHERE k.id = t.id AND (k.last_used_at IS NULL OR k.last_used_at < $2::timestamptz - $3 * interval '1 microsecond')`,
		ids, at, touchResolution.Microseconds())
	if err != nil {
		return fmt.Errorf("directory: record %d keys used: %w", len(ids), err)
	}
	return nil
}

// ChangesSince implements Store.
func (s *PGStore) ChangesSince(ctx context.Context, seq int64, limit int) ([]Change, error) {
	rows, err := s.pool.Query(ctx, `SELECT ch.seq, ch.op, ch.actor, ch.at, ch.kind = 'key', `+keyCols+`, `+consumerCols+`
FROM tollgate_directory_changes ch
LEFT JOIN tollgate_keys k ON ch.kind = 'key' AND k.id = ch.id
JOIN tollgate_consumers c ON c.id = CASE WHEN ch.kind = 'key' THEN k.consumer ELSE ch.id END
WHERE ch.seq > $1 ORDER BY ch.seq LIMIT $2`, seq, limit)
	if err != nil {
		return nil, fmt.Errorf("directory: changes since %d: %w", seq, err)
	}
	defer rows.Close()
	var out []Change
	for rows.Next() {
		var ch Change
		var isKey bool
		var k struct {
			id, prefix, consumer, name, rotatedFrom *string
			hash                                    []byte
			created, expires, revoked, used         *time.Time
		}
		var c Consumer
		if err := rows.Scan(append([]any{&ch.Seq, &ch.Op, &ch.Actor, &ch.At, &isKey, &k.id, &k.hash, &k.prefix, &k.consumer, &k.name, &k.rotatedFrom,
			&k.created, &k.expires, &k.revoked, &k.used}, consumerDest(&c)...)...); err != nil {
			return nil, fmt.Errorf("directory: changes since %d: %w", seq, err)
		}
		ch.Consumer = &c
		if isKey && k.id != nil {
			key := Key{ID: *k.id, Prefix: *k.prefix, Consumer: *k.consumer, Name: *k.name, RotatedFrom: *k.rotatedFrom,
				CreatedAt: *k.created, ExpiresAt: k.expires, RevokedAt: k.revoked, LastUsedAt: k.used}
			if err := setHash(&key, k.hash); err != nil {
				return nil, err
			}
			ch.Key = &key
		}
		out = append(out, ch)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("directory: changes since %d: %w", seq, err)
	}
	return out, nil
}

// AllHashes implements Store: one REPEATABLE READ snapshot gives the
// hashes and the last seq they include.
func (s *PGStore) AllHashes(ctx context.Context, size func(int), fn func([32]byte)) (int64, error) {
	var seq int64
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, `SELECT (SELECT coalesce(max(seq), 0) FROM tollgate_directory_changes),
	(SELECT count(*) FROM tollgate_keys WHERE `+activeKey+`)`).Scan(&seq, &n); err != nil {
			return err
		}
		size(n)
		rows, err := tx.Query(ctx, `SELECT hash FROM tollgate_keys WHERE `+activeKey)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			raw := rows.RawValues()[0] // binary bytea: the 32 bytes
			if len(raw) != 32 {
				return fmt.Errorf("a key hash of %d bytes", len(raw))
			}
			fn([32]byte(raw))
		}
		return rows.Err()
	})
	if err != nil {
		return 0, fmt.Errorf("directory: read key hashes: %w", err)
	}
	return seq, nil
}

// Watch implements Store: a connection of its own (not from the pool)
// LISTENs on Channel; fn runs after each notification, after each
// (re)connection (so that it reads what was missed), and every poll
// interval without one. A lost connection is opened again after a
// backoff of 100ms doubling up to MaxBackoff.
func (s *PGStore) Watch(ctx context.Context, poll time.Duration, fn func(context.Context)) error {
	cfg := s.pool.Config().ConnConfig.Copy()
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["application_name"] = ListenerApplicationName
	backoff := 100 * time.Millisecond
	for first := true; ctx.Err() == nil; first = false {
		if !first {
			s.reconnects.Inc()
		}
		err := s.listen(ctx, cfg, poll, fn, func() { backoff = 100 * time.Millisecond })
		if ctx.Err() != nil {
			break
		}
		s.opts.Logger.Warn("change listener disconnected; reconnecting", "error", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		backoff = min(2*backoff, s.opts.MaxBackoff)
	}
	return nil
}

// listen runs one connection until it fails or ctx is done.
func (s *PGStore) listen(ctx context.Context, cfg *pgx.ConnConfig, poll time.Duration, fn func(context.Context), connected func()) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `LISTEN `+Channel); err != nil {
		return err
	}
	connected()
	for {
		fn(ctx) // after LISTEN: nothing committed from now on is missed
		wctx, cancel := context.WithTimeout(ctx, poll)
		_, err := conn.WaitForNotification(wctx)
		timedOut := wctx.Err() != nil
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && (!timedOut || conn.IsClosed()) {
			return err
		}
	}
}
