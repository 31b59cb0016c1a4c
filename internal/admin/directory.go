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
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/internal/directory"
)

// Limits of the directory API's input.
const (
	// MaxDirectoryBodyLen bounds the body of a directory write, in bytes
	// (a consumer's metadata included).
	MaxDirectoryBodyLen = 64 << 10
	// MaxDirectoryIdempotencyKeyLen bounds the Idempotency-Key header of
	// a directory write, in bytes (what the directory records).
	MaxDirectoryIdempotencyKeyLen = 128
	// maxDirectoryIDLen bounds a key id in a path (consumer ids are
	// checked by the directory).
	maxDirectoryIDLen = 128
)

// DirectoryActor is the actor recorded in the directory's change log for
// the changes made through the admin API with a token without a Name;
// with a name, it is DirectoryActor + ":" + name.
const DirectoryActor = "admin"

// NotDurableWarning is the Warning header (RFC 9111) of every write
// response of a directory that is not durable (in memory).
const NotDurableWarning = `299 - "the key directory is in memory: changes are lost on restart"`

// More problem reasons of the directory API.
const (
	problemNotFound    = "not_found"
	problemExists      = "exists"
	problemKeyInactive = "key_inactive"
)

// DirectoryHandler serves the key directory's API of the admin listener:
//
//	POST  /v1/consumers                  create a consumer: {"id", "plan", "status"?, "metadata"?}
//	GET   /v1/consumers/{id}             a consumer
//	PATCH /v1/consumers/{id}             change its plan, status or metadata (each optional;
//	                                     metadata replaces the whole object)
//	POST  /v1/consumers/{id}/keys        create a key: {"name"?, "expires_at"?}; the 201 body
//	                                     carries the key itself in "secret", this once
//	GET   /v1/consumers/{id}/keys        the consumer's keys, oldest first: display prefixes,
//	                                     never hashes or secrets
//	POST  /v1/keys/{id}/rotate           a new key for the same consumer and name: {"grace":
//	                                     "24h"}; the old key expires after grace ("0s": at once)
//	POST  /v1/keys/{id}/revoke           revoke a key at once
//	PUT   /v1/keys/{id}/expiry           {"expires_at": "2027-01-01T00:00:00Z"} or {"expires_at": null}
//
// Mount it at "/v1/consumers", "/v1/consumers/" and "/v1/keys/". Every
// request must carry "Authorization: Bearer <token>" of one of tokens
// (else 401), whose scopes include the route's: read for the GETs, keys
// for the writes (else 403 insufficient_scope).
//
// The POSTs that create something (a consumer, a key, a rotation) need an
// Idempotency-Key header, as a top-up does: a retry with the same key and
// the same request creates nothing again and answers what the first call
// made, as it is now (a key without its secret: "replayed": true, 200); the
// same key with another request is 409 idempotency_conflict. The other
// writes leave the same state when repeated and take the header when sent.
//
// Bodies are JSON objects of at most MaxDirectoryBodyLen bytes, decoded
// strictly (an unknown field is 400). Every error is an RFC 9457
// application/problem+json document with a reason: invalid_request,
// not_found, exists, key_inactive, idempotency_conflict. When the store is
// not durable every write response carries the header "Warning:
// NotDurableWarning".
//
// The changes are recorded in the directory's change log with the actor
// DirectoryActor, followed by ":" and the token's Name when it has one
// (the same Idempotency-Key sent with another token is then a conflict). log receives one info line per change (never a secret);
// nil means slog.Default(). No tokens yields a handler that refuses every
// request with 403.
func DirectoryHandler(store directory.Store, tokens *Tokens, log *slog.Logger) http.Handler {
	if !tokens.On() {
		return disabled()
	}
	if log == nil {
		log = slog.Default()
	}
	api := &directoryAPI{store: store, log: log}
	write := func(h http.HandlerFunc) http.HandlerFunc { return need(ScopeKeys, api.warn(h)) }
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/consumers", write(api.createConsumer))
	mux.HandleFunc("GET /v1/consumers/{id}", need(ScopeRead, api.showConsumer))
	mux.HandleFunc("PATCH /v1/consumers/{id}", write(api.updateConsumer))
	mux.HandleFunc("POST /v1/consumers/{id}/keys", write(api.createKey))
	mux.HandleFunc("GET /v1/consumers/{id}/keys", need(ScopeRead, api.listKeys))
	mux.HandleFunc("POST /v1/keys/{id}/rotate", write(api.rotateKey))
	mux.HandleFunc("POST /v1/keys/{id}/revoke", write(api.revokeKey))
	mux.HandleFunc("PUT /v1/keys/{id}/expiry", write(api.setExpiry))
	// The rest answers in problem+json too, instead of ServeMux's text.
	mux.HandleFunc("/v1/consumers", methodNotAllowed("POST"))
	mux.HandleFunc("/v1/consumers/{id}", methodNotAllowed("GET, HEAD, PATCH"))
	mux.HandleFunc("/v1/consumers/{id}/keys", methodNotAllowed("GET, HEAD, POST"))
	mux.HandleFunc("/v1/keys/{id}/rotate", methodNotAllowed("POST"))
	mux.HandleFunc("/v1/keys/{id}/revoke", methodNotAllowed("POST"))
	mux.HandleFunc("/v1/keys/{id}/expiry", methodNotAllowed("PUT"))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "", fmt.Sprintf(
			"no route for %s %s: the directory API serves POST /v1/consumers, GET and PATCH /v1/consumers/{id}, GET and POST /v1/consumers/{id}/keys, POST /v1/keys/{id}/rotate, POST /v1/keys/{id}/revoke and PUT /v1/keys/{id}/expiry",
			r.Method, r.URL.EscapedPath()))
	})
	return tokens.authenticate(mux)
}

