package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

const ledgerUsage = `Usage:
  tollgate ledger show ACCOUNT [--limit N] [--after CURSOR] [--admin URL] [--token TOKEN]
                                    print ACCOUNT's ledger entries, oldest first, a page
                                    at a time (the page's "next" is the --after of the next)
  tollgate ledger verify [ACCOUNT...] [--admin URL] [--token TOKEN]
                                    reconcile each ACCOUNT's balance (every account in the
                                    ledger without one) with its ledger; exits 1 when one
                                    drifts (entries not shipped yet drift briefly: verify
                                    waits up to 10 s for the drift to clear)

  --admin URL      Tollgate's admin listener (default http://127.0.0.1:9192)
  --token TOKEN    an admin token of the server with scope read: admin.token, or one of
                   admin.tokens (default $TOLLGATE_ADMIN_TOKEN)
` + adminTLSUsage + `
The ledger is kept in PostgreSQL: the server needs postgres configured.
`

// driftHint says what a lasting drift means.
const driftHint = `
A drift that lasts means Redis lost balance changes it had acknowledged, after the ledger had
shipped them to PostgreSQL: a failover to a replica that had not received them (replication is
asynchronous), or a restart without appendonly. A positive drift is charges lost (the balance
still has credits the customer spent); a negative one, top-ups or refunds lost, or changes made
to the balance outside Tollgate. Changes lost before they were shipped leave no trace in either.
`

// errDrift: verify found an account whose ledger does not match its
// balance.
var errDrift = errors.New("the ledger does not match the balance")

// ledgerCmd runs "tollgate ledger show|verify" against a running server's
// admin API.
func ledgerCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, "ledger", ledgerUsage, map[string]command{
		"show":   ledgerShow,
		"verify": ledgerVerify,
	}, args, stdout, stderr)
}

func ledgerShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const cmd = "ledger show"
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, ledgerUsage) }
	var af adminFlags
	af.register(fs)
	limit := fs.Int("limit", 100, "entries per page (1 to 1000)")
	after := fs.String("after", "", "the next cursor of the previous page")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return errUsage
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "%s: want ACCOUNT, got %d argument(s)\n\n%s", cmd, len(pos), ledgerUsage)
		return errUsage
	}
	c, err := af.client(cmd, stderr)
	if err != nil {
		return err
	}
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	if *after != "" {
		q.Set("after", *after)
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/accounts/"+url.PathEscape(pos[0])+"/ledger?"+q.Encode(), nil, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	return printJSON(stdout, resp)
}

func ledgerVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const cmd = "ledger verify"
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, ledgerUsage) }
	var af adminFlags
	af.register(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return errUsage
	}
	c, err := af.client(cmd, stderr)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		if pos, err = ledgerAccounts(ctx, c); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
	}
	drifted := 0
	for _, account := range pos {
		v, err := verifyAccount(ctx, c, account)
		if err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		status := "ok"
		if v.Drift != 0 {
			status = "DRIFT"
			drifted++
		}
		fmt.Fprintf(stdout, "%-6s %s: balance %d, ledger %d (%d entries), drift %d\n", status, account, v.Balance, v.LedgerSum, v.Entries, v.Drift)
	}
	if drifted > 0 {
		fmt.Fprint(stdout, driftHint)
		return fmt.Errorf("%s: %d of %d accounts: %w", cmd, drifted, len(pos), errDrift)
	}
	return nil
}

// ledgerAccounts lists every account the ledger has entries of.
func ledgerAccounts(ctx context.Context, c *adminClient) ([]string, error) {
	var all []string
	after := ""
	for {
		q := url.Values{"limit": {"1000"}}
		if after != "" {
			q.Set("after", after)
		}
		resp, err := c.do(ctx, http.MethodGet, "/v1/accounts?"+q.Encode(), nil, nil)
		if err != nil {
			return nil, err
		}
		var page struct {
			Accounts []string `json:"accounts"`
			Next     string   `json:"next"`
		}
		if err := json.Unmarshal(resp, &page); err != nil {
			return nil, fmt.Errorf("the server answered with invalid JSON: %w", err)
		}
		all = append(all, page.Accounts...)
		if page.Next == "" {
			return all, nil
		}
		after = page.Next
	}
}

// verification is the admin API's answer to a ledger verify.
type verification struct {
	Balance   int64 `json:"balance"`
	LedgerSum int64 `json:"ledger_sum"`
	Entries   int64 `json:"entries"`
	Drift     int64 `json:"drift"`
}

// How often and how far apart verify asks again while an account drifts.
var verifyTries, verifyPause = 20, 500 * time.Millisecond

// verifyAccount asks the server to verify account, again for up to 10 s
// while it drifts: entries on their way to PostgreSQL drift briefly.
func verifyAccount(ctx context.Context, c *adminClient, account string) (verification, error) {
	var v verification
	for attempt := 0; attempt < verifyTries; attempt++ {
		resp, err := c.do(ctx, http.MethodGet, "/v1/accounts/"+url.PathEscape(account)+"/ledger/verify", nil, nil)
		if err != nil {
			return v, err
		}
		if err := json.Unmarshal(resp, &v); err != nil {
			return v, fmt.Errorf("the server answered with invalid JSON: %w", err)
		}
		if v.Drift == 0 {
			return v, nil
		}
		if err := sleepCtx(ctx, verifyPause); err != nil {
			return v, err
		}
	}
	return v, nil
}

// sleepCtx waits d, or less when ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
