package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/admin"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

const testAdminToken = "cli-test-token"

// adminTokens is testAdminToken as the all-scopes token (admin.token).
func adminTokens(t testing.TB) *admin.Tokens {
	t.Helper()
	k, err := admin.NewTokens(admin.AllScopes(testAdminToken))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// adminServer runs the accounts API over a memory store.
func adminServer(t *testing.T) string {
	t.Helper()
	e, err := ratelimit.NewEngine(ratelimit.NewMemoryStore(ratelimit.MemoryOptions{}), ratelimit.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(admin.AccountsHandler(e, adminTokens(t), slog.New(slog.DiscardHandler), nil))
	t.Cleanup(srv.Close)
	return srv.URL
}

func credits(args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = creditsCmd(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestCreditsCmd(t *testing.T) {
	base := adminServer(t)
	t.Setenv("TOLLGATE_ADMIN_TOKEN", testAdminToken)
	var generated string // the key "add without a key" printed
	steps := []struct {
		name       string
		args       func() []string
		wantOut    string // exact stdout; "" to skip
		wantErr    string // part of the error; "" for success
		wantStderr string // regexp the stderr must match; "" for empty
	}{
		{
			name:    "add",
			args:    func() []string { return []string{"add", "acme", "100", "--idempotency-key", "k1", "--admin", base} },
			wantOut: "{\n  \"account\": \"acme\",\n  \"balance\": 100,\n  \"applied\": true\n}\n",
		},
		{
			name:    "replay with the same key is not applied",
			args:    func() []string { return []string{"add", "--admin", base, "--idempotency-key", "k1", "acme", "100"} },
			wantOut: "{\n  \"account\": \"acme\",\n  \"balance\": 100,\n  \"applied\": false\n}\n",
		},
		{
			name:       "add without a key prints the generated one",
			args:       func() []string { return []string{"add", "acme", "50", "--admin", base} },
			wantOut:    "{\n  \"account\": \"acme\",\n  \"balance\": 150,\n  \"applied\": true\n}\n",
			wantStderr: `^idempotency key: ([0-9a-f]{32}) \(to retry this top-up safely, rerun with --idempotency-key ([0-9a-f]{32})\)\n$`,
		},
		{
			name:    "retry with the printed key is not applied",
			args:    func() []string { return []string{"add", "acme", "50", "--admin", base, "--idempotency-key", generated} },
			wantOut: "{\n  \"account\": \"acme\",\n  \"balance\": 150,\n  \"applied\": false\n}\n",
		},
		{
			name:    "same key with another amount",
			args:    func() []string { return []string{"add", "acme", "60", "--admin", base, "--idempotency-key", "k1"} },
			wantErr: `409 Conflict: Idempotency-Key "k1" was already used`,
		},
		{
			name:    "show",
			args:    func() []string { return []string{"show", "acme", "--admin", base + "/"} },
			wantOut: "{\n  \"account\": \"acme\",\n  \"balance\": 150,\n  \"quotas\": []\n}\n",
		},
		{
			name:    "an id with a slash is escaped",
			args:    func() []string { return []string{"add", "team/a b", "7", "--admin", base, "--idempotency-key", "k1"} },
			wantOut: "{\n  \"account\": \"team/a b\",\n  \"balance\": 7,\n  \"applied\": true\n}\n",
		},
		{
			name: "wrong token",
			args: func() []string {
				return []string{"add", "acme", "100", "--admin", base, "--token", "wrong", "--idempotency-key", "k9"}
			},
			wantErr: "401 Unauthorized: the bearer token is not one of this server's admin tokens",
		},
		{
			name:    "show with a wrong token",
			args:    func() []string { return []string{"show", "acme", "--admin", base, "--token", "wrong"} },
			wantErr: "401 Unauthorized",
		},
		{
			name:    "fractional amount",
			args:    func() []string { return []string{"add", "acme", "1.5", "--admin", base, "--idempotency-key", "k2"} },
			wantErr: "400 Bad Request: amount must be a positive integer no larger than 9007199254740991, got 1.5",
		},
		{
			name:    "amount that is not a number",
			args:    func() []string { return []string{"add", "acme", "ten", "--admin", base, "--idempotency-key", "k3"} },
			wantErr: `400 Bad Request: amount must be a positive integer no larger than 9007199254740991, got "ten"`,
		},
		{
			name: "negative amount after --",
			args: func() []string {
				return []string{"add", "--admin", base, "--idempotency-key", "k4", "--", "acme", "-5"}
			},
			wantErr: "400 Bad Request: amount must be a positive integer no larger than 9007199254740991, got -5",
		},
		{
			name: "amount beyond int64",
			args: func() []string {
				return []string{"add", "acme", "99999999999999999999", "--admin", base, "--idempotency-key", "k5"}
			},
			wantErr: "got 99999999999999999999",
		},
		{
			name:    "balance unchanged by the refused top-ups",
			args:    func() []string { return []string{"show", "--admin", base, "acme"} },
			wantOut: "{\n  \"account\": \"acme\",\n  \"balance\": 150,\n  \"quotas\": []\n}\n",
		},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			out, errOut, err := credits(s.args()...)
			if s.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), s.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, s.wantErr)
				}
				if errors.Is(err, errUsage) {
					t.Errorf("err is errUsage (exit 2); a server refusal must exit 1")
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v, stderr %q", err, errOut)
			}
			if s.wantOut != "" && out != s.wantOut {
				t.Errorf("stdout = %q, want %q", out, s.wantOut)
			}
			if s.wantStderr == "" {
				if errOut != "" {
					t.Errorf("stderr = %q, want nothing", errOut)
				}
				return
			}
			m := regexp.MustCompile(s.wantStderr).FindStringSubmatch(errOut)
			if m == nil || m[1] != m[2] {
				t.Fatalf("stderr = %q, want it to match %s with one key", errOut, s.wantStderr)
			}
			generated = m[1]
		})
	}
}