type directoryAPI struct {
	store directory.Store
	log   *slog.Logger
}

// warn sets the Warning header of a store that is not durable.
func (a *directoryAPI) warn(h http.HandlerFunc) http.HandlerFunc {
	if a.store.Durable() {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Warning", NotDurableWarning)
		h(w, r)
	}
}

// newKeyResponse is the body of a key's creation or rotation: the key,
// and its secret the first time only.
type newKeyResponse struct {
	directory.Key
	// Secret is the key itself, shown this once; empty on a replay.
	Secret   string `json:"secret,omitempty"`
	Replayed bool   `json:"replayed"`
}

// keysResponse is the body of a key listing.
type keysResponse struct {
	Consumer string          `json:"consumer"`
	Keys     []directory.Key `json:"keys"`
}

type createConsumerRequest struct {
	ID       string         `json:"id"`
	Plan     string         `json:"plan"`
	Status   string         `json:"status"`
	Metadata map[string]any `json:"metadata"`
}

type updateConsumerRequest struct {
	Plan     *string        `json:"plan"`
	Status   *string        `json:"status"`
	Metadata map[string]any `json:"metadata"`
}

type createKeyRequest struct {
	Name      string     `json:"name"`
	ExpiresAt *time.Time `json:"expires_at"`
}

type rotateRequest struct {
	Grace *string `json:"grace"`
}

type expiryRequest struct {
	ExpiresAt json.RawMessage `json:"expires_at"`
}

func (a *directoryAPI) createConsumer(w http.ResponseWriter, r *http.Request) {
	m, ok := a.meta(w, r, true)
	if !ok {
		return
	}
	var req createConsumerRequest
	if !decodeBody(w, r, &req, false, `send a JSON object like {"id": "acme", "plan": "pro"}`) {
		return
	}
	if req.Plan == "" {
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, `field "plan" is required: send a JSON object like {"id": "acme", "plan": "pro"}`)
		return
	}
	c, err := a.store.CreateConsumer(r.Context(), m, directory.Consumer{ID: req.ID, Plan: req.Plan, Status: req.Status, Metadata: req.Metadata})
	if err != nil {
		a.fail(w, r, m, err)
		return
	}
	a.log.Info("consumer created", "consumer", c.ID, "plan", c.Plan, "status", c.Status, "idempotency_key", m.IdempotencyKey)
	w.Header().Set("Location", "/v1/consumers/"+url.PathEscape(c.ID))
	writeJSON(w, http.StatusCreated, c)
}

