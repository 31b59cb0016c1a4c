package admin_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/tollgate-dev/tollgate/internal/admin"
	"github.com/tollgate-dev/tollgate/internal/directory"
)

// The key directory's API over a store in memory: a consumer, a key shown
// once, a listing without it.
func ExampleDirectoryHandler() {
	tokens, _ := admin.NewTokens(admin.Token{Secret: "ops-token", Scopes: []admin.Scope{admin.ScopeRead, admin.ScopeKeys}})
	srv := httptest.NewServer(admin.DirectoryHandler(directory.NewMemory(directory.MemoryOptions{}), tokens, discard))
	defer srv.Close()
	send := func(method, path, idempotencyKey, body string) (*http.Response, []byte) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer ops-token")
		if idempotencyKey != "" {
			req.Header.Set("Idempotency-Key", idempotencyKey)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}

	resp, _ := send("POST", "/v1/consumers", "signup-acme", `{"id": "acme", "plan": "pro"}`)
	fmt.Println(resp.Status, resp.Header.Get("Location"))
	fmt.Println("Warning:", resp.Header.Get("Warning"))

	resp, body := send("POST", "/v1/consumers/acme/keys", "acme-key-1", `{"name": "production"}`)
	var created struct {
		Prefix string `json:"prefix"`
		Secret string `json:"secret"`
	}
	_ = json.Unmarshal(body, &created)
	fmt.Println(resp.Status, "secret shown:", strings.HasPrefix(created.Secret, created.Prefix))

	resp, body = send("POST", "/v1/consumers/acme/keys", "acme-key-1", `{"name": "production"}`)
	fmt.Println(resp.Status, "secret shown again:", strings.Contains(string(body), created.Secret))

	resp, body = send("GET", "/v1/consumers/acme/keys", "", "")
	fmt.Println(resp.Status, "keys:", strings.Count(string(body), `"prefix"`), "secret listed:", strings.Contains(string(body), created.Secret))
	// Output:
	// 201 Created /v1/consumers/acme
	// Warning: 299 - "the key directory is in memory: changes are lost on restart"
	// 201 Created secret shown: true
	// 200 OK secret shown again: false
	// 200 OK keys: 1 secret listed: false
}
