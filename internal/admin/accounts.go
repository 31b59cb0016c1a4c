package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/internal/wire"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

// Accounts is what the accounts API needs of the limit engine: top-ups and
// balance reads. *ratelimit.Engine implements it.
type Accounts interface {
	// Credit adds amount to account's balance once per idempotency key.
	Credit(ctx context.Context, account string, amount int64, idempotencyKey string) (*ratelimit.Credit, error)
	// Account reports an account's balance and period quota usage.
	Account(ctx context.Context, account string) (*ratelimit.Account, error)
}

var _ Accounts = (*ratelimit.Engine)(nil)

// Limits of the accounts API's input.
const (
	// MaxAccountIDLen bounds an account id, in bytes.
	MaxAccountIDLen = 256
	// MaxIdempotencyKeyLen bounds the Idempotency-Key header, in bytes.
	MaxIdempotencyKeyLen = 255
	// MaxCreditBodyLen bounds the body of a top-up, in bytes.
	MaxCreditBodyLen = 4 << 10
)

// Problem reasons (RFC 9457 types under wire.ProblemTypeBase) of the errors
// a client may branch on; the others are "about:blank", whose meaning is
// the status code.
const (
	problemInvalidRequest      = "invalid_request"
	problemIdempotencyConflict = "idempotency_conflict"
	problemBalanceOverflow     = "balance_overflow"
	problemLedgerOff           = "ledger_off"
	problemUsageOff            = "usage_off"
	problemResultTooLarge      = "result_too_large"
)

// AccountsHandler serves the prepaid-credit API of the admin listener:
//
//	GET  /v1/accounts               the accounts the ledger has entries of
//	                                (?limit=N&after=<next>)
//	GET  /v1/accounts/{id}          balance and quota usage of an account
//	POST /v1/accounts/{id}/credits  top up an account: {"amount": N} and an
//	                                Idempotency-Key header
//	GET  /v1/accounts/{id}/ledger   the account's ledger entries, oldest
//	                                first, ?limit=N&after=<next>
//	GET  /v1/accounts/{id}/ledger/verify
//	                                balance, ledger sum and their drift
//
// book is the durable ledger; nil answers the ledger routes 404.
//
// Mount it at "/v1/accounts/". Every request must carry
// "Authorization: Bearer <token>" of one of tokens (else 401), whose scopes
// include the route's: read for the GETs, credits for the top-up (else
// 403 insufficient_scope). Every error is an RFC 9457
// application/problem+json document whose detail says what to fix.
//
// The API must not be mounted when no token is configured. Should it be
// anyway, no tokens yields a handler that refuses every request with 403
// "admin API disabled" rather than serving unauthenticated top-ups.
//
// log receives one info line per top-up (never the token); nil means
// slog.Default().
func AccountsHandler(accounts Accounts, tokens *Tokens, log *slog.Logger, book Ledger) http.Handler {
	if !tokens.On() {
		return disabled()
	}
	if log == nil {
		log = slog.Default()
	}
	api := &accountsAPI{accounts: accounts, log: log, book: book}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/accounts", need(ScopeRead, api.list))
	mux.HandleFunc("GET /v1/accounts/{id}", need(ScopeRead, api.show))
	mux.HandleFunc("POST /v1/accounts/{id}/credits", need(ScopeCredits, api.credit))
	mux.HandleFunc("GET /v1/accounts/{id}/ledger", need(ScopeRead, api.ledger))
	mux.HandleFunc("GET /v1/accounts/{id}/ledger/verify", need(ScopeRead, api.verify))
	// The rest answers in problem+json too, instead of ServeMux's text.
	mux.HandleFunc("/v1/accounts/{$}", func(w http.ResponseWriter, _ *http.Request) {
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest,
			"account id is empty: use /v1/accounts/{id}")
	})
	mux.HandleFunc("/v1/accounts/{id}", methodNotAllowed("GET, HEAD"))
	mux.HandleFunc("/v1/accounts/{id}/credits", methodNotAllowed("POST"))
	mux.HandleFunc("/v1/accounts/{id}/ledger", methodNotAllowed("GET, HEAD"))
	mux.HandleFunc("/v1/accounts/{id}/ledger/verify", methodNotAllowed("GET, HEAD"))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "", fmt.Sprintf(
			"no route for %s %s: the accounts API serves GET /v1/accounts/{id}, POST /v1/accounts/{id}/credits, GET /v1/accounts/{id}/ledger and GET /v1/accounts/{id}/ledger/verify (escape \"/\" in an id as %%2F)",
			r.Method, r.URL.EscapedPath()))
	})
	return tokens.authenticate(mux)
}

type accountsAPI struct {
	accounts Accounts
	log      *slog.Logger
	book     Ledger // nil: no durable ledger
}

// creditResponse is the body of a top-up's 200 response.
type creditResponse struct {
	Account string `json:"account"`
	Balance int64  `json:"balance"`
	Applied bool   `json:"applied"`
}

