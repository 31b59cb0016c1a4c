package authz_test

import (
	"fmt"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/internal/directory"
)

// The policy input with the consumer a key resolved to: input.tollgate.
func ExampleInputWith() {
	expires := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	resolved := &directory.Resolved{
		Consumer: directory.Consumer{ID: "acme", Plan: "pro", Status: directory.StatusActive, Metadata: map[string]any{"team": "search"}},
		Key:      directory.Key{ID: "key_acme", Name: "production", ExpiresAt: &expires},
	}
	in := authz.InputWith(checkRequest(map[string]string{"x-api-key": "tg_…"}), nil, resolved).(ast.Object)
	c := in.Get(ast.StringTerm("tollgate")).Get(ast.StringTerm("consumer"))
	for _, k := range []string{"id", "plan", "status", "metadata"} {
		fmt.Println(k, c.Get(ast.StringTerm(k)))
	}
	fmt.Println("key", c.Get(ast.StringTerm("key")))
	// Output:
	// id "acme"
	// plan "pro"
	// status "active"
	// metadata {"team": "search"}
	// key {"expires_at": "2027-01-01T00:00:00Z", "id": "key_acme", "name": "production"}
}