func (a *directoryAPI) showConsumer(w http.ResponseWriter, r *http.Request) {
	c, err := a.store.Consumer(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, r, directory.Meta{}, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (a *directoryAPI) updateConsumer(w http.ResponseWriter, r *http.Request) {
	m, ok := a.meta(w, r, false)
	if !ok {
		return
	}
	const example = `send a JSON object with any of "plan", "status" (active or suspended) and "metadata", like {"status": "suspended"}`
	var req updateConsumerRequest
	if !decodeBody(w, r, &req, false, example) {
		return
	}
	switch {
	case req.Plan == nil && req.Status == nil && req.Metadata == nil:
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, "nothing to change: "+example)
		return
	case req.Plan != nil && *req.Plan == "":
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, `field "plan" is empty: name a plan`)
		return
	}
	id := r.PathValue("id")
	c, err := a.store.UpdateConsumer(r.Context(), m, id, directory.ConsumerUpdate{Plan: req.Plan, Status: req.Status, Metadata: req.Metadata})
	if err != nil {
		a.fail(w, r, m, err)
		return
	}
	a.log.Info("consumer updated", "consumer", c.ID, "plan", c.Plan, "status", c.Status, "idempotency_key", m.IdempotencyKey)
	writeJSON(w, http.StatusOK, c)
}

func (a *directoryAPI) createKey(w http.ResponseWriter, r *http.Request) {
	m, ok := a.meta(w, r, true)
	if !ok {
		return
	}
	var req createKeyRequest
	if !decodeBody(w, r, &req, true, `send a JSON object like {"name": "production", "expires_at": "2027-01-01T00:00:00Z"}, both optional`) {
		return
	}
	nk, err := a.store.CreateKey(r.Context(), m, directory.KeyRequest{Consumer: r.PathValue("id"), Name: req.Name, ExpiresAt: req.ExpiresAt})
	if err != nil {
		a.fail(w, r, m, err)
		return
	}
	a.log.Info("key created", "consumer", nk.Key.Consumer, "key", nk.Key.ID, "prefix", nk.Key.Prefix, "replayed", nk.Replayed, "idempotency_key", m.IdempotencyKey)
	writeNewKey(w, nk)
}

func (a *directoryAPI) listKeys(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	keys, err := a.store.ListKeys(r.Context(), id)
	if err != nil {
		a.fail(w, r, directory.Meta{}, err)
		return
	}
	if keys == nil {
		keys = []directory.Key{}
	}
	writeJSON(w, http.StatusOK, keysResponse{Consumer: id, Keys: keys})
}

func (a *directoryAPI) rotateKey(w http.ResponseWriter, r *http.Request) {
	id, ok := keyID(w, r)
	if !ok {
		return
	}
	m, ok := a.meta(w, r, true)
	if !ok {
		return
	}
	const example = `send a JSON object like {"grace": "24h"}: how long the old key keeps working ("0s": it stops at once)`
	var req rotateRequest
	if !decodeBody(w, r, &req, false, example) {
		return
	}
	if req.Grace == nil {
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, `field "grace" is required; `+example)
		return
	}
	grace, err := time.ParseDuration(*req.Grace)
	if err != nil || grace < 0 {
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, fmt.Sprintf(
			"grace %q is not a duration of 0 or more, like \"24h\", \"90m\" or \"0s\"", *req.Grace))
		return
	}
	nk, err := a.store.RotateKey(r.Context(), m, id, grace)
	if err != nil {
		a.fail(w, r, m, err)
		return
	}
	a.log.Info("key rotated", "consumer", nk.Key.Consumer, "old_key", id, "key", nk.Key.ID, "grace", grace, "replayed", nk.Replayed, "idempotency_key", m.IdempotencyKey)
	writeNewKey(w, nk)
}

func (a *directoryAPI) revokeKey(w http.ResponseWriter, r *http.Request) {
	id, ok := keyID(w, r)
	if !ok {
		return
	}
	m, ok := a.meta(w, r, false)
	if !ok {
		return
	}
	var req struct{}
	if !decodeBody(w, r, &req, true, "send no body, or {}") {
		return
	}
	k, err := a.store.RevokeKey(r.Context(), m, id)
	if err != nil {
		a.fail(w, r, m, err)
		return
	}
	a.log.Info("key revoked", "consumer", k.Consumer, "key", k.ID, "idempotency_key", m.IdempotencyKey)
	writeJSON(w, http.StatusOK, k)
}

