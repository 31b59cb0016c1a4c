package authz_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/authz"
)

// creds is the configuration the extraction tests use: two headers, then
// Bearer, then the query parameter api_key.
func creds() *authz.Credentials {
	return &authz.Credentials{Headers: []string{"x-api-key", "api-key"}, Bearer: true, QueryParam: "api_key", Hide: true}
}

func TestExtract(t *testing.T) {
	long := strings.Repeat("k", authz.MaxCredentialBytes)
	tests := []struct {
		name    string
		c       *authz.Credentials
		headers map[string]string
		path    string
		want    authz.Credential
	}{
		{name: "none", headers: map[string]string{"accept": "*/*"}, path: "/v1/invoices?limit=10",
			want: authz.Credential{}},
		{name: "first header", headers: map[string]string{"x-api-key": "tg_1", "api-key": "tg_2", "authorization": "Bearer tg_3"},
			path: "/?api_key=tg_4", want: authz.Credential{Value: "tg_1", Source: authz.FromHeader, Name: "x-api-key"}},
		{name: "second header", headers: map[string]string{"api-key": "tg_2", "authorization": "Bearer tg_3"},
			want: authz.Credential{Value: "tg_2", Source: authz.FromHeader, Name: "api-key"}},
		{name: "bearer after the headers", headers: map[string]string{"authorization": "Bearer tg_3"}, path: "/?api_key=tg_4",
			want: authz.Credential{Value: "tg_3", Source: authz.FromBearer, Name: "authorization"}},
		{name: "bearer scheme in any case, several spaces", headers: map[string]string{"authorization": "bEaReR  \ttg_3"},
			want: authz.Credential{Value: "tg_3", Source: authz.FromBearer, Name: "authorization"}},
		{name: "query parameter last", headers: map[string]string{"authorization": "Basic dXNlcjpwYXNz"}, path: "/v1/x?a=1&api_key=tg_4&b=2",
			want: authz.Credential{Value: "tg_4", Source: authz.FromQuery, Name: "api_key"}},
		{name: "query parameter percent-encoded value", path: "/v1/x?api_key=tg%2F4",
			want: authz.Credential{Value: "tg/4", Source: authz.FromQuery, Name: "api_key"}},
		{name: "query parameter before a fragment", path: "/v1/x?api_key=tg_4#frag",
			want: authz.Credential{Value: "tg_4", Source: authz.FromQuery, Name: "api_key"}},
		{name: "query key compared as sent", path: "/v1/x?api%5Fkey=tg_4&API_KEY=tg_5",
			want: authz.Credential{}},
		{name: "query parameter in the path, not the query", path: "/v1/api_key=tg_4",
			want: authz.Credential{}},
		{name: "longest credential", headers: map[string]string{"x-api-key": long},
			want: authz.Credential{Value: long, Source: authz.FromHeader, Name: "x-api-key"}},

		// Present but malformed: the first present decides, its value is "".
		{name: "empty header, bearer not read", headers: map[string]string{"x-api-key": "", "authorization": "Bearer tg_3"},
			want: authz.Credential{Source: authz.FromHeader, Name: "x-api-key"}},
		{name: "repeated header (joined by Envoy)", headers: map[string]string{"x-api-key": "tg_1,tg_2"},
			want: authz.Credential{Source: authz.FromHeader, Name: "x-api-key"}},
		{name: "too long", headers: map[string]string{"x-api-key": long + "k"},
			want: authz.Credential{Source: authz.FromHeader, Name: "x-api-key"}},
		{name: "huge", headers: map[string]string{"x-api-key": strings.Repeat("k", 1<<20)},
			want: authz.Credential{Source: authz.FromHeader, Name: "x-api-key"}},
		{name: "inner space", headers: map[string]string{"x-api-key": "tg 1"},
			want: authz.Credential{Source: authz.FromHeader, Name: "x-api-key"}},
		{name: "control byte", headers: map[string]string{"x-api-key": "tg\x001"},
			want: authz.Credential{Source: authz.FromHeader, Name: "x-api-key"}},
		{name: "not ASCII", headers: map[string]string{"x-api-key": "tg_é"},
			want: authz.Credential{Source: authz.FromHeader, Name: "x-api-key"}},
		{name: "bearer without a token", headers: map[string]string{"authorization": "Bearer"}, path: "/?api_key=tg_4",
			want: authz.Credential{Source: authz.FromBearer, Name: "authorization"}},
		{name: "bearer with blanks only", headers: map[string]string{"authorization": "Bearer   "},
			want: authz.Credential{Source: authz.FromBearer, Name: "authorization"}},
		{name: "bearer twice (joined by Envoy)", headers: map[string]string{"authorization": "Bearer a,Bearer b"},
			want: authz.Credential{Source: authz.FromBearer, Name: "authorization"}},
		{name: "bearer with two tokens", headers: map[string]string{"authorization": "Bearer a b"},
			want: authz.Credential{Source: authz.FromBearer, Name: "authorization"}},
		{name: "another scheme is not a credential", headers: map[string]string{"authorization": "Bearerish tg_3"},
			want: authz.Credential{}},
		{name: "basic is not a credential", headers: map[string]string{"authorization": "Basic dXNlcjpwYXNz"},
			want: authz.Credential{}},
		{name: "repeated query parameter", path: "/?api_key=tg_4&api_key=tg_4",
			want: authz.Credential{Source: authz.FromQuery, Name: "api_key"}},
		{name: "query parameter without a value", path: "/?api_key",
			want: authz.Credential{Source: authz.FromQuery, Name: "api_key"}},
		{name: "query parameter with a bad escape", path: "/?api_key=tg%zz",
			want: authz.Credential{Source: authz.FromQuery, Name: "api_key"}},
		{name: "query parameter with a plus (a space)", path: "/?api_key=tg+4",
			want: authz.Credential{Source: authz.FromQuery, Name: "api_key"}},

		// What is not configured is not read.
		{name: "bearer off", c: &authz.Credentials{Headers: []string{"x-api-key"}},
			headers: map[string]string{"authorization": "Bearer tg_3"}, path: "/?api_key=tg_4", want: authz.Credential{}},
		{name: "no headers", c: &authz.Credentials{Bearer: true},
			headers: map[string]string{"x-api-key": "tg_1", "authorization": "Bearer tg_3"},
			want:    authz.Credential{Value: "tg_3", Source: authz.FromBearer, Name: "authorization"}},
		{name: "defaults", c: authz.DefaultCredentials(),
			headers: map[string]string{"api-key": "tg_2"}, path: "/?api_key=tg_4", want: authz.Credential{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.c
			if c == nil {
				c = creds()
			}
			if got := c.Extract(tt.headers, tt.path); got != tt.want {
				t.Errorf("Extract = %+v (%s), want %+v (%s)", short(got), got.Source, short(tt.want), tt.want.Source)
			}
		})
	}
}

