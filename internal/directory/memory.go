package directory

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"time"
)

// MemoryStore is a Store in this process's memory, for the embedded
// default (no PostgreSQL): changes are lost when the process ends
// (Durable is false), and other replicas do not see them.
type MemoryStore struct {
	prefix string
	now    func() time.Time

	mu        sync.Mutex
	consumers map[string]*Consumer
	keys      map[string]*Key
	byHash    map[[32]byte]string
	log       []logEntry // log[i] has seq i+1
	idem      map[string]idemRecord
	changed   chan struct{} // closed and replaced on each change
}

type logEntry struct {
	key       bool
	id        string
	op, actor string
	at        time.Time
}

type idemRecord struct {
	fp     []byte
	result string // the id of what the operation created or changed
}

var _ Store = (*MemoryStore)(nil)

// MemoryOptions configure a MemoryStore.
type MemoryOptions struct {
	// KeyPrefix starts generated keys (default "tg_").
	KeyPrefix string
}

// NewMemory returns an empty MemoryStore.
func NewMemory(opts MemoryOptions) *MemoryStore {
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = DefaultKeyPrefix
	}
	return &MemoryStore{
		prefix:    opts.KeyPrefix,
		now:       func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) },
		consumers: map[string]*Consumer{},
		keys:      map[string]*Key{},
		byHash:    map[[32]byte]string{},
		idem:      map[string]idemRecord{},
		changed:   make(chan struct{}),
	}
}

// Durable implements Store: false.
func (s *MemoryStore) Durable() bool { return false }

// appendLog records a change and wakes the watchers; s.mu is held.
func (s *MemoryStore) appendLog(key bool, id, op, actor string) {
	s.log = append(s.log, logEntry{key: key, id: id, op: op, actor: actor, at: s.now()})
	close(s.changed)
	s.changed = make(chan struct{})
}

// replay returns the result of an earlier call with idem, if any; s.mu
// is held.
func (s *MemoryStore) replay(idem string, fp []byte) (string, bool, error) {
	if idem == "" {
		return "", false, nil
	}
	if err := checkIdempotencyKey(idem); err != nil {
		return "", false, err
	}
	r, ok := s.idem[idem]
	if !ok {
		return "", false, nil
	}
	if !bytes.Equal(r.fp, fp) {
		return "", false, fmt.Errorf("idempotency key %q: %w", idem, ErrIdempotencyConflict)
	}
	return r.result, true, nil
}

func (s *MemoryStore) remember(idem string, fp []byte, result string) {
	if idem != "" {
		s.idem[idem] = idemRecord{fp: fp, result: result}
	}
}

func copyConsumer(c *Consumer) Consumer {
	out := *c
	out.Metadata = maps.Clone(c.Metadata)
	return out
}

// CreateConsumer implements Store.
func (s *MemoryStore) CreateConsumer(ctx context.Context, m Meta, c Consumer) (Consumer, error) {
	if c.Status == "" {
		c.Status = StatusActive
	}
	if err := checkNewConsumer(c); err != nil {
		return Consumer{}, err
	}
	fp := fingerprint(opCreateConsumer, m.Actor, c.ID, c.Plan, c.Status, c.Metadata)
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok, err := s.replay(m.IdempotencyKey, fp); err != nil || ok {
		return s.consumerLocked(id, err)
	}
	if _, ok := s.consumers[c.ID]; ok {
		return Consumer{}, fmt.Errorf("consumer %q: %w", c.ID, ErrExists)
	}
	now := s.now()
	c.CreatedAt, c.UpdatedAt = now, now
	c.Metadata = maps.Clone(c.Metadata)
	s.consumers[c.ID] = &c
	s.appendLog(false, c.ID, "create", m.Actor)
	s.remember(m.IdempotencyKey, fp, c.ID)
	return copyConsumer(&c), nil
}

func checkNewConsumer(c Consumer) error {
	if err := checkConsumerID(c.ID); err != nil {
		return err
	}
	if err := checkStatus(c.Status); err != nil {
		return err
	}
	return checkMetadata(c.Metadata)
}

func checkUpdate(u ConsumerUpdate) error {
	if u.Status != nil {
		if err := checkStatus(*u.Status); err != nil {
			return err
		}
	}
	return checkMetadata(u.Metadata)
}

