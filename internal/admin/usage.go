package admin

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/internal/decisionlog/pgsink"
)

// Usage is what the usage API reads; *pgsink.Sink (the decision logs in
// PostgreSQL) implements it.
type Usage interface {
	Usage(ctx context.Context, q pgsink.UsageQuery) ([]pgsink.UsageRow, error)
}

var _ Usage = (*pgsink.Sink)(nil)

// MaxUsageRange is the longest range one usage request may cover.
const MaxUsageRange = 366 * 24 * time.Hour

// usageTimeout bounds one report's query: it shares the pool with the
// ledger's shipper and the decision log's writer.
const usageTimeout = 60 * time.Second

// usageReport is the JSON body of GET /v1/usage.
type usageReport struct {
	Consumer string     `json:"consumer,omitempty"`
	From     time.Time  `json:"from"`
	To       time.Time  `json:"to"`
	Period   string     `json:"period"`
	Rows     []usageRow `json:"rows"`
}

type usageRow struct {
	Consumer string           `json:"consumer"`
	Period   string           `json:"period"` // 2026-11-30 (day) or 2026-11 (month), UTC
	Method   string           `json:"method"`
	Path     string           `json:"path"`
	Plan     string           `json:"plan"`
	Allowed  int64            `json:"allowed"`
	Denied   map[string]int64 `json:"denied"` // by reason
	Charged  int64            `json:"charged"`
	Refunded int64            `json:"refunded"`
	Credits  int64            `json:"credits"`
}

// UsageHandler serves GET /v1/usage on the admin listener: per consumer,
// period (UTC day or month), route (method and path as logged) and plan,
// the requests allowed, denied by reason, and the credits the ledger
// charged and refunded, as JSON or CSV:
//
//	GET /v1/usage?consumer=acme&from=2026-11-01&to=2026-11-30&period=day|month&format=json|csv&limit=N
//
// from and to are RFC 3339 times or dates (UTC); to is excluded, except a
// date, whose whole day is included. By default to is now and from the
// start of to's month. The range may not exceed MaxUsageRange; a report of
// more than limit groups (default and most pgsink.MaxUsageRows) is refused
// (400 result_too_large) rather than cut. usage nil (no decision logs in
// PostgreSQL) answers 404 usage_off. Every request must carry a bearer
// token with scope read; no tokens refuses them all (403).
func UsageHandler(usage Usage, tokens *Tokens, log *slog.Logger) http.Handler {
	if !tokens.On() {
		return disabled()
	}
	if log == nil {
		log = slog.Default()
	}
	api := &usageAPI{usage: usage, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/usage", need(ScopeRead, api.serve))
	mux.HandleFunc("/v1/usage", methodNotAllowed("GET, HEAD"))
	return tokens.authenticate(mux)
}

type usageAPI struct {
	usage Usage // nil: usage is off
	log   *slog.Logger
}

func (a *usageAPI) serve(w http.ResponseWriter, r *http.Request) {
	if a.usage == nil {
		writeProblem(w, http.StatusNotFound, problemUsageOff,
			"no usage records: configure postgres (postgres.dsn) and decision_logs (enabled: true, sink: postgres)")
		return
	}
	q, format, detail := parseUsageQuery(r, time.Now())
	if detail != "" {
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, detail)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), usageTimeout)
	defer cancel()
	rows, err := a.usage.Usage(ctx, q)
	var tooMany *pgsink.TooManyRowsError
	switch {
	case errors.As(err, &tooMany):
		writeProblem(w, http.StatusBadRequest, problemResultTooLarge, tooMany.Error())
		return
	case err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		a.log.Warn("usage report timed out", "timeout", usageTimeout, "error", err)
		writeProblem(w, http.StatusServiceUnavailable, "",
			"the usage report took longer than "+usageTimeout.String()+": ask for one consumer or a shorter range")
		return
	case err != nil:
		a.log.Warn("usage read failed", "error", err)
		writeProblem(w, http.StatusServiceUnavailable, "", "the decision log database is unavailable; retry later")
		return
	}
	report := usageReport{Consumer: q.Consumer, From: q.From, To: q.To, Period: q.Period, Rows: make([]usageRow, len(rows))}
	layout := "2006-01-02"
	if q.Period == pgsink.PeriodMonth {
		layout = "2006-01"
	}
	for i, u := range rows {
		report.Rows[i] = usageRow{Consumer: u.Consumer, Period: u.Period.Format(layout), Method: u.Method, Path: u.Path, Plan: u.Plan,
			Allowed: u.Allowed, Denied: u.Denied, Charged: u.Charged, Refunded: u.Refunded, Credits: u.Credits}
	}
	if format == "csv" {
		writeUsageCSV(w, report.Rows)
		return
	}
	writeJSON(w, http.StatusOK, report)
}

