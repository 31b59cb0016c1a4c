package admin

import (
	"context"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/ratelimit/ledger"
	"github.com/tollgate-dev/tollgate/ratelimit/ledger/pgsink"
)

// Ledger is the durable ledger the API reads; *pgsink.Sink implements it.
type Ledger interface {
	Entries(ctx context.Context, account string, after pgsink.Cursor, limit int) ([]ledger.Entry, pgsink.Cursor, error)
	Sum(ctx context.Context, account string) (sum, count int64, err error)
	Accounts(ctx context.Context, after string, limit int) ([]string, error)
}

// accountsPage is the body of GET /v1/accounts.
type accountsPage struct {
	Accounts []string `json:"accounts"`
	// Next is the after of the next page ("" after the last).
	Next string `json:"next,omitempty"`
}

// list answers GET /v1/accounts: the accounts the ledger has entries of,
// in order, a page at a time (?limit=N&after=<next>).
func (a *accountsAPI) list(w http.ResponseWriter, r *http.Request) {
	if a.book == nil {
		writeProblem(w, http.StatusNotFound, problemLedgerOff, ledgerOffDetail)
		return
	}
	limit, ok := pageLimit(w, r)
	if !ok {
		return
	}
	accounts, err := a.book.Accounts(r.Context(), r.URL.Query().Get("after"), limit)
	if err != nil {
		a.log.Warn("ledger read failed", "error", err)
		writeProblem(w, http.StatusServiceUnavailable, "", "the ledger database is unavailable; retry later")
		return
	}
	page := accountsPage{Accounts: accounts}
	if len(accounts) == limit {
		page.Next = accounts[len(accounts)-1]
	}
	writeJSON(w, http.StatusOK, page)
}

// ledgerPage is the body of GET /v1/accounts/{id}/ledger.
type ledgerPage struct {
	Account string         `json:"account"`
	Entries []ledger.Entry `json:"entries"`
	// Next is the cursor of the next page ("" after the last).
	Next string `json:"next,omitempty"`
}

// verification is the body of GET /v1/accounts/{id}/ledger/verify.
type verification struct {
	Account   string `json:"account"`
	Balance   int64  `json:"balance"`
	LedgerSum int64  `json:"ledger_sum"`
	Entries   int64  `json:"entries"`
	// Drift is balance − ledger_sum: 0 when the ledger accounts for every
	// change. Entries not shipped yet show as a passing drift.
	Drift int64 `json:"drift"`
}

// defaultPage is the entries a ledger page holds unless limit says.
const defaultPage = 100

const ledgerOffDetail = "no durable ledger: configure postgres (postgres.dsn) to keep one"

// pageLimit reads ?limit= (defaultPage when absent), answering 400 when it
// is not a whole number from 1 to pgsink.MaxPage.
func pageLimit(w http.ResponseWriter, r *http.Request) (int, bool) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return defaultPage, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > pgsink.MaxPage {
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest,
			"limit "+strconv.Quote(s)+" is not a whole number from 1 to "+strconv.Itoa(pgsink.MaxPage))
		return 0, false
	}
	return n, true
}

func (a *accountsAPI) ledger(w http.ResponseWriter, r *http.Request) {
	id, ok := a.ledgerAccount(w, r)
	if !ok {
		return
	}
	limit, ok := pageLimit(w, r)
	if !ok {
		return
	}
	after, err := decodeCursor(r.URL.Query().Get("after"))
	if err != nil {
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, "after is not a cursor this API returned as next")
		return
	}
	entries, next, err := a.book.Entries(r.Context(), id, after, limit)
	if err != nil {
		a.log.Warn("ledger read failed", "account", id, "error", err)
		writeProblem(w, http.StatusServiceUnavailable, "", "the ledger database is unavailable; retry later")
		return
	}
	page := ledgerPage{Account: id, Entries: entries}
	if page.Entries == nil {
		page.Entries = []ledger.Entry{}
	}
	if !next.IsZero() {
		page.Next = encodeCursor(next)
	}
	writeJSON(w, http.StatusOK, page)
}

func (a *accountsAPI) verify(w http.ResponseWriter, r *http.Request) {
	id, ok := a.ledgerAccount(w, r)
	if !ok {
		return
	}
	acct, err := a.accounts.Account(r.Context(), id)
	if err != nil {
		a.log.Warn("account read failed", "account", id, "error", err)
		writeProblem(w, http.StatusServiceUnavailable, "", "the credit store is unavailable; retry later")
		return
	}
	sum, n, err := a.book.Sum(r.Context(), id)
	if err != nil {
		a.log.Warn("ledger read failed", "account", id, "error", err)
		writeProblem(w, http.StatusServiceUnavailable, "", "the ledger database is unavailable; retry later")
		return
	}
	writeJSON(w, http.StatusOK, verification{Account: id, Balance: acct.Balance, LedgerSum: sum, Entries: n, Drift: acct.Balance - sum})
}

// ledgerAccount checks the account id, and that there is a ledger.
func (a *accountsAPI) ledgerAccount(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if detail := checkAccountID(id); detail != "" {
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, detail)
		return "", false
	}
	if a.book == nil {
		writeProblem(w, http.StatusNotFound, problemLedgerOff, ledgerOffDetail)
		return "", false
	}
	return id, true
}

// A cursor is the (time, id) of the last entry of a page, opaque to
// clients.
func encodeCursor(c pgsink.Cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.Time.UnixMicro(), 10) + " " + c.ID))
}

func decodeCursor(s string) (pgsink.Cursor, error) {
	if s == "" {
		return pgsink.Cursor{}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return pgsink.Cursor{}, err
	}
	us, id, ok := strings.Cut(string(b), " ")
	n, err := strconv.ParseInt(us, 10, 64)
	if !ok || err != nil || id == "" {
		return pgsink.Cursor{}, strconv.ErrSyntax
	}
	return pgsink.Cursor{Time: time.UnixMicro(n).UTC(), ID: id}, nil
}
