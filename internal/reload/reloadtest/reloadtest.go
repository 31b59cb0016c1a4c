// Package reloadtest has the waits and checks that tests of reloading
// components share: wait on a status change with a deadline (never a
// fixed sleep), and prove that only the real change caused a reload.
package reloadtest

import (
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/reload"
)

// WaitFor polls cond until it holds, failing the test after 5 seconds.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// OneReload checks that between two statuses exactly one reload happened:
// one success, no unchanged build and no failure. Taken around unrelated
// writes followed by one real change (waited for), it proves the
// unrelated writes caused nothing.
func OneReload(t testing.TB, before, after reload.Status) {
	t.Helper()
	if after.Reloads != before.Reloads+1 || after.Unchanged != before.Unchanged || after.Failures != before.Failures {
		t.Errorf("reloads %d→%d, unchanged %d→%d, failures %d→%d: want exactly one reload, for the real change",
			before.Reloads, after.Reloads, before.Unchanged, after.Unchanged, before.Failures, after.Failures)
	}
}