func (a *accountsAPI) show(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if detail := checkAccountID(id); detail != "" {
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, detail)
		return
	}
	acct, err := a.accounts.Account(r.Context(), id)
	if err != nil {
		a.log.Warn("account read failed", "account", id, "error", err)
		writeProblem(w, http.StatusServiceUnavailable, "",
			"the credit store is unavailable; retry later")
		return
	}
	writeJSON(w, http.StatusOK, acct)
}

func (a *accountsAPI) credit(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if detail := checkAccountID(id); detail != "" {
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, detail)
		return
	}
	key, detail := idempotencyKey(r.Header)
	if detail != "" {
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, detail)
		return
	}
	amount, err := decodeCredit(http.MaxBytesReader(w, r.Body, MaxCreditBodyLen))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeProblem(w, http.StatusRequestEntityTooLarge, "",
				fmt.Sprintf("request body is larger than %d bytes; send {\"amount\": N}", MaxCreditBodyLen))
			return
		}
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, err.Error())
		return
	}

	c, err := a.accounts.Credit(r.Context(), id, amount, key)
	switch {
	case errors.Is(err, ratelimit.ErrIdempotencyConflict):
		writeProblem(w, http.StatusConflict, problemIdempotencyConflict, fmt.Sprintf(
			"Idempotency-Key %q was already used for a top-up of account %q with a different amount; reuse a key only to retry the same top-up, and send a new key for a new one",
			key, id))
		return
	case errors.Is(err, ratelimit.ErrBalanceOverflow):
		writeProblem(w, http.StatusConflict, problemBalanceOverflow, fmt.Sprintf(
			"adding %d would take the balance of account %q past %d; top up a smaller amount",
			amount, id, int64(ratelimit.MaxCredits)))
		return
	case err != nil:
		a.log.Warn("top-up failed", "account", id, "amount", amount, "idempotency_key", key, "error", err)
		writeProblem(w, http.StatusServiceUnavailable, "",
			"the credit store is unavailable; retry with the same Idempotency-Key (a top-up is applied at most once per key)")
		return
	}
	a.log.Info("credits added", "account", id, "amount", amount, "applied", c.Applied,
		"balance", c.Balance, "idempotency_key", key)
	// A replayed key is not an error: like Stripe's idempotent requests, the
	// retry gets 200 with the current balance and applied=false, and the
	// balance is left unchanged. Only reusing a key for another amount is
	// refused (409 above).
	writeJSON(w, http.StatusOK, creditResponse{Account: id, Balance: c.Balance, Applied: c.Applied})
}

// checkAccountID returns what is wrong with an account id, or "".
func checkAccountID(id string) string {
	switch {
	case id == "":
		return "account id is empty: use /v1/accounts/{id}"
	case len(id) > MaxAccountIDLen:
		return fmt.Sprintf("account id is %d bytes long; the maximum is %d", len(id), MaxAccountIDLen)
	case !utf8.ValidString(id):
		return fmt.Sprintf("account id %q is not valid UTF-8", id)
	case strings.IndexFunc(id, unicode.IsControl) >= 0:
		return fmt.Sprintf("account id %q contains a control character; ids are printable text", id)
	}
	return ""
}

// idempotencyKey returns the request's Idempotency-Key, or what is wrong
// with it.
func idempotencyKey(h http.Header) (key, detail string) {
	vals := h.Values("Idempotency-Key")
	switch {
	case len(vals) == 0 || vals[0] == "":
		return "", "the Idempotency-Key header is required: send a unique value per top-up (e.g. a random UUID) and the same value when retrying it"
	case len(vals) > 1:
		return "", fmt.Sprintf("found %d Idempotency-Key headers; send exactly one", len(vals))
	case len(vals[0]) > MaxIdempotencyKeyLen:
		return "", fmt.Sprintf("the Idempotency-Key header is %d bytes long; the maximum is %d", len(vals[0]), MaxIdempotencyKeyLen)
	}
	return vals[0], ""
}

// requestError is a top-up body that cannot be used; its message is the
// problem detail.
type requestError struct {
	detail string
	err    error
}

func (e *requestError) Error() string { return e.detail }
func (e *requestError) Unwrap() error { return e.err }

const creditExample = `send a JSON object like {"amount": 100}`

