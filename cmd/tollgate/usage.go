package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

const usageUsage = `Usage:
  tollgate usage [--consumer C] [--from T] [--to T] [--period day|month] [--csv] [--admin URL] [--token TOKEN]
                   print, per consumer, period (UTC), route (method and path as logged) and plan,
                   the requests allowed, denied by reason, and the credits charged and refunded

  --consumer C     one consumer (default: all)
  --from T         an RFC 3339 time or a date, included (default: the start of to's month)
  --to T           an RFC 3339 time, excluded, or a date, included (default: now)
  --period P       day or month (default day)
  --csv            print CSV (RFC 4180, with a header row) instead of JSON
  --admin URL      Tollgate's admin listener (default http://127.0.0.1:9192)
  --token TOKEN    an admin token of the server with scope read: admin.token, or one of
                   admin.tokens (default $TOLLGATE_ADMIN_TOKEN)
` + adminTLSUsage + `
The range is at most 366 days. Usage is read from the decision logs in PostgreSQL: the
server needs postgres and decision_logs (enabled: true, sink: postgres) configured.
`

// maxUsageBody bounds a usage report read (10,000 groups fit many times).
const maxUsageBody = 64 << 20

// usageCmd runs "tollgate usage" against a running server's admin API.
func usageCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const cmd = "usage"
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usageUsage) }
	var af adminFlags
	af.register(fs)
	consumer := fs.String("consumer", "", "one consumer (default: all)")
	from := fs.String("from", "", "RFC 3339 time or date, included")
	to := fs.String("to", "", "RFC 3339 time (excluded) or date (included)")
	period := fs.String("period", "day", "day or month")
	asCSV := fs.Bool("csv", false, "print CSV instead of JSON")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return errUsage
	}
	if len(pos) != 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q (use --consumer)\n\n%s", cmd, pos[0], usageUsage)
		return errUsage
	}
	c, err := af.client(cmd, stderr)
	if err != nil {
		return err
	}
	c.maxBody = maxUsageBody
	q := url.Values{"period": {*period}}
	for k, v := range map[string]string{"consumer": *consumer, "from": *from, "to": *to} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if *asCSV {
		q.Set("format", "csv")
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/usage?"+q.Encode(), nil, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	if *asCSV {
		_, err := stdout.Write(resp)
		return err
	}
	return printJSON(stdout, resp)
}
