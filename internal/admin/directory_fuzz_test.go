package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
)

// FuzzDirectoryBody: a directory write's body is accepted only when it is
// one JSON object whose members are the request's fields, each once and
// spelt exactly; anything else is a 400 or 413 problem. Never a panic.
func FuzzDirectoryBody(f *testing.F) {
	for _, s := range []string{
		`{"id": "acme", "plan": "pro"}`,
		`{"id": "acme", "plan": "pro", "metadata": {"a": [1, {"b": null}]}, "status": "active"}`,
		`{"ID": "acme"}`, `{"id": "a", "id": "b"}`, `{"id": 1}`, `[]`, `null`, ``, ` `, `{} {}`, `{"id": "a"`,
		`{"metadata": {"id": 1, "id": 2}}`, `{"plan": "\u0070"}`, `{"\u0070lan": "x"}`,
	} {
		f.Add([]byte(s))
	}
	allowed := jsonFields(&createConsumerRequest{})
	f.Fuzz(func(t *testing.T, body []byte) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/v1/consumers", bytes.NewReader(body))
		var req createConsumerRequest
		ok := decodeBody(w, r, &req, false, "example")
		if !ok {
			if w.Code != http.StatusBadRequest && w.Code != http.StatusRequestEntityTooLarge {
				t.Fatalf("refused with status %d", w.Code)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("refused with Content-Type %q", ct)
			}
			return
		}
		if w.Code != http.StatusOK || w.Body.Len() != 0 {
			t.Fatalf("accepted, but answered %d %q", w.Code, w.Body)
		}
		// Accepted: one object, its members among the fields, each once.
		dec := json.NewDecoder(bytes.NewReader(body))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			t.Fatalf("accepted %q: not an object", body)
		}
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				t.Fatalf("accepted %q: %v", body, err)
			}
			name := tok.(string)
			if !slices.Contains(allowed, name) || seen[name] {
				t.Fatalf("accepted %q: member %q", body, name)
			}
			seen[name] = true
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				t.Fatalf("accepted %q: %v", body, err)
			}
		}
		if _, err := dec.Token(); err != nil { // '}'
			t.Fatalf("accepted %q: %v", body, err)
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			t.Fatalf("accepted %q: data after the object", body)
		}
	})
}
