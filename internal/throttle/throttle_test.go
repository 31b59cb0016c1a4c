package throttle_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tollgate-dev/tollgate/internal/throttle"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEvery(t *testing.T) {
	var e throttle.Every
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if e.Allow(time.Hour) {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := allowed.Load(); got != 1 {
		t.Errorf("%d events let through within the interval, want 1", got)
	}
	if !e.Allow(0) {
		t.Error("an interval of 0 refused an event")
	}
}
