package authz

import (
	"context"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate-dev/tollgate/internal/directory"
)

// Resolver turns a presented credential into its consumer and key, or
// false for an unknown, expired or revoked key (or a store that does not
// answer for a key it has not cached). *directory.Resolver implements it.
type Resolver interface {
	Resolve(ctx context.Context, credential string) (*directory.Resolved, bool)
}

var _ Resolver = (*directory.Resolver)(nil)

var (
	termTollgate  = ast.StringTerm("tollgate")
	termConsumer  = ast.StringTerm("consumer")
	termID        = ast.StringTerm("id")
	termPlan      = ast.StringTerm("plan")
	termStatus    = ast.StringTerm("status")
	termMetadata  = ast.StringTerm("metadata")
	termKey       = ast.StringTerm("key")
	termName      = ast.StringTerm("name")
	termExpiresAt = ast.StringTerm("expires_at")
)

// pushTollgate pushes input.tollgate: {"consumer": {"id", "plan",
// "status", "metadata", "key": {"id", "name", "expires_at"}}}. The value is
// built once per resolved key (and again after a change to it), then
// shared by every request presenting that key: policies never modify
// their input, as the shared version member shows already.
func (b *builder) pushTollgate(r *directory.Resolved) {
	b.push(termTollgate, r.Memo(tollgateValue).(*ast.Term))
}

// tollgateValue builds input.tollgate from r as AST values (no JSON round
// trip). expires_at is an RFC 3339 time in UTC, absent for a key that does
// not expire; metadata is {} when empty.
func tollgateValue(r *directory.Resolved) any {
	c, k := &r.Consumer, &r.Key
	b := &builder{}
	start := len(b.stack)
	b.push(termID, b.str(c.ID))
	b.push(termPlan, b.str(c.Plan))
	b.push(termStatus, b.str(c.Status))
	b.push(termMetadata, b.term(metadataValue(c.Metadata)))
	keyStart := len(b.stack)
	b.push(termID, b.str(k.ID))
	b.push(termName, b.str(k.Name))
	if k.ExpiresAt != nil {
		b.push(termExpiresAt, b.str(k.ExpiresAt.UTC().Format(time.RFC3339Nano)))
	}
	b.push(termKey, b.term(b.object(keyStart)))
	consumer := ast.NewTerm(b.object(start))
	return ast.NewTerm(ast.NewObject([2]*ast.Term{termConsumer, consumer}))
}

// metadataValue is a consumer's metadata (decoded from JSON: strings,
// float64s, bools, nil, maps and slices) as an AST object; {} when empty or,
// which the directory's validation rules out, not convertible.
func metadataValue(m map[string]any) ast.Value {
	if len(m) == 0 {
		return ast.NewObject()
	}
	v, err := ast.InterfaceToValue(m)
	if err != nil {
		return ast.NewObject()
	}
	return v
}
