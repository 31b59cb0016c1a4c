package wire_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tollgate-dev/tollgate/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestHeaders(t *testing.T) {
	hs := wire.Headers()
	if len(hs) == 0 {
		t.Fatal("no headers")
	}
	seen := map[string]bool{}
	for _, h := range hs {
		if h != strings.ToLower(h) || !strings.HasPrefix(h, wire.HeaderPrefix) || seen[h] {
			t.Errorf("header %q: want a unique lower-case name with prefix %q", h, wire.HeaderPrefix)
		}
		seen[h] = true
		if !wire.IsHeader(h) || !wire.HasPrefix(strings.ToUpper(h)) {
			t.Errorf("IsHeader/HasPrefix(%q) = false", h)
		}
	}
	for _, h := range []string{wire.HeaderConsumer, wire.HeaderPlan, wire.HeaderBalance, wire.HeaderDegraded} {
		if !seen[h] {
			t.Errorf("Headers() misses %q", h)
		}
	}
	hs[0] = "mutated"
	if wire.Headers()[0] == "mutated" {
		t.Error("Headers() returns the package's own slice")
	}
	for _, h := range []string{"x-tollgate-credits", "x-tollgat", "x-api-key", ""} {
		if wire.IsHeader(h) {
			t.Errorf("IsHeader(%q) = true", h)
		}
	}
	if wire.HasPrefix("x-tollgat") || wire.HasPrefix("x-api-key") || !wire.HasPrefix("X-Tollgate-Anything") {
		t.Error("HasPrefix is wrong")
	}
}

func TestProblem(t *testing.T) {
	bal := int64(3)
	p := wire.NewProblem(http.StatusPaymentRequired, "credits_exhausted", "Top up.")
	p.Balance = &bal
	var got map[string]any
	if err := json.Unmarshal(p.JSON(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"type": wire.ProblemTypeBase + "credits_exhausted", "title": "Payment Required",
		"status": float64(402), "detail": "Top up.", "reason": "credits_exhausted", "balance": float64(3)}
	if len(got) != len(want) {
		t.Errorf("problem %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if b := wire.NewProblem(http.StatusNotFound, "", ""); b.Type != "about:blank" || b.Title != "Not Found" || b.Message() != "Not Found" {
		t.Errorf("no reason: %+v", b)
	}
	if u := wire.NewProblem(499, "x", "d"); u.Title != "Request denied" || u.Message() != "d" {
		t.Errorf("unknown status: %+v", u)
	}
}
