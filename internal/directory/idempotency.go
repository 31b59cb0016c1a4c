package directory

import (
	"crypto/sha256"
	"encoding/json"
)

// Operations, as recorded with an idempotency key.
const (
	opCreateConsumer = "create_consumer"
	opUpdateConsumer = "update_consumer"
	opCreateKey      = "create_key"
	opRotateKey      = "rotate_key"
	opRevokeKey      = "revoke_key"
	opSetExpiry      = "set_expiry"
)

// fingerprint identifies an operation and its arguments, so that an
// idempotency key reused for something else is refused.
func fingerprint(op string, args ...any) []byte {
	b, err := json.Marshal(append([]any{op}, args...))
	if err != nil { // only metadata can fail, and it was checked before
		b = []byte(op + err.Error())
	}
	sum := sha256.Sum256(b)
	return sum[:]
}

// checkMetadata refuses metadata that does not encode as JSON.
func checkMetadata(m map[string]any) error {
	if _, err := json.Marshal(m); err != nil {
		return &jsonError{err}
	}
	return nil
}

type jsonError struct{ err error }

func (e *jsonError) Error() string   { return "invalid: metadata: " + e.err.Error() }
func (e *jsonError) Unwrap() []error { return []error{ErrInvalid, e.err} }
