package authz_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// freeKey is the demo's free plan (GET /v1/invoices and /v1/status only).
const freeKey = "tg_demo_free_0001"

// checkPath sends the demo policy a GET of path, as Envoy would, with the
// free plan's key, and returns the HTTP status and the reason.
func checkPath(t *testing.T, client authv3.AuthorizationClient, path string) (int, string) {
	t.Helper()
	resp, err := client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET",
			Path:   path,
			Host:   "api.example.com",
			Headers: map[string]string{
				":method": "GET", ":path": path, ":authority": "api.example.com", ":scheme": "https",
				"x-api-key": freeKey,
			},
		}},
	}})
	if err != nil {
		t.Fatalf("Check(%q): %v", path, err)
	}
	if resp.GetOkResponse() != nil {
		return 200, ""
	}
	return int(resp.GetDeniedResponse().GetStatus().GetCode()), resp.GetStatus().GetMessage()
}

// traversals are paths by which a free plan client tries to reach a route
// outside its plan (anything but GET /v1/invoices… and /v1/status…)
// through path confusion: each means, to Envoy's normalization or to some
// upstream, a path that is not below /v1/invoices.
var traversals = []struct{ name, path string }{
	// Dot segments.
	{"dot-dot", "/v1/invoices/../../admin/delete"},
	{"dot-dot once", "/v1/invoices/../admin"},
	{"dot then dot-dot", "/v1/invoices/./../admin"},
	{"dot-dot at the end", "/v1/invoices/.."},
	{"from status", "/v1/status/../../admin"},
	{"three dots", "/v1/invoices/..."},
	// Percent-encoded dots.
	{"encoded dots", "/v1/invoices/%2e%2e/%2e%2e/admin"},
	{"encoded dots upper case", "/v1/invoices/%2E%2E/admin"},
	{"half encoded dots", "/v1/invoices/.%2e/admin"},
	{"other half encoded", "/v1/invoices/%2e./admin"},
	{"encoded dot then dots", "/v1/invoices/%2e/%2e%2e/%2e%2e/admin"},
	{"encoded dots at the end", "/v1/invoices/%2e%2e"},
	{"double encoded dots", "/v1/invoices/%252e%252e/admin"},
	{"IIS unicode dots", "/v1/invoices/%u002e%u002e/admin"},
	{"overlong UTF-8 dots", "/v1/invoices/%c0%ae%c0%ae/admin"},
	// Percent-encoded slashes and backslashes.
	{"encoded slashes", "/v1/invoices%2F..%2F..%2Fadmin"},
	{"encoded slash lower case", "/v1/invoices/..%2f..%2fadmin"},
	{"encoded dots and slashes", "/v1/invoices/%2e%2e%2f%2e%2e%2fadmin"},
	{"encoded backslash", "/v1/invoices/..%5cadmin"},
	{"encoded backslashes upper case", "/v1/invoices/..%5C..%5Cadmin"},
	{"double encoded slash", "/v1/invoices/%252e%252e%252fadmin"},
	{"unicode division slash", "/v1/invoices%E2%88%95..%E2%88%95admin"},
	// Backslashes.
	{"backslashes", `/v1/invoices\..\..\admin`},
	{"backslashes below the prefix", `/v1/invoices/..\..\admin`},
	// Path parameters.
	{"semicolon segment", "/v1/invoices;/../admin"},
	{"tomcat dot-dot-semicolon", "/v1/invoices/..;/admin"},
	{"session id", "/v1/invoices;jsessionid=x/../../admin"},
	{"encoded dots with semicolon", "/v1/invoices/%2e%2e;/admin"},
	// Double slashes.
	{"double slash before dot-dot", "/v1/invoices//../../admin"},
	{"leading double slash", "//v1/invoices/../../admin"},
	{"authority confusion", "//admin/v1/invoices"},
	// Prefix and trailing tricks.
	{"prefix of a segment", "/v1/invoicesXYZ-admin"},
	{"segment with suffix", "/v1/invoices.admin"},
	{"encoded space", "/v1/invoices%20/../admin"},
	{"encoded NUL", "/v1/invoices/..%00/admin"},
	{"encoded hash", "/v1/invoices%23/../../admin"},
	// Case: Envoy does not fold case, and neither does the policy.
	{"upper case", "/V1/INVOICES"},
	{"upper case then dot-dot", "/v1/Invoices/../admin"},
	{"upper case target", "/v1/invoices/../ADMIN"},
}