func (s *MemoryStore) consumerLocked(id string, err error) (Consumer, error) {
	if err != nil {
		return Consumer{}, err
	}
	c, ok := s.consumers[id]
	if !ok {
		return Consumer{}, fmt.Errorf("consumer %q: %w", id, ErrNotFound)
	}
	return copyConsumer(c), nil
}

// UpdateConsumer implements Store.
func (s *MemoryStore) UpdateConsumer(ctx context.Context, m Meta, id string, u ConsumerUpdate) (Consumer, error) {
	if err := checkUpdate(u); err != nil {
		return Consumer{}, err
	}
	fp := fingerprint(opUpdateConsumer, m.Actor, id, u.Plan, u.Status, u.Metadata)
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok, err := s.replay(m.IdempotencyKey, fp); err != nil || ok {
		return s.consumerLocked(id, err)
	}
	c, ok := s.consumers[id]
	if !ok {
		return Consumer{}, fmt.Errorf("consumer %q: %w", id, ErrNotFound)
	}
	next := copyConsumer(c)
	if u.Plan != nil {
		next.Plan = *u.Plan
	}
	if u.Status != nil {
		next.Status = *u.Status
	}
	if u.Metadata != nil {
		next.Metadata = maps.Clone(u.Metadata)
	}
	next.UpdatedAt = s.now()
	s.consumers[id] = &next
	s.appendLog(false, id, "update", m.Actor)
	s.remember(m.IdempotencyKey, fp, id)
	return copyConsumer(&next), nil
}

// Consumer implements Store.
func (s *MemoryStore) Consumer(ctx context.Context, id string) (Consumer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.consumerLocked(id, nil)
}

func (s *MemoryStore) keyLocked(id string, err error) (Key, error) {
	if err != nil {
		return Key{}, err
	}
	k, ok := s.keys[id]
	if !ok {
		return Key{}, fmt.Errorf("key %q: %w", id, ErrNotFound)
	}
	return *k, nil
}

// addKey stores a new key of consumer; s.mu is held.
func (s *MemoryStore) addKey(actor, consumer, name, rotatedFrom string, expires *time.Time) NewKey {
	plain, hash, display := GenerateKey(s.prefix)
	k := &Key{ID: newID("key"), Hash: hash, Prefix: display, Consumer: consumer, Name: name,
		RotatedFrom: rotatedFrom, CreatedAt: s.now(), ExpiresAt: expires}
	s.keys[k.ID] = k
	s.byHash[hash] = k.ID
	s.appendLog(true, k.ID, "create", actor)
	return NewKey{Key: *k, Plaintext: plain}
}

// CreateKey implements Store.
func (s *MemoryStore) CreateKey(ctx context.Context, m Meta, r KeyRequest) (NewKey, error) {
	if err := checkName(r.Name); err != nil {
		return NewKey{}, err
	}
	fp := fingerprint(opCreateKey, m.Actor, r.Consumer, r.Name, r.ExpiresAt)
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok, err := s.replay(m.IdempotencyKey, fp); err != nil || ok {
		k, err := s.keyLocked(id, err)
		return NewKey{Key: k, Replayed: err == nil}, err
	}
	if _, ok := s.consumers[r.Consumer]; !ok {
		return NewKey{}, fmt.Errorf("consumer %q: %w", r.Consumer, ErrNotFound)
	}
	nk := s.addKey(m.Actor, r.Consumer, r.Name, "", truncate(r.ExpiresAt))
	s.remember(m.IdempotencyKey, fp, nk.Key.ID)
	return nk, nil
}

func truncate(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC().Truncate(time.Microsecond)
	return &u
}

// RotateKey implements Store.
func (s *MemoryStore) RotateKey(ctx context.Context, m Meta, id string, grace time.Duration) (NewKey, error) {
	if grace < 0 {
		return NewKey{}, fmt.Errorf("%w: grace %s (want 0 or more)", ErrInvalid, grace)
	}
	fp := fingerprint(opRotateKey, m.Actor, id, grace)
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok, err := s.replay(m.IdempotencyKey, fp); err != nil || ok {
		k, err := s.keyLocked(id, err)
		return NewKey{Key: k, Replayed: err == nil}, err
	}
	old, ok := s.keys[id]
	if !ok {
		return NewKey{}, fmt.Errorf("key %q: %w", id, ErrNotFound)
	}
	now := s.now()
	if !old.Active(now) {
		return NewKey{}, fmt.Errorf("key %q: %w", id, ErrKeyInactive)
	}
	until := now.Add(grace)
	next := *old
	if next.ExpiresAt == nil || until.Before(*next.ExpiresAt) {
		next.ExpiresAt = &until
	}
	s.keys[id] = &next
	s.appendLog(true, id, "rotate", m.Actor)
	nk := s.addKey(m.Actor, old.Consumer, old.Name, id, nil)
	s.remember(m.IdempotencyKey, fp, nk.Key.ID)
	return nk, nil
}