func (a *directoryAPI) setExpiry(w http.ResponseWriter, r *http.Request) {
	id, ok := keyID(w, r)
	if !ok {
		return
	}
	m, ok := a.meta(w, r, false)
	if !ok {
		return
	}
	const example = `send {"expires_at": "2027-01-01T00:00:00Z"} (an RFC 3339 time) or {"expires_at": null} (never)`
	var req expiryRequest
	if !decodeBody(w, r, &req, false, example) {
		return
	}
	if req.ExpiresAt == nil {
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, `field "expires_at" is required; `+example)
		return
	}
	var at *time.Time
	if err := json.Unmarshal(req.ExpiresAt, &at); err != nil {
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, fmt.Sprintf(
			"expires_at %s is not an RFC 3339 time or null; %s", shorten(req.ExpiresAt), example))
		return
	}
	k, err := a.store.SetExpiry(r.Context(), m, id, at)
	if err != nil {
		a.fail(w, r, m, err)
		return
	}
	a.log.Info("key expiry set", "consumer", k.Consumer, "key", k.ID, "expires_at", k.ExpiresAt, "idempotency_key", m.IdempotencyKey)
	writeJSON(w, http.StatusOK, k)
}

// writeNewKey answers a created key 201 with its secret, a replay 200
// without it.
func writeNewKey(w http.ResponseWriter, nk directory.NewKey) {
	status := http.StatusCreated
	if nk.Replayed {
		status = http.StatusOK
	}
	writeJSON(w, status, newKeyResponse{Key: nk.Key, Secret: nk.Plaintext, Replayed: nk.Replayed})
}

// meta returns the change's Meta from the request, or answers 400: the
// Idempotency-Key header is required when required is set.
func (a *directoryAPI) meta(w http.ResponseWriter, r *http.Request, required bool) (directory.Meta, bool) {
	vals := r.Header.Values("Idempotency-Key")
	detail := ""
	switch {
	case len(vals) == 0 || vals[0] == "":
		if required {
			detail = fmt.Sprintf("the Idempotency-Key header is required on %s %s: send a unique value per request (e.g. a random UUID) and the same value when retrying it",
				r.Method, r.URL.EscapedPath())
		}
	case len(vals) > 1:
		detail = fmt.Sprintf("found %d Idempotency-Key headers; send exactly one", len(vals))
	case len(vals[0]) > MaxDirectoryIdempotencyKeyLen:
		detail = fmt.Sprintf("the Idempotency-Key header is %d bytes long; the maximum is %d", len(vals[0]), MaxDirectoryIdempotencyKeyLen)
	}
	if detail != "" {
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, detail)
		return directory.Meta{}, false
	}
	m := directory.Meta{Actor: DirectoryActor}
	if name := tokenName(r.Context()); name != "" {
		m.Actor += ":" + name
	}
	if len(vals) == 1 {
		m.IdempotencyKey = vals[0]
	}
	return m, true
}

// keyID returns the key id of the path, or answers 400.
func keyID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	detail := ""
	switch {
	case len(id) > maxDirectoryIDLen:
		detail = fmt.Sprintf("key id is %d bytes long; the maximum is %d", len(id), maxDirectoryIDLen)
	case !utf8.ValidString(id) || strings.IndexFunc(id, unicode.IsControl) >= 0:
		detail = fmt.Sprintf("key id %q is not printable text", id)
	}
	if detail != "" {
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, detail)
		return "", false
	}
	return id, true
}

