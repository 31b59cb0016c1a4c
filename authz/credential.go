package authz

import (
	"net/url"
	"strings"
)

// MaxCredentialBytes bounds a credential: a longer value is presented but
// malformed, never looked up.
const MaxCredentialBytes = 512

// Source says where a request presented its credential.
type Source uint8

// Where a credential can be presented.
const (
	// NoCredential: the request presents none where Credentials looks.
	NoCredential Source = iota
	// FromHeader: one of Credentials.Headers.
	FromHeader
	// FromBearer: Authorization: Bearer <token>.
	FromBearer
	// FromQuery: the query parameter Credentials.QueryParam.
	FromQuery
)

func (s Source) String() string {
	switch s {
	case FromHeader:
		return "header"
	case FromBearer:
		return "bearer"
	case FromQuery:
		return "query"
	}
	return "none"
}

// Credential is the credential a request presents, and where.
type Credential struct {
	// Value is the credential. It is empty when none is presented, or
	// when the one presented is malformed: empty, longer than
	// MaxCredentialBytes, with a byte that is not visible ASCII, with a
	// comma (Envoy joins a repeated header's values with ","), a repeated
	// query parameter, or a bearer token after no or only blank space.
	Value string
	// Source and Name say where it is: the header's name (authorization
	// for a bearer token) or the query parameter's name. A malformed
	// credential keeps them, so it is hidden all the same.
	Source Source
	Name   string
}

// Credentials says where a request presents its credential and whether
// the upstream gets it. Extract takes the first present, in this order:
// each of Headers, then Authorization: Bearer, then QueryParam. The first
// present decides, even when it is malformed: a request is never
// identified by a credential other than the one it presents first.
type Credentials struct {
	// Headers are lower-case header names, in order.
	Headers []string
	// Bearer reads Authorization: Bearer <token> (the scheme in any case).
	Bearer bool
	// QueryParam is a query parameter's name, matched as Envoy matches
	// query_parameters_to_remove: exactly as sent, not percent-decoded.
	// Empty: none.
	QueryParam string
	// Hide removes the presented credential from an allowed request before
	// Envoy forwards it: a header by headers_to_remove (unless the
	// decision sets that header itself), a query parameter by
	// query_parameters_to_remove.
	Hide bool
}

// DefaultCredentials reads x-api-key and hides it from the upstream
// (Authorization: Bearer only when asked for: in a mesh it is often a JWT
// the upstream reads itself).
func DefaultCredentials() *Credentials {
	return &Credentials{Headers: []string{"x-api-key"}, Hide: true}
}

// Extract finds the credential a request presents in its headers (lower-
// case names, repeated values joined with ",", as Envoy sends them) and
// path (with the query string). It allocates only to percent-decode a
// query parameter's value.
func (c *Credentials) Extract(headers map[string]string, path string) Credential {
	for _, name := range c.Headers {
		if v, ok := headers[name]; ok {
			return Credential{Value: valid(v), Source: FromHeader, Name: name}
		}
	}
	if c.Bearer {
		if v, ok := headers["authorization"]; ok {
			if token, ok := bearer(v); ok {
				return Credential{Value: valid(token), Source: FromBearer, Name: "authorization"}
			}
		}
	}
	if c.QueryParam != "" {
		if v, found, repeated := queryParam(path, c.QueryParam); found {
			cred := Credential{Source: FromQuery, Name: c.QueryParam}
			if !repeated {
				cred.Value = unescape(v)
			}
			return cred
		}
	}
	return Credential{}
}

// bearer returns the token of an Authorization value with the Bearer
// scheme (RFC 6750: the scheme case-insensitive, then spaces); ok is false
// for another scheme. A Bearer value without a token gives "".
func bearer(v string) (token string, ok bool) {
	const scheme = "bearer"
	if len(v) < len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", false
	}
	rest := v[len(scheme):]
	if rest == "" {
		return "", true
	}
	if rest[0] != ' ' && rest[0] != '\t' {
		return "", false // another scheme, such as "Bearerish"
	}
	return strings.TrimLeft(rest, " \t"), true
}

// queryParam finds name among the query parameters of path, compared as
// sent. A parameter without "=" has the value "".
func queryParam(path, name string) (v string, found, repeated bool) {
	i := strings.IndexByte(path, '?')
	if i < 0 {
		return "", false, false
	}
	q := path[i+1:]
	if j := strings.IndexByte(q, '#'); j >= 0 {
		q = q[:j]
	}
	for q != "" {
		var pair string
		pair, q, _ = strings.Cut(q, "&")
		key, value, _ := strings.Cut(pair, "=")
		if key != name {
			continue
		}
		if found {
			return "", true, true
		}
		v, found = value, true
	}
	return v, found, false
}

// unescape percent-decodes a query parameter's value ("+" is a space) and
// checks it is a credential; "" when it is not.
func unescape(v string) string {
	if len(v) > 3*MaxCredentialBytes {
		return ""
	}
	if strings.ContainsAny(v, "%+") {
		d, err := url.QueryUnescape(v)
		if err != nil {
			return ""
		}
		v = d
	}
	return valid(v)
}

// valid returns v when it can be a credential, else "": 1 to
// MaxCredentialBytes bytes of visible ASCII but ",".
func valid(v string) string {
	if len(v) == 0 || len(v) > MaxCredentialBytes {
		return ""
	}
	for i := range len(v) {
		if c := v[i]; c <= ' ' || c > '~' || c == ',' {
			return ""
		}
	}
	return v
}