// TestFreePlanTraversalsDenied sends every traversal to the demo policy
// through the real engine and gRPC server, on the raw path (an Envoy that
// does not normalize, or a client reaching Tollgate some other way) and
// on the path Envoy's normalization (normalize_path, merge_slashes,
// escaped slashes unescaped) would send instead. Every one must be denied.
func TestFreePlanTraversalsDenied(t *testing.T) {
	client := startServer(t, "demo", "tollgate/decision")
	denied := func(t *testing.T, path string) {
		t.Helper()
		code, reason := checkPath(t, client, path)
		if code != 400 && code != 403 {
			t.Errorf("GET %q with the free plan: %d %q, want 400 or 403", path, code, reason)
		}
	}
	for _, c := range traversals {
		t.Run(c.name, func(t *testing.T) {
			t.Run("raw", func(t *testing.T) { denied(t, c.path) })
			norm, rejected, ok := envoyPath(c.path)
			if !ok {
				t.Logf("%q: Envoy answers 400 (normalization fails)", c.path)
				return
			}
			if rejected {
				t.Logf("%q: Envoy answers 400 (escaped slash, REJECT_REQUEST); checking the unescaped %q", c.path, norm)
			}
			t.Run("envoy", func(t *testing.T) { denied(t, norm) })
		})
	}
	if len(traversals) < 20 {
		t.Errorf("%d traversal cases, want at least 20", len(traversals))
	}
}

// TestFreePlanRoutesAllowed: what the free plan includes stays allowed,
// also after Envoy's normalization of a path that is outside it as sent.
func TestFreePlanRoutesAllowed(t *testing.T) {
	client := startServer(t, "demo", "tollgate/decision")
	for _, path := range []string{
		"/v1/invoices",
		"/v1/invoices/",
		"/v1/invoices/inv_1",
		"/v1/invoices?limit=10",
		"/v1/status?verbose=/v1/admin/../..",
		"/v1/status",
	} {
		if code, reason := checkPath(t, client, path); code != 200 {
			t.Errorf("GET %q with the free plan: %d %q, want 200", path, code, reason)
		}
	}
	for raw, want := range map[string]string{
		"/v1/status/../invoices": "/v1/invoices",
		"//v1//invoices":         "/v1/invoices",
	} {
		got, _, _ := envoyPath(raw)
		if got != want {
			t.Fatalf("envoyPath(%q) = %q, want %q", raw, got, want)
		}
		if code, reason := checkPath(t, client, raw); code != 400 && code != 403 {
			t.Errorf("GET %q (raw) with the free plan: %d %q, want 400 or 403", raw, code, reason)
		}
	}
}

