package admin

import (
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/decisionlog/pgsink"
)

// FuzzUsageQuery: whatever the query string, a query parseUsageQuery
// accepts has a range from before to of at most MaxUsageRange, a known
// period and format, and a limit in range.
func FuzzUsageQuery(f *testing.F) {
	for _, s := range []string{"", "from=2026-11-01&to=2026-11-30&period=month&format=csv",
		"from=2026-11-30T10:00:00%2B02:00&to=2026-12-01", "limit=10&consumer=acme", "to=2026-01-01T00:00:00Z",
		"from=0001-01-01&to=9999-12-31", "period=week", "format=xml&x=1"} {
		f.Add(s)
	}
	now := time.Date(2026, 12, 1, 7, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, raw string) {
		if _, err := url.ParseQuery(raw); err != nil {
			return
		}
		r := httptest.NewRequest("GET", "/v1/usage", nil)
		r.URL.RawQuery = raw
		q, format, detail := parseUsageQuery(r, now)
		if detail != "" {
			return
		}
		switch {
		case !q.From.Before(q.To):
			t.Errorf("%q: from %s not before to %s", raw, q.From, q.To)
		case q.To.Sub(q.From) > MaxUsageRange:
			t.Errorf("%q: range %s too long", raw, q.To.Sub(q.From))
		case q.Period != pgsink.PeriodDay && q.Period != pgsink.PeriodMonth:
			t.Errorf("%q: period %q", raw, q.Period)
		case format != "json" && format != "csv":
			t.Errorf("%q: format %q", raw, format)
		case q.Limit < 1 || q.Limit > pgsink.MaxUsageRows:
			t.Errorf("%q: limit %d", raw, q.Limit)
		}
	})
}