// decodeCredit reads a top-up body strictly: one JSON object whose only
// field is "amount" (case-sensitive, once), and nothing after it.
func decodeCredit(body io.Reader) (int64, error) {
	invalid := func(err error) error {
		return &requestError{detail: fmt.Sprintf("request body is not valid JSON (%v); %s", err, creditExample), err: err}
	}
	dec := json.NewDecoder(body)
	tok, err := dec.Token()
	switch {
	case errors.Is(err, io.EOF):
		return 0, &requestError{detail: "request body is empty; " + creditExample}
	case err != nil:
		return 0, invalid(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return 0, &requestError{detail: "request body is not a JSON object; " + creditExample}
	}
	var raw json.RawMessage
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return 0, invalid(err)
		}
		// Inside an object, Token returns the keys as strings.
		switch name, _ := tok.(string); {
		case name != "amount":
			return 0, &requestError{detail: fmt.Sprintf("unknown field %q in request body; the only field is \"amount\"", name)}
		case raw != nil:
			return 0, &requestError{detail: "field \"amount\" appears more than once in request body; send it once"}
		}
		if err := dec.Decode(&raw); err != nil {
			return 0, invalid(err)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return 0, invalid(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil && !isSyntaxError(err) {
			return 0, invalid(err) // a read error, such as a body too large
		}
		return 0, &requestError{detail: "request body has data after the JSON object; " + creditExample}
	}
	if raw == nil {
		return 0, &requestError{detail: "field \"amount\" is required; " + creditExample}
	}
	amount, ok := parseAmount(string(raw))
	if !ok {
		return 0, &requestError{detail: fmt.Sprintf("amount must be a positive integer no larger than %d, got %s",
			int64(ratelimit.MaxCredits), shorten(raw))}
	}
	return amount, nil
}

func isSyntaxError(err error) bool {
	_, ok := errors.AsType[*json.SyntaxError](err)
	return ok
}

// parseAmount reads a JSON value as an amount of credits: a number whose
// value is an integer from 1 to ratelimit.MaxCredits. Exponent and
// fraction forms count when their value is such an integer (1e3, 1.0);
// 1.5, 1e-1, 0, negatives, strings and values beyond MaxCredits (including
// those past int64, such as 1e30) do not. It works on the decimal digits,
// so a huge exponent costs nothing.
func parseAmount(lit string) (int64, bool) {
	if lit == "" || lit[0] < '0' || lit[0] > '9' {
		return 0, false // a string, null, object, array or a negative number
	}
	mant, exp := lit, ""
	if i := strings.IndexAny(lit, "eE"); i >= 0 {
		mant, exp = lit[:i], lit[i+1:]
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	// value = digits × 10^scale
	digits := strings.TrimLeft(intPart+frac, "0")
	scale := int64(-len(frac))
	n := len(digits)
	digits = strings.TrimRight(digits, "0")
	scale += int64(n - len(digits))
	if digits == "" {
		return 0, false // zero
	}
	if exp != "" {
		e, err := strconv.ParseInt(exp, 10, 32)
		if err != nil {
			return 0, false // |exponent| ≥ 2^31: far too large or not an integer
		}
		scale += e
	}
	const maxDigits = 16 // len("9007199254740991")
	if scale < 0 || int64(len(digits))+scale > maxDigits {
		return 0, false
	}
	v, err := strconv.ParseInt(digits+strings.Repeat("0", int(scale)), 10, 64)
	if err != nil || v > ratelimit.MaxCredits {
		return 0, false
	}
	return v, true
}

// shorten returns a JSON value for a problem detail, compacted and cut to
// 64 bytes.
func shorten(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		b.Reset()
		b.Write(raw)
	}
	s := b.String()
	if len(s) > 64 {
		s = strings.ToValidUTF8(s[:64], "") + "…"
	}
	return s
}

// bearer returns the token of an "Authorization: Bearer <token>" header
// (the scheme is case-insensitive, RFC 9110).
func bearer(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

func unauthorized(w http.ResponseWriter, detail string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="tollgate-admin"`)
	writeProblem(w, http.StatusUnauthorized, "", detail)
}

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeProblem(w, http.StatusMethodNotAllowed, "",
			fmt.Sprintf("method %s is not allowed on %s; use %s", r.Method, r.URL.EscapedPath(), allow))
	}
}

var problemTitles = map[string]string{
	problemLedgerOff:           "No durable ledger",
	problemUsageOff:            "No usage records",
	problemResultTooLarge:      "Result too large",
	problemInvalidRequest:      "Invalid request",
	problemIdempotencyConflict: "Idempotency key reused with a different request",
	problemNotFound:            "Not found",
	problemExists:              "Already exists",
	problemKeyInactive:         "Key is revoked or expired",
	problemBalanceOverflow:     "Balance would exceed the maximum",
}

// writeProblem answers with a problem+json document; reason "" means
// about:blank, titled with the status text.
func writeProblem(w http.ResponseWriter, status int, reason, detail string) {
	p := wire.NewProblem(status, reason, detail)
	if t := problemTitles[reason]; t != "" {
		p.Title = t
	}
	writeBody(w, status, wire.ContentTypeProblem, &p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	writeBody(w, status, "application/json", v)
}

func writeBody(w http.ResponseWriter, status int, contentType string, v any) {
	body, err := json.Marshal(v)
	if err != nil { // cannot happen with this package's types
		http.Error(w, "tollgate: encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
