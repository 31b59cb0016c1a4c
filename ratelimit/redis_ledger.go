package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
)

var _ ledger.Source = (*RedisStore)(nil)

// Streams implements ledger.Source: outside a Cluster, the one stream
// "ledger"; in a Cluster, one per hash slot, named by the slot's tag.
func (s *RedisStore) Streams() []string {
	if !s.cluster {
		return []string{"ledger"}
	}
	return append([]string(nil), slotTags()...)
}

// streamKey is the Redis key of a stream name.
func streamKey(name string) string { return "tollgate:{" + name + "}:ledger" }

// Read implements ledger.Source with one pipelined XRANGE per stream (in a
// Cluster, go-redis sends each node its own pipeline).
func (s *RedisStore) Read(ctx context.Context, after map[string]string, n int) (map[string][]ledger.Entry, error) {
	cmds := make(map[string]*redis.XMessageSliceCmd, len(after))
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for name, pos := range after {
			start := "-"
			if pos != "" {
				start = "(" + pos
			}
			cmds[name] = p.XRangeN(ctx, streamKey(name), start, "+", int64(n))
		}
		return nil
	})
	if err != nil && err != redis.Nil {
		return nil, fmt.Errorf("redis ledger read: %w", err)
	}
	out := make(map[string][]ledger.Entry, len(cmds))
	for name, cmd := range cmds {
		msgs, err := cmd.Result()
		if err != nil && err != redis.Nil {
			return nil, fmt.Errorf("redis ledger read %s: %w", name, err)
		}
		if len(msgs) == 0 {
			continue
		}
		entries := make([]ledger.Entry, 0, len(msgs))
		for _, m := range msgs {
			e, err := parseLedgerEntry(name, m)
			if err != nil {
				return nil, err
			}
			entries = append(entries, e)
		}
		out[name] = entries
	}
	return out, nil
}

// Trim implements ledger.Source: XTRIM MINID past each position, but
// never the last TrimLag (SetTrimLag) of entries: a void finds a lost
// Take's entry there (after that it asks the durable ledger). What the lag
// held back is trimmed by a later call (a system with no traffic at all
// keeps its last TrimLag of entries).
func (s *RedisStore) Trim(ctx context.Context, through map[string]string) error {
	keep := strconv.FormatInt(time.Now().Add(-s.trimLag).UnixMilli(), 10) + "-0"
	s.trimMu.Lock()
	defer s.trimMu.Unlock()
	if s.deferred == nil {
		s.deferred = map[string]string{}
	}
	for name, pos := range through {
		next, err := nextStreamID(pos)
		if err != nil {
			return err
		}
		s.deferred[name] = next
	}
	done := make([]string, 0, len(s.deferred))
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for name, next := range s.deferred {
			if streamIDLess(keep, next) {
				next = keep
			} else {
				done = append(done, name)
			}
			p.XTrimMinID(ctx, streamKey(name), next)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis ledger trim: %w", err)
	}
	for _, name := range done {
		delete(s.deferred, name)
	}
	return nil
}

// TrimLag is how long ledger entries stay in Redis after they were
// shipped by default (10 s of charges: about 1 MB per 1,000 charges a
// second).
const TrimLag = 10 * time.Second

// SetTrimLag sets how long shipped entries stay (TrimLag by default; call
// before use). Voids of lost replies find their Take there; past it they
// ask the durable ledger.
func (s *RedisStore) SetTrimLag(d time.Duration) { s.trimLag = d }

// streamIDLess compares two stream IDs ("ms-seq").
func streamIDLess(a, b string) bool {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	x, _ := strconv.ParseUint(am, 10, 64)
	y, _ := strconv.ParseUint(bm, 10, 64)
	if x != y {
		return x < y
	}
	p, _ := strconv.ParseUint(as, 10, 64)
	q, _ := strconv.ParseUint(bs, 10, 64)
	return p < q
}

// nextStreamID is the stream ID right after id ("ms-seq").
func nextStreamID(id string) (string, error) {
	ms, seq, ok := strings.Cut(id, "-")
	n, err := strconv.ParseUint(seq, 10, 64)
	if !ok || err != nil {
		return "", fmt.Errorf("ledger position %q is not a stream ID", id)
	}
	return ms + "-" + strconv.FormatUint(n+1, 10), nil
}

// parseLedgerEntry reads an entry the scripts wrote (take.lua, void.lua,
// credit.lua).
func parseLedgerEntry(stream string, m redis.XMessage) (ledger.Entry, error) {
	e := ledger.Entry{ID: stream + "/" + m.ID}
	str := func(k string) string { v, _ := m.Values[k].(string); return v }
	num := func(k string) (int64, error) {
		n, err := strconv.ParseInt(str(k), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("ledger entry %s: field %q: %w", e.ID, k, err)
		}
		return n, nil
	}
	var err error
	if e.Amount, err = num("n"); err != nil {
		return e, err
	}
	if e.BalanceAfter, err = num("b"); err != nil {
		return e, err
	}
	us, err := num("t")
	if err != nil {
		return e, err
	}
	e.Time = time.UnixMicro(us).UTC()
	e.Kind = ledger.Kind(str("k"))
	e.Account, e.Consumer, e.RequestID = str("a"), str("c"), str("r")
	e.Reason, e.PolicyRevision = str("why"), str("p")
	return e, nil
}
