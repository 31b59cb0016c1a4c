package pgsink_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/tollgate-dev/tollgate/internal/pg/pgtest"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger/pgsink"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var t0 = time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)

// entry i of account: a charge of i+1 credits at t0 + i seconds.
func entry(account string, i int) ledger.Entry {
	return ledger.Entry{
		ID: fmt.Sprintf("%s-%06d", account, i), Account: account, Consumer: "c-" + account, Kind: ledger.Charge,
		Amount: -int64(i + 1), BalanceAfter: 1000 - int64(i), RequestID: fmt.Sprintf("req-%d", i),
		Reason: "credits", PolicyRevision: "rev1", Time: t0.Add(time.Duration(i) * time.Second),
	}
}

func entries(account string, from, to int) []ledger.Entry {
	var out []ledger.Entry
	for i := from; i < to; i++ {
		out = append(out, entry(account, i))
	}
	return out
}

// sumOf is what Sum must say of entries i in [0, n) of an account.
func sumOf(n int) int64 { return -int64(n * (n + 1) / 2) }

// newSink migrates a database of the test's own and returns a Sink on it.
func newSink(t testing.TB, pool *pgxpool.Pool) *pgsink.Sink {
	t.Helper()
	if err := pgsink.Migrate(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	return pgsink.New(pool)
}

func wantSum(t *testing.T, s *pgsink.Sink, account string, n int) {
	t.Helper()
	sum, count, err := s.Sum(context.Background(), account)
	if err != nil {
		t.Fatal(err)
	}
	if sum != sumOf(n) || count != int64(n) {
		t.Errorf("Sum(%s) = %d over %d entries, want %d over %d", account, sum, count, sumOf(n), n)
	}
}

func wantCheckpoint(t *testing.T, s *pgsink.Sink, stream, want string) {
	t.Helper()
	got, err := s.Checkpoint(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("Checkpoint(%s) = %q, want %q", stream, got, want)
	}
}

// TestWriteExactlyOnce: entries delivered twice, or again inside a later
// batch, are recorded once, as they were first written.
func TestWriteExactlyOnce(t *testing.T) {
	ctx := context.Background()
	s := newSink(t, pgtest.New(t).Pool())
	if err := s.Write(ctx, entries("acme", 0, 10)); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, entries("acme", 0, 10)); err != nil {
		t.Fatalf("redelivery: %v", err)
	}
	dup := entries("acme", 5, 20)
	dup = append(dup, dup[0]) // twice in one batch too
	n, err := s.WriteFrom(ctx, "s", dup, "1-20")
	if err != nil {
		t.Fatal(err)
	}
	if n != 10 {
		t.Errorf("WriteFrom recorded %d new entries, want 10 (5..9 were already)", n)
	}
	wantSum(t, s, "acme", 20)
	if err := s.Write(ctx, nil); err != nil {
		t.Errorf("Write(nil) = %v", err)
	}
	// A redelivery does not overwrite: the first write's values stay.
	changed := entry("acme", 0)
	changed.Amount = -999
	if err := s.Write(ctx, []ledger.Entry{changed}); err != nil {
		t.Fatal(err)
	}
	wantSum(t, s, "acme", 20)
	got, _, err := s.Entries(ctx, "acme", pgsink.Cursor{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := entry("acme", 0); len(got) != 1 || got[0] != want {
		t.Errorf("Entries read back %+v, want %+v", got, want)
	}
}

func TestWriteRefusesIncompleteEntries(t *testing.T) {
	s := pgsink.New(nil) // refused before any query
	tests := []struct {
		name string
		edit func(*ledger.Entry)
		want string
	}{
		{"no id", func(e *ledger.Entry) { e.ID = "" }, "entry 1 of 2 has no ID"},
		{"no account", func(e *ledger.Entry) { e.Account = "" }, "entry acme-000001 has no account"},
		{"no kind", func(e *ledger.Entry) { e.Kind = "" }, "entry acme-000001 has no kind"},
		{"no time", func(e *ledger.Entry) { e.Time = time.Time{} }, "entry acme-000001 has no time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es := entries("acme", 0, 2)
			tt.edit(&es[1])
			if err := s.Write(context.Background(), es); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Write: %v, want %q", err, tt.want)
			}
		})
	}
	for _, id := range []string{"", "1", "a-1", "1-b", "-1-0", "1-2-3"} {
		if _, err := s.WriteFrom(context.Background(), "s", nil, id); err == nil || !strings.Contains(err.Error(), "is not a stream ID") {
			t.Errorf("WriteFrom up to %q: %v, want it refused", id, err)
		}
	}
}