// short keeps huge values out of failure messages.
func short(c authz.Credential) authz.Credential {
	if len(c.Value) > 40 {
		c.Value = c.Value[:40] + "…"
	}
	return c
}

// TestExtractAllocs: finding the credential allocates nothing, but to
// percent-decode a query parameter.
func TestExtractAllocs(t *testing.T) {
	c := creds()
	for _, tt := range []struct {
		headers map[string]string
		path    string
	}{
		{map[string]string{"x-api-key": "tg_live_3f9a1c0d5e7b4a2c"}, "/v1/invoices"},
		{map[string]string{"authorization": "Bearer tg_live_3f9a1c0d5e7b4a2c"}, "/v1/invoices"},
		{map[string]string{"accept": "*/*"}, "/v1/invoices?limit=10&api_key=tg_live_3f9a1c0d5e7b4a2c&status=open"},
		{map[string]string{"x-api-key": strings.Repeat("k", 1<<16)}, "/"},
		{nil, "/v1/invoices?limit=10"},
	} {
		if n := testing.AllocsPerRun(100, func() { c.Extract(tt.headers, tt.path) }); n != 0 {
			t.Errorf("Extract(%v, %q): %v allocations, want 0", short(authz.Credential{Value: tt.headers["x-api-key"]}), tt.path, n)
		}
	}
}