func TestCreditsCmdUsage(t *testing.T) {
	base := adminServer(t)
	tests := []struct {
		name   string
		env    string // TOLLGATE_ADMIN_TOKEN
		args   []string
		stderr string // part of stderr
	}{
		{"no command", testAdminToken, nil, "Usage:"},
		{"unknown command", testAdminToken, []string{"remove", "acme"}, `unknown command "remove"`},
		{"add without an amount", testAdminToken, []string{"add", "acme", "--admin", base}, "want ACCOUNT AMOUNT, got 1 argument(s)"},
		{"add with too many arguments", testAdminToken, []string{"add", "acme", "1", "2", "--admin", base}, "got 3 argument(s)"},
		{"show without an account", testAdminToken, []string{"show", "--admin", base}, "want ACCOUNT, got 0"},
		{"unknown flag", testAdminToken, []string{"show", "acme", "--verbose"}, "flag provided but not defined: -verbose"},
		{"no token", "", []string{"show", "acme", "--admin", base}, "no admin token: set TOLLGATE_ADMIN_TOKEN"},
		{"admin is not a URL", testAdminToken, []string{"show", "acme", "--admin", "127.0.0.1:9192"}, `--admin "127.0.0.1:9192" is not an http:// or https:// URL`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("TOLLGATE_ADMIN_TOKEN", tt.env)
			_, errOut, err := credits(tt.args...)
			if !errors.Is(err, errUsage) {
				t.Errorf("err = %v, want errUsage", err)
			}
			if !strings.Contains(errOut, tt.stderr) {
				t.Errorf("stderr = %q, want it to contain %q", errOut, tt.stderr)
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		out, _, err := credits("help")
		if err != nil || !strings.Contains(out, "tollgate credits add ACCOUNT AMOUNT") {
			t.Errorf("err = %v, stdout %q", err, out)
		}
	})
}

func TestCreditsCmdUnreachable(t *testing.T) {
	srv := httptest.NewServer(nil)
	base := srv.URL
	srv.Close() // nothing listens there now
	_, _, err := credits("show", "acme", "--admin", base, "--token", testAdminToken)
	if err == nil || errors.Is(err, errUsage) || !strings.HasPrefix(err.Error(), "credits show: ") || !strings.Contains(err.Error(), base+"/v1/accounts/acme") {
		t.Errorf("err = %v, want a connection error naming the request", err)
	}
}

func TestProblemDetail(t *testing.T) {
	tests := []struct {
		name, contentType, body, want string
	}{
		{"problem", "application/problem+json", `{"title":"Bad Request","detail":"fix it"}`, "fix it"},
		{"problem with parameters", "application/problem+json; charset=utf-8", `{"detail":"fix it"}`, "fix it"},
		{"problem without detail", "application/problem+json", `{"title":"Bad Gateway"}`, "Bad Gateway"},
		{"plain text", "text/plain", "upstream connect error\n", "upstream connect error"},
		{"empty", "", "", "(empty response)"},
		{"long", "text/html", strings.Repeat("x", 300), strings.Repeat("x", 200) + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := problemDetail(tt.contentType, []byte(tt.body)); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// The amount is sent as the JSON number typed, never rounded through a
// float.
func TestCreditsAmountEncoding(t *testing.T) {
	for _, amount := range []string{"9007199254740991", "1e3", "1.0"} {
		if !jsonNumber.MatchString(amount) {
			t.Errorf("%s is not matched as a JSON number", amount)
		}
		b, err := json.Marshal(map[string]any{"amount": json.Number(amount)})
		if want := `{"amount":` + amount + `}`; err != nil || string(b) != want {
			t.Errorf("body = %s, %v; want %s", b, err, want)
		}
	}
	for _, amount := range []string{"ten", "1.", ".5", "+1", "0x10", "1e", "NaN", " 1"} {
		if jsonNumber.MatchString(amount) {
			t.Errorf("%q is matched as a JSON number", amount)
		}
	}
}