// TestCheckpointAtomicWithBatch: the checkpoint moves with its batch or
// not at all, and only forward.
func TestCheckpointAtomicWithBatch(t *testing.T) {
	ctx := context.Background()
	s := newSink(t, pgtest.New(t).Pool())
	wantCheckpoint(t, s, "s", "")
	if _, err := s.WriteFrom(ctx, "s", entries("acme", 0, 5), "100-4"); err != nil {
		t.Fatal(err)
	}
	wantCheckpoint(t, s, "s", "100-4")

	// The server refuses the batch's last entry (PostgreSQL text holds no
	// NUL): none of the batch is recorded and the checkpoint stays.
	bad := entries("acme", 5, 10)
	bad[len(bad)-1].Reason = "nul\x00"
	if _, err := s.WriteFrom(ctx, "s", bad, "100-9"); err == nil {
		t.Fatal("WriteFrom of a batch the server refuses succeeded")
	}
	wantCheckpoint(t, s, "s", "100-4")
	wantSum(t, s, "acme", 5)

	// Retried, fixed: both move.
	n, err := s.WriteFrom(ctx, "s", entries("acme", 5, 10), "100-9")
	if err != nil || n != 5 {
		t.Fatalf("WriteFrom = %d, %v; want 5 new", n, err)
	}
	wantCheckpoint(t, s, "s", "100-9")

	// A late batch (an older position) records its new entries but
	// leaves the checkpoint where it is; sequence numbers compare as
	// numbers, not text.
	if _, err := s.WriteFrom(ctx, "s", entries("acme", 0, 11), "100-10"); err != nil {
		t.Fatal(err)
	}
	for _, older := range []string{"100-9", "99-99", "0-0"} {
		if err := s.SetCheckpoint(ctx, "s", older); err != nil {
			t.Fatal(err)
		}
	}
	wantCheckpoint(t, s, "s", "100-10")
	wantSum(t, s, "acme", 11)
	if err := s.SetCheckpoint(ctx, "s", "101-0"); err != nil {
		t.Fatal(err)
	}
	wantCheckpoint(t, s, "s", "101-0")
	wantCheckpoint(t, s, "other", "")
}

// TestConcurrentOverlappingWriters: shippers delivering the same and
// overlapping batches at once, half of them in the opposite order, record
// each entry once, without deadlocks (the rows go in ID order; without it
// this test meets "deadlock detected"), and the checkpoint ends at the
// furthest position.
func TestConcurrentOverlappingWriters(t *testing.T) {
	ctx := context.Background()
	s := newSink(t, pgtest.New(t).Pool())
	const rounds, writers, size = 10, 6, 300
	for round := range rounds {
		var wg sync.WaitGroup
		errs := make([]error, writers)
		for w := range writers {
			wg.Go(func() {
				from := round*size + w*10 // overlapping batches
				batch := entries("acme", from, from+size)
				if w%2 == 1 {
					slices.Reverse(batch)
				}
				_, errs[w] = s.WriteFrom(ctx, "s", batch, fmt.Sprintf("%d-%d", round, w))
			})
		}
		wg.Wait()
		for w, err := range errs {
			if err != nil {
				t.Fatalf("round %d, writer %d: %v", round, w, err)
			}
		}
	}
	n := (rounds-1)*size + (writers-1)*10 + size
	wantSum(t, s, "acme", n)
	wantCheckpoint(t, s, "s", fmt.Sprintf("%d-%d", rounds-1, writers-1))
}

