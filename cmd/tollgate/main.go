// Command tollgate is an Envoy external-authorization and rate-limit
// service for API monetization, driven by Rego policies.
//
//	tollgate serve [--config FILE]
//	tollgate policy test [-v] PATH...
//	tollgate policy eval --input FILE [--config FILE] [--policy PATH]... [--decision PATH]
//	tollgate credits add|show ...
//	tollgate ledger show|verify ...
//	tollgate keys create|list|rotate|revoke|expire ...
//	tollgate consumers create|show|update ...
//	tollgate usage [--consumer C] [--from T] [--to T] [--period day|month] [--csv]
//	tollgate routes validate|render FILE
//	tollgate version
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, errUsage):
		os.Exit(2)
	case errors.Is(err, errTestsFailed):
		os.Exit(1)
	default:
		fmt.Fprintln(os.Stderr, "tollgate:", err)
		os.Exit(1)
	}
}

// errUsage means the usage was already printed.
var errUsage = errors.New("usage")

const usage = `Tollgate: Envoy ext_authz and rate limiting for API monetization, driven by Rego.

Usage:
  tollgate serve [--config FILE]             run the gRPC and admin servers
                                             (no config: embedded demo policy on loopback)
  tollgate policy test [-v] PATH...          run the *_test.rego tests under PATH
  tollgate policy eval --input FILE [--config FILE] [--policy PATH]... [--decision PATH]
                                             evaluate one CheckRequest (JSON) and print
                                             the decision and the CheckResponse
  tollgate credits add ACCOUNT AMOUNT [--idempotency-key KEY] [--admin URL] [--token TOKEN]
                                             top up prepaid credits (admin API)
  tollgate credits show ACCOUNT [--admin URL] [--token TOKEN]
                                             show an account's balance and quota usage
  tollgate ledger show ACCOUNT [--limit N] [--after CURSOR] [--admin URL] [--token TOKEN]
                                             an account's ledger entries (admin API, PostgreSQL)
  tollgate ledger verify [ACCOUNT...] [--admin URL] [--token TOKEN]
                                             reconcile balances with the ledger; exit 1 on drift
  tollgate consumers create ID --plan P [--status S] [--metadata JSON] [--idempotency-key KEY]
                                             add a consumer to the key directory (admin API)
  tollgate consumers show ID | update ID [--plan P] [--status active|suspended] [--metadata JSON]
                                             show or change a consumer
  tollgate keys create CONSUMER [--name N] [--expires T] [--idempotency-key KEY]
                                             create an API key; prints it once to stdout
  tollgate keys list CONSUMER                a consumer's keys (display prefixes only)
  tollgate keys rotate KEY_ID [--grace 24h]  replace a key; the old one works for the grace
  tollgate keys revoke KEY_ID | expire KEY_ID --at T|--never
                                             stop a key now, or set when it expires
  tollgate usage [--consumer C] [--from T] [--to T] [--period day|month] [--csv] [--admin URL] [--token TOKEN]
                                             requests and credits per consumer, period, route, plan
  tollgate routes validate FILE              check an xDS routes file without a server
  tollgate routes render FILE                print the Envoy resources it becomes (JSON)
  tollgate version                           print version information
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		return version(stdout)
	case "policy":
		if len(args) < 2 {
			fmt.Fprint(stderr, usage)
			return errUsage
		}
		switch args[1] {
		case "test":
			return policyTest(ctx, args[2:], stdout, stderr)
		case "eval":
			return policyEval(ctx, args[2:], stdout, stderr)
		}
	case "credits":
		return creditsCmd(ctx, args[1:], stdout, stderr)
	case "ledger":
		return ledgerCmd(ctx, args[1:], stdout, stderr)
	case "keys":
		return keysCmd(ctx, args[1:], stdout, stderr)
	case "consumers":
		return consumersCmd(ctx, args[1:], stdout, stderr)
	case "usage":
		return usageCmd(ctx, args[1:], stdout, stderr)
	case "routes":
		return routesCmd(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "tollgate: unknown command %q\n\n%s", args[0], usage)
	return errUsage
}