// RevokeKey implements Store.
func (s *MemoryStore) RevokeKey(ctx context.Context, m Meta, id string) (Key, error) {
	fp := fingerprint(opRevokeKey, m.Actor, id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok, err := s.replay(m.IdempotencyKey, fp); err != nil || ok {
		return s.keyLocked(id, err)
	}
	k, ok := s.keys[id]
	if !ok {
		return Key{}, fmt.Errorf("key %q: %w", id, ErrNotFound)
	}
	if k.RevokedAt == nil {
		next := *k
		now := s.now()
		next.RevokedAt = &now
		s.keys[id] = &next
		s.appendLog(true, id, "revoke", m.Actor)
		k = &next
	}
	s.remember(m.IdempotencyKey, fp, id)
	return *k, nil
}

// SetExpiry implements Store.
func (s *MemoryStore) SetExpiry(ctx context.Context, m Meta, id string, at *time.Time) (Key, error) {
	at = truncate(at)
	fp := fingerprint(opSetExpiry, m.Actor, id, at)
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok, err := s.replay(m.IdempotencyKey, fp); err != nil || ok {
		return s.keyLocked(id, err)
	}
	k, ok := s.keys[id]
	if !ok {
		return Key{}, fmt.Errorf("key %q: %w", id, ErrNotFound)
	}
	next := *k
	next.ExpiresAt = at
	s.keys[id] = &next
	s.appendLog(true, id, "expiry", m.Actor)
	s.remember(m.IdempotencyKey, fp, id)
	return next, nil
}

// ListKeys implements Store.
func (s *MemoryStore) ListKeys(ctx context.Context, consumer string) ([]Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.consumers[consumer]; !ok {
		return nil, fmt.Errorf("consumer %q: %w", consumer, ErrNotFound)
	}
	var out []Key
	for _, k := range s.keys {
		if k.Consumer == consumer {
			out = append(out, *k)
		}
	}
	slices.SortFunc(out, func(a, b Key) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return cmpString(a.ID, b.ID)
	})
	return out, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// LookupHash implements Store.
func (s *MemoryStore) LookupHash(ctx context.Context, hash [32]byte) (Consumer, Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.byHash[hash]
	if !ok {
		return Consumer{}, Key{}, ErrNotFound
	}
	k := s.keys[id]
	return copyConsumer(s.consumers[k.Consumer]), *k, nil
}

// TouchKeys implements Store.
func (s *MemoryStore) TouchKeys(ctx context.Context, ids []string, at time.Time) error {
	at = at.UTC().Truncate(time.Microsecond)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if k, ok := s.keys[id]; ok && (k.LastUsedAt == nil || k.LastUsedAt.Before(at.Add(-touchResolution))) {
			next := *k
			next.LastUsedAt = &at
			s.keys[id] = &next
		}
	}
	return nil
}

// ChangesSince implements Store.
func (s *MemoryStore) ChangesSince(ctx context.Context, seq int64, limit int) ([]Change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Change
	for i := max(seq, 0); i < int64(len(s.log)) && len(out) < limit; i++ {
		e := s.log[i]
		ch := Change{Seq: i + 1, Op: e.op, Actor: e.actor, At: e.at}
		if e.key {
			k := *s.keys[e.id]
			ch.Key = &k
			c := copyConsumer(s.consumers[k.Consumer])
			ch.Consumer = &c
		} else {
			c := copyConsumer(s.consumers[e.id])
			ch.Consumer = &c
		}
		out = append(out, ch)
	}
	return out, nil
}

// AllHashes implements Store.
func (s *MemoryStore) AllHashes(ctx context.Context, size func(int), add func([32]byte)) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	n := 0
	for _, k := range s.keys {
		if k.Active(now) {
			n++
		}
	}
	size(n)
	for _, k := range s.keys {
		if k.Active(now) {
			add(k.Hash)
		}
	}
	return int64(len(s.log)), nil
}