// TestEntriesPagination: pages in (time, id) order, ties on time broken by
// ID, other accounts left out, the last page saying so.
func TestEntriesPagination(t *testing.T) {
	ctx := context.Background()
	s := newSink(t, pgtest.New(t).Pool())
	all := entries("acme", 0, 25)
	for i := range all {
		all[i].Time = t0.Add(time.Duration(i/3) * time.Second) // three at each time
	}
	slices.Reverse(all)
	if err := s.Write(ctx, append(all, entries("other", 0, 7)...)); err != nil {
		t.Fatal(err)
	}
	slices.Reverse(all)
	for _, size := range []int{1, 7, 10, 25, 1000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			var got []ledger.Entry
			var after pgsink.Cursor
			pages := 0
			for {
				page, next, err := s.Entries(ctx, "acme", after, size)
				if err != nil {
					t.Fatal(err)
				}
				pages++
				got = append(got, page...)
				if next.IsZero() {
					break
				}
				if pages > 30 {
					t.Fatal("no end of pages")
				}
				after = next
			}
			if !slices.Equal(got, all) {
				t.Errorf("pages of %d gave %d entries:\n%v\nwant %d:\n%v", size, len(got), ids(got), len(all), ids(all))
			}
			// A full last page is followed by an empty one: it cannot
			// know it was the last.
			if want := 25/size + 1; pages != want {
				t.Errorf("%d pages, want %d", pages, want)
			}
		})
	}
	for _, size := range []int{0, -1, pgsink.MaxPage + 1} {
		if _, _, err := s.Entries(ctx, "acme", pgsink.Cursor{}, size); err == nil {
			t.Errorf("Entries with page size %d: no error", size)
		}
	}
}

func ids(es []ledger.Entry) string {
	var b strings.Builder
	for _, e := range es {
		b.WriteString(e.ID[len(e.ID)-2:] + " ")
	}
	return b.String()
}

// TestOutageMidWrite: with the network to PostgreSQL cut, a write fails
// cleanly; when the reply of a committed write is lost, the retry adds
// nothing; after the outage the retries succeed, each entry recorded once.
func TestOutageMidWrite(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	direct := newSink(t, db.Pool())
	proxy := db.Proxy()
	// One connection, so the statement prepared on it is the one the
	// write whose reply is lost runs (a new connection would wait for
	// its handshake's reply instead).
	cfg, err := pgxpool.ParseConfig(proxy.DSN)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := pgsink.New(pool)
	if _, err := s.WriteFrom(ctx, "s", entries("acme", 0, 10), "1-9"); err != nil {
		t.Fatal(err)
	}

	// Cut: the write fails, nothing of it is recorded.
	proxy.Cut()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = s.WriteFrom(cctx, "s", entries("acme", 10, 20), "1-19")
	cancel()
	if err == nil {
		t.Fatal("WriteFrom through a cut connection succeeded")
	}
	proxy.Restore()
	wantSum(t, s, "acme", 10)
	wantCheckpoint(t, s, "s", "1-9")
	if err := s.SetCheckpoint(ctx, "s", "1-9"); err != nil { // prepares the write on the new connection
		t.Fatal(err)
	}

	// The write commits but its reply is lost: the shipper sees a
	// failure and will deliver the batch again.
	// It waits for the reply until the shipper gives up, once the write
	// has committed (seen on a direct connection; a fixed timeout could
	// cancel it before).
	proxy.DropReplies()
	cctx, cancel = context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := s.WriteFrom(cctx, "s", entries("acme", 10, 20), "1-19")
		done <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, count, err := direct.Sum(ctx, "acme"); err != nil || count == 20 || time.Now().After(deadline) {
			break
		}
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("WriteFrom without a reply succeeded")
	}
	wantSum(t, direct, "acme", 20) // committed all the same
	wantCheckpoint(t, direct, "s", "1-19")
	proxy.Cut()
	proxy.Restore()

	// The shipper's retry after the outage adds nothing; the next batch
	// goes on from there.
	n, err := s.WriteFrom(ctx, "s", entries("acme", 10, 20), "1-19")
	if err != nil {
		t.Fatalf("retry after the outage: %v", err)
	}
	if n != 0 {
		t.Errorf("the retry recorded %d entries again, want 0 (the lost reply's write had committed)", n)
	}
	if _, err := s.WriteFrom(ctx, "s", entries("acme", 20, 30), "1-29"); err != nil {
		t.Fatal(err)
	}
	wantSum(t, s, "acme", 30)
	wantCheckpoint(t, s, "s", "1-29")
}