// envoyPath emulates, for these tests only, what an HTTP connection
// manager configured as in envoy/*.yaml does to :path before routing and
// ext_authz. It is a model of Envoy 1.x's documented behaviour, not
// Envoy's code, and leaves out what these tests do not need (Chromium's
// nested-escape fix-up, header validation):
//
//  1. path_with_escaped_slashes_action: a path with %2F or %5C (either
//     case) is answered 400 by REJECT_REQUEST (rejected is true); norm is
//     then what UNESCAPE_AND_REDIRECT or UNESCAPE_AND_FORWARD would use,
//     %2F as "/" and %5C as "\", so the policy is tested on that too.
//  2. normalize_path (Chromium's CanonicalizePath, vendored by Envoy): "\"
//     becomes "/"; a %XX of a letter, digit, "-", "_" or "~" is decoded,
//     other escapes are kept as sent; "." and ".." segments, also written
//     %2e, are resolved, never above the root; space, control bytes,
//     bytes ≥ 0x80 and `"#<>\^{|}` are percent-encoded; %00 or a NUL byte
//     fails normalization (ok is false: Envoy answers 400).
//  3. merge_slashes: runs of "/" become one.
//
// The query string is left as it is.
func envoyPath(raw string) (norm string, rejected, ok bool) {
	p, q, hasQuery := strings.Cut(raw, "?")
	lower := strings.ToLower(p)
	rejected = strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c")
	p = strings.NewReplacer("%2F", "/", "%2f", "/", "%5C", `\`, "%5c", `\`).Replace(p)
	p, ok = canonicalPath(p)
	if !ok {
		return "", rejected, false
	}
	for strings.Contains(p, "//") {
		p = strings.ReplaceAll(p, "//", "/")
	}
	if hasQuery {
		p += "?" + q
	}
	return p, rejected, true
}

func canonicalPath(in string) (string, bool) {
	isSlash := func(i int) bool { return i < len(in) && (in[i] == '/' || in[i] == '\\') }
	// dotLen is the length of a dot at i: "." is 1, "%2e" is 3.
	dotLen := func(i int) int {
		switch {
		case i < len(in) && in[i] == '.':
			return 1
		case i+2 < len(in) && in[i] == '%' && in[i+1] == '2' && (in[i+2] == 'e' || in[i+2] == 'E'):
			return 3
		}
		return 0
	}
	var out []byte
	if !isSlash(0) {
		out = append(out, '/')
	}
	upOne := func() { // out ends with "/": drop its last segment
		i := len(out) - 2
		for i > 0 && out[i] != '/' {
			i--
		}
		if i < 0 {
			i = 0
		}
		out = out[:i+1]
	}
	for i := 0; i < len(in); i++ {
		c := in[i]
		if n := dotLen(i); n > 0 {
			if len(out) == 0 || out[len(out)-1] != '/' {
				out = append(out, '.') // part of a name
				i += n - 1
				continue
			}
			after := i + n
			switch m := dotLen(after); {
			case after == len(in): // "." at the end
				i = after - 1
			case isSlash(after): // "./"
				i = after
			case m > 0 && after+m == len(in): // ".." at the end
				upOne()
				i = after + m - 1
			case m > 0 && isSlash(after+m): // "../"
				upOne()
				i = after + m
			default: // a name starting with a dot
				out = append(out, '.')
				i += n - 1
			}
			continue
		}
		switch {
		case c == '\\':
			out = append(out, '/')
		case c == '%':
			v, err := hexByte(in, i+1)
			switch {
			case err != nil: // not an escape: kept as sent
				out = append(out, '%')
			case v == 0:
				return "", false
			case unreserved(v):
				out = append(out, v)
				i += 2
			default:
				out = append(out, in[i:i+3]...)
				i += 2
			}
		case c == 0:
			return "", false
		case c < 0x20 || c >= 0x7f || strings.IndexByte(" \"#<>^`{|}", c) >= 0:
			out = fmt.Appendf(out, "%%%02X", c)
		default:
			out = append(out, c)
		}
	}
	return string(out), true
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '~'
}

func hexByte(s string, i int) (byte, error) {
	if i+2 > len(s) {
		return 0, fmt.Errorf("short escape")
	}
	var v byte
	for _, c := range []byte(s[i : i+2]) {
		switch {
		case '0' <= c && c <= '9':
			v = v<<4 | (c - '0')
		case 'a' <= c && c <= 'f':
			v = v<<4 | (c - 'a' + 10)
		case 'A' <= c && c <= 'F':
			v = v<<4 | (c - 'A' + 10)
		default:
			return 0, fmt.Errorf("not hex")
		}
	}
	return v, nil
}

// TestEnvoyPath pins the emulation to what Envoy's normalization does to
// the examples in Envoy's documentation and tests.
func TestEnvoyPath(t *testing.T) {
	for _, c := range []struct {
		raw, want    string
		rejected, ok bool
	}{
		{"/v1/invoices/../../admin/delete", "/admin/delete", false, true},
		{"/v1/invoices/%2e%2e/%2E%2E/admin", "/admin", false, true},
		{"/v1/invoices%2F..%2F..%2Fadmin", "/admin", true, true},
		{"/v1/invoices;/../admin", "/v1/admin", false, true},
		{`/a\..\b`, "/b", false, true},
		{"/a/..;/b", "/a/..;/b", false, true},
		{"//a//b/./c/", "/a/b/c/", false, true},
		{"/a/%41%7e%20%25", "/a/A~%20%25", false, true},
		{"/a b", "/a%20b", false, true},
		{"/../../a", "/a", false, true},
		{"/a/...", "/a/...", false, true},
		{"/a/b/..?x=/../y", "/a/?x=/../y", false, true},
		{"/a%00", "", false, false},
	} {
		got, rejected, ok := envoyPath(c.raw)
		if got != c.want || rejected != c.rejected || ok != c.ok {
			t.Errorf("envoyPath(%q) = %q, %v, %v; want %q, %v, %v", c.raw, got, rejected, ok, c.want, c.rejected, c.ok)
		}
	}
}