// parseUsageQuery reads the query string; detail says what is wrong.
func parseUsageQuery(r *http.Request, now time.Time) (q pgsink.UsageQuery, format, detail string) {
	v := r.URL.Query()
	for k := range v {
		switch k {
		case "consumer", "from", "to", "period", "format", "limit":
		default:
			return q, "", fmt.Sprintf("unknown parameter %q (allowed: consumer, from, to, period, format, limit)", k)
		}
	}
	q.Consumer = v.Get("consumer")
	if len(q.Consumer) > MaxAccountIDLen || !utf8.ValidString(q.Consumer) {
		return q, "", fmt.Sprintf("consumer is not valid UTF-8 of at most %d bytes", MaxAccountIDLen)
	}
	q.Period = v.Get("period")
	switch q.Period {
	case "":
		q.Period = pgsink.PeriodDay
	case pgsink.PeriodDay, pgsink.PeriodMonth:
	default:
		return q, "", fmt.Sprintf("period %q is not a period (allowed: day, month)", q.Period)
	}
	format = v.Get("format")
	switch format {
	case "":
		format = "json"
	case "json", "csv":
	default:
		return q, "", fmt.Sprintf("format %q is not a format (allowed: json, csv)", format)
	}
	q.Limit = pgsink.MaxUsageRows
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > pgsink.MaxUsageRows {
			return q, "", fmt.Sprintf("limit %q is not a whole number from 1 to %d", s, pgsink.MaxUsageRows)
		}
		q.Limit = n
	}
	var err error
	q.To = now.UTC()
	if s := v.Get("to"); s != "" {
		if q.To, err = parseUsageTime(s, true); err != nil {
			return q, "", "to " + err.Error()
		}
	}
	last := q.To.Add(-time.Nanosecond)
	q.From = time.Date(last.Year(), last.Month(), 1, 0, 0, 0, 0, time.UTC)
	if s := v.Get("from"); s != "" {
		if q.From, err = parseUsageTime(s, false); err != nil {
			return q, "", "from " + err.Error()
		}
	}
	switch {
	case !q.From.Before(q.To):
		return q, "", fmt.Sprintf("from %s is not before to %s", q.From.Format(time.RFC3339), q.To.Format(time.RFC3339))
	case q.To.Sub(q.From) > MaxUsageRange:
		return q, "", fmt.Sprintf("the range from %s to %s is longer than 366 days: ask for less at a time",
			q.From.Format(time.RFC3339), q.To.Format(time.RFC3339))
	}
	return q, format, ""
}

// parseUsageTime reads an RFC 3339 time or a date (UTC); a date that ends
// a range (end) means the end of its day.
func parseUsageTime(s string, end bool) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time or a date (allowed: 2026-11-30T00:00:00Z or 2026-11-30)", s)
	}
	if end {
		t = t.AddDate(0, 0, 1)
	}
	return t, nil
}

// writeUsageCSV writes the rows as RFC 4180 CSV (CRLF line ends, quoted
// fields where needed) with a header row: a denied column for the total,
// then one denied:<reason> column per reason in the report, sorted.
func writeUsageCSV(w http.ResponseWriter, rows []usageRow) {
	reasons := map[string]bool{}
	for _, r := range rows {
		for k := range r.Denied {
			reasons[k] = true
		}
	}
	sorted := slices.Sorted(maps.Keys(reasons))
	header := []string{"consumer", "period", "method", "path", "plan", "allowed", "denied"}
	for _, k := range sorted {
		header = append(header, cell("denied:"+k))
	}
	header = append(header, "charged", "refunded", "credits")
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8; header=present")
	h.Set("Content-Disposition", `attachment; filename="usage.csv"`)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	cw := csv.NewWriter(w)
	cw.UseCRLF = true
	_ = cw.Write(header)
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	for _, r := range rows {
		var denied int64
		for _, c := range r.Denied {
			denied += c
		}
		rec := []string{cell(r.Consumer), r.Period, cell(r.Method), cell(r.Path), cell(r.Plan), n(r.Allowed), n(denied)}
		for _, k := range sorted {
			rec = append(rec, n(r.Denied[k]))
		}
		rec = append(rec, n(r.Charged), n(r.Refunded), n(r.Credits))
		_ = cw.Write(rec)
	}
	cw.Flush()
}

// cell guards a text cell that came from a request (a path, a consumer)
// against spreadsheet formula injection: a cell starting with =, +, -, @,
// a tab or a carriage return is prefixed with a single quote, which
// spreadsheets show as text (OWASP's CSV injection advice).
func cell(s string) string {
	if s != "" && strings.IndexByte("=+-@\t\r", s[0]) >= 0 {
		return "'" + s
	}
	return s
}
