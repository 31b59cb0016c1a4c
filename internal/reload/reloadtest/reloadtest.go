// Package reloadtest has the waits and checks that tests of reloading
// components share: wait on a status change with a deadline (never a
// fixed sleep), and prove that only the real change caused a reload.
package reloadtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/reload"
)

// WaitFor polls cond until it holds, failing the test after 20 seconds
// (a reload under -race on a busy 2-core machine has taken over 5).
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(20 * time.Second)
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

// WriteUnrelated writes every one of paths (files the reloader under test
// must ignore: a log beside a routes file) rounds times. After each round
// it waits until a control reloader, which watches exactly those files,
// has loaded the round: so each write was delivered, and a debounce
// passed before the next round, and a reloader that reacted to them would
// have built by then (counted in its status as a reload, an unchanged
// build or a failure). No fixed sleep is involved.
func WriteUnrelated(t testing.TB, rounds int, paths ...string) {
	t.Helper()
	read := func(context.Context) (*reload.Built, error) {
		var all strings.Builder
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, err
			}
			all.Write(b)
		}
		return &reload.Built{Revision: fmt.Sprintf("%x", all.String()), Files: paths, Detail: all.String()}, nil
	}
	write := func(round int) {
		for _, p := range paths {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(strconv.Itoa(round)+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(0)
	control, err := reload.New(context.Background(), reload.Options{
		Component: "control", Paths: paths, Build: read, Watch: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = control.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for round := 1; round <= rounds; round++ {
		write(round)
		want := strings.Repeat(strconv.Itoa(round)+"\n", len(paths))
		WaitFor(t, "the control reloader to see round "+strconv.Itoa(round), func() bool {
			return control.Status().Detail == want
		})
	}
}