// decodeBody reads a JSON object into v (a pointer to a struct) strictly:
// at most MaxDirectoryBodyLen bytes, each field once and spelt as v's json
// tags (encoding/json alone would take "ID" for "id", and the last of two
// "plan"s), nothing after it; an empty body is {} when empty is set. It
// answers 400 or 413 and returns false when the body cannot be used.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, empty bool, example string) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxDirectoryBodyLen))
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		writeProblem(w, http.StatusRequestEntityTooLarge, "", fmt.Sprintf("request body is larger than %d bytes", MaxDirectoryBodyLen))
		return false
	}
	if err != nil {
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, fmt.Sprintf("reading the request body: %v", err))
		return false
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if empty {
			return true
		}
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, "request body is empty; "+example)
		return false
	}
	if bytes.TrimSpace(body)[0] != '{' { // null would decode into v as nothing
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, "request body is not a JSON object; "+example)
		return false
	}
	if detail := checkFields(body, jsonFields(v)); detail != "" {
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, detail+"; "+example)
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	if err == nil {
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			writeProblem(w, http.StatusBadRequest, problemInvalidRequest, "request body has data after the JSON object; "+example)
			return false
		}
		return true
	}
	typeErr, isTypeErr := errors.AsType[*json.UnmarshalTypeError](err)
	switch {
	case isTypeErr && typeErr.Field == "":
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, "request body is not a JSON object; "+example)
	case isTypeErr:
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, fmt.Sprintf("field %q must be a JSON %s, not %s; %s", typeErr.Field, jsonKind(typeErr.Type.Kind().String()), typeErr.Value, example))
	default:
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, fmt.Sprintf("request body is not valid JSON (%v); %s", err, example))
	}
	return false
}

// jsonFields returns the names of the json tags of the struct v points to.
func jsonFields(v any) []string {
	t := reflect.TypeOf(v).Elem()
	names := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}

// checkFields returns what is wrong with the names of a JSON object's
// members: one not in allowed (compared exactly) or one given twice; ""
// when they are right or when body is not an object (the decoder says
// what is wrong then).
func checkFields(body []byte, allowed []string) string {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return ""
	}
	seen := make(map[string]bool, len(allowed))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		name, _ := tok.(string) // inside an object, Token returns the keys as strings
		switch {
		case !slices.Contains(allowed, name):
			if len(allowed) == 0 {
				return fmt.Sprintf("unknown field %q in request body: it takes no field", name)
			}
			return fmt.Sprintf("unknown field %q in request body (the fields are %s)", name, `"`+strings.Join(allowed, `", "`)+`"`)
		case seen[name]:
			return fmt.Sprintf("field %q appears more than once in request body", name)
		}
		seen[name] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return ""
		}
	}
	return ""
}

// jsonKind names a Go kind as JSON does.
func jsonKind(kind string) string {
	switch kind {
	case "map", "struct":
		return "object"
	case "slice", "array":
		return "array"
	case "ptr":
		return "value"
	}
	return kind
}

// fail answers a store error: the directory's sentinel errors become
// problems a client can branch on; the rest is 503 and logged.
func (a *directoryAPI) fail(w http.ResponseWriter, r *http.Request, m directory.Meta, err error) {
	switch {
	case errors.Is(err, directory.ErrNotFound):
		writeProblem(w, http.StatusNotFound, problemNotFound, err.Error())
	case errors.Is(err, directory.ErrExists):
		writeProblem(w, http.StatusConflict, problemExists, err.Error()+": update it with PATCH, or choose another id")
	case errors.Is(err, directory.ErrIdempotencyConflict):
		writeProblem(w, http.StatusConflict, problemIdempotencyConflict, fmt.Sprintf(
			"Idempotency-Key %q was already used for a different request; reuse a key only to retry the same request, and send a new key for a new one",
			m.IdempotencyKey))
	case errors.Is(err, directory.ErrKeyInactive):
		writeProblem(w, http.StatusConflict, problemKeyInactive, err.Error()+": create a new key instead")
	case errors.Is(err, directory.ErrInvalid):
		writeProblem(w, http.StatusBadRequest, problemInvalidRequest, err.Error())
	case errors.Is(err, context.Canceled):
		writeProblem(w, http.StatusServiceUnavailable, "", "the request was cancelled")
	default:
		a.log.Warn("directory request failed", "method", r.Method, "path", r.URL.EscapedPath(), "idempotency_key", m.IdempotencyKey, "error", err)
		msg := "the key directory is unavailable; retry later"
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			msg += " with the same Idempotency-Key (a change is made at most once per key)"
		}
		writeProblem(w, http.StatusServiceUnavailable, "", msg)
	}
}