// FuzzCredential: whatever the request, Extract takes the first location
// present in the configured order, and a value it returns is a valid
// credential from that location.
func FuzzCredential(f *testing.F) {
	f.Add("tg_1", true, "", false, "Bearer tg_3", true, "/v1/x?api_key=tg_4")
	f.Add("", true, "tg_2", true, "Bearer tg_3", true, "/")
	f.Add("", false, "tg_1,tg_2", true, "", false, "/")
	f.Add("", false, "", false, "Bearer", true, "/?api_key=tg_4")
	f.Add("", false, "", false, "bearer \t tg_3", true, "")
	f.Add("", false, "", false, "Basic dXNlcjpwYXNz", true, "/v1/x?a=1&api_key=tg%2F4#f")
	f.Add("", false, "", false, "Bearer a,Bearer b", true, "/?api_key=1&api_key=2")
	f.Add("", false, "", false, "", false, "/?api_key&api%5Fkey=x&api_key=")
	f.Add(strings.Repeat("k", authz.MaxCredentialBytes+1), true, "", false, "", false, "/?api_key="+strings.Repeat("%41", authz.MaxCredentialBytes))
	f.Add("tg\x00", true, "", false, "", false, "/?api_key=%zz")
	f.Fuzz(func(t *testing.T, xAPIKey string, hasXAPIKey bool, apiKey string, hasAPIKey bool, auth string, hasAuth bool, path string) {
		headers := map[string]string{}
		if hasXAPIKey {
			headers["x-api-key"] = xAPIKey
		}
		if hasAPIKey {
			headers["api-key"] = apiKey
		}
		if hasAuth {
			headers["authorization"] = auth
		}
		c := creds()
		got := c.Extract(headers, path)

		// The source is the first location present.
		want := authz.Credential{}
		lower := strings.ToLower(auth)
		isBearer := hasAuth && strings.HasPrefix(lower, "bearer") &&
			(len(auth) == 6 || auth[6] == ' ' || auth[6] == '\t')
		values, present := refQuery(path, "api_key")
		switch {
		case hasXAPIKey:
			want = authz.Credential{Source: authz.FromHeader, Name: "x-api-key"}
		case hasAPIKey:
			want = authz.Credential{Source: authz.FromHeader, Name: "api-key"}
		case isBearer:
			want = authz.Credential{Source: authz.FromBearer, Name: "authorization"}
		case present:
			want = authz.Credential{Source: authz.FromQuery, Name: "api_key"}
		}
		if got.Source != want.Source || got.Name != want.Name {
			t.Fatalf("Extract = %+v, want the source %s %q", short(got), want.Source, want.Name)
		}

		// A value is a valid credential, read from that location.
		if got.Value == "" {
			return
		}
		if len(got.Value) > authz.MaxCredentialBytes {
			t.Fatalf("credential of %d bytes, more than %d", len(got.Value), authz.MaxCredentialBytes)
		}
		for i := range len(got.Value) {
			if b := got.Value[i]; b <= ' ' || b > '~' || b == ',' {
				t.Fatalf("credential %q has the byte %q", got.Value, b)
			}
		}
		switch got.Source {
		case authz.FromHeader:
			if got.Value != headers[got.Name] {
				t.Fatalf("credential %q, but the header is %q", got.Value, headers[got.Name])
			}
		case authz.FromBearer:
			if !strings.HasSuffix(auth, got.Value) || strings.TrimLeft(auth[6:len(auth)-len(got.Value)], " \t") != "" {
				t.Fatalf("credential %q is not the token of %q", got.Value, auth)
			}
		case authz.FromQuery:
			if len(values) != 1 {
				t.Fatalf("credential %q from a parameter sent %d times", got.Value, len(values))
			}
			if v, err := url.QueryUnescape(values[0]); err != nil || v != got.Value {
				t.Fatalf("credential %q, but the parameter is %q", got.Value, values[0])
			}
		}
	})
}

// refQuery is the query parameter lookup written plainly: the raw values
// of every parameter named name, as sent.
func refQuery(path, name string) (values []string, present bool) {
	_, q, ok := strings.Cut(path, "?")
	if !ok {
		return nil, false
	}
	q, _, _ = strings.Cut(q, "#")
	for _, pair := range strings.Split(q, "&") {
		k, v, _ := strings.Cut(pair, "=")
		if k == name {
			values = append(values, v)
		}
	}
	return values, len(values) > 0
}