// Watch implements Store.
func (s *MemoryStore) Watch(ctx context.Context, poll time.Duration, fn func(context.Context)) error {
	t := time.NewTimer(poll)
	defer t.Stop()
	for {
		s.mu.Lock()
		changed := s.changed
		s.mu.Unlock()
		fn(ctx)
		t.Reset(poll)
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-t.C:
		}
	}
}

// The seed file: consumers, each with its keys, given either as the key
// itself (hashed on load; for demos) or as its SHA-256 in hex.
type seedFile struct {
	Consumers []seedConsumer `json:"consumers"`
}

type seedConsumer struct {
	ID       string         `json:"id"`
	Plan     string         `json:"plan"`
	Status   string         `json:"status"`
	Metadata map[string]any `json:"metadata"`
	Keys     []seedKey      `json:"keys"`
}

type seedKey struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Key       string     `json:"key"`
	SHA256    string     `json:"sha256"`
	ExpiresAt *time.Time `json:"expires_at"`
}

// LoadMemory returns a MemoryStore seeded from a JSON file:
//
//	{"consumers": [{"id": "acme", "plan": "pro", "status": "active", "metadata": {},
//	  "keys": [{"id": "key_acme", "name": "default", "key": "tg_demo_acme"}]}]}
//
// A key is given as "key" (the key itself, hashed on load) or "sha256"
// (its hash in hex). Unknown fields are errors; so are duplicate ids and
// hashes.
func LoadMemory(file string, opts MemoryOptions) (*MemoryStore, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("directory seed: %w", err)
	}
	var seed seedFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&seed); err != nil {
		return nil, fmt.Errorf("directory seed %s: %w", file, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("directory seed %s: more than one JSON value", file)
	}
	s := NewMemory(opts)
	if err := s.seed(seed); err != nil {
		return nil, fmt.Errorf("directory seed %s: %w", file, err)
	}
	return s, nil
}

func (s *MemoryStore) seed(seed seedFile) error {
	now := s.now()
	for i, sc := range seed.Consumers {
		c := Consumer{ID: sc.ID, Plan: sc.Plan, Status: sc.Status, Metadata: sc.Metadata, CreatedAt: now, UpdatedAt: now}
		if c.Status == "" {
			c.Status = StatusActive
		}
		if err := checkNewConsumer(c); err != nil {
			return fmt.Errorf("consumers[%d]: %w", i, err)
		}
		if _, ok := s.consumers[c.ID]; ok {
			return fmt.Errorf("consumers[%d]: consumer %q: %w", i, c.ID, ErrExists)
		}
		s.consumers[c.ID] = &c
		s.appendLog(false, c.ID, "create", "seed")
		for j, sk := range sc.Keys {
			at := fmt.Sprintf("consumers[%d].keys[%d]", i, j)
			var hash [32]byte
			switch {
			case (sk.Key == "") == (sk.SHA256 == ""):
				return fmt.Errorf("%s: set one of key and sha256", at)
			case sk.Key != "":
				hash = Hash(sk.Key)
			default:
				h, err := hex.DecodeString(sk.SHA256)
				if err != nil || len(h) != 32 {
					return fmt.Errorf("%s: sha256 %q: want 64 hex digits", at, sk.SHA256)
				}
				hash = [32]byte(h)
			}
			if _, dup := s.byHash[hash]; dup {
				return fmt.Errorf("%s: the same key as another", at)
			}
			if err := checkName(sk.Name); err != nil {
				return fmt.Errorf("%s: %w", at, err)
			}
			id := sk.ID
			if id == "" {
				id = newID("key")
			}
			if _, dup := s.keys[id]; dup {
				return fmt.Errorf("%s: key id %q: %w", at, id, ErrExists)
			}
			display := sk.Key
			if display == "" {
				display = "sha256:" + sk.SHA256[:displayChars]
			} else {
				// Never more than a quarter of a seeded key: seed keys may
				// be short, and the prefix is shown to read-only tokens.
				display = display[:min(len(display)/4, len(s.prefix)+displayChars)]
			}
			k := &Key{ID: id, Hash: hash, Prefix: display, Consumer: c.ID, Name: sk.Name, CreatedAt: now, ExpiresAt: truncate(sk.ExpiresAt)}
			s.keys[id] = k
			s.byHash[hash] = id
			s.appendLog(true, id, "create", "seed")
		}
	}
	return nil
}
