package authz_test

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/internal/directory"
)

// TestInputWithConsumer: input.tollgate.consumer is the resolved consumer
// and key, as AST values; without one, input.tollgate is undefined.
func TestInputWithConsumer(t *testing.T) {
	expires := time.Date(2027, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))
	req := checkRequest(map[string]string{"x-api-key": "tg_x"})
	tests := []struct {
		name string
		r    *directory.Resolved
		want string // input.tollgate as JSON; "" undefined
	}{
		{name: "none", r: nil},
		{name: "consumer and key", r: &directory.Resolved{
			Consumer: directory.Consumer{ID: "acme", Plan: "pro", Status: "active", Metadata: map[string]any{"team": "search", "seats": 12.0, "tags": []any{"a"}}},
			Key:      directory.Key{ID: "key_1", Name: "production", Hash: directory.Hash("tg_x")},
		}, want: `{"consumer": {"id": "acme", "plan": "pro", "status": "active", "metadata": {"team": "search", "seats": 12, "tags": ["a"]},
			"key": {"id": "key_1", "name": "production"}}}`},
		{name: "expiring key, no metadata", r: &directory.Resolved{
			Consumer: directory.Consumer{ID: "bob", Plan: "free", Status: "suspended"},
			Key:      directory.Key{ID: "key_2", ExpiresAt: &expires},
		}, want: `{"consumer": {"id": "bob", "plan": "free", "status": "suspended", "metadata": {},
			"key": {"id": "key_2", "name": "", "expires_at": "2027-01-02T02:04:05Z"}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := authz.InputWith(req, nil, tt.r).(ast.Object)
			got := in.Get(ast.StringTerm("tollgate"))
			if tt.want == "" {
				if got != nil {
					t.Fatalf("input.tollgate = %v, want undefined", got)
				}
				return
			}
			if want := ast.MustParseTerm(tt.want); got == nil || !got.Equal(want) {
				t.Fatalf("input.tollgate = %v, want %v", got, want)
			}
			// The rest of the input is the input without a consumer.
			if without := authz.InputWith(req, nil, nil).(ast.Object); in.Len() != without.Len()+1 {
				t.Errorf("input has %d members, want %d", in.Len(), without.Len()+1)
			}
		})
	}
}

func checkRequest(headers map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "api.example.com", Path: "/v1/invoices", Headers: headers},
	}}}
}

// runResolver runs a Resolver over store until the test ends; reg (may be
// nil) receives its metrics.
func runResolver(t testing.TB, store directory.Store, reg prometheus.Registerer) *directory.Resolver {
	t.Helper()
	r, err := directory.NewResolver(store, directory.ResolverOptions{Registerer: reg, TouchInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(5 * time.Second); !r.Ready(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("resolver not ready after 5s")
		}
	}
	return r
}

// TestCheckResolvesConsumer: with a Resolver, the policy sees the consumer
// the presented key belongs to, and nothing for an unknown or revoked key
// or no key; without one, never.
func TestCheckResolvesConsumer(t *testing.T) {
	ctx := context.Background()
	store := directory.NewMemory(directory.MemoryOptions{})
	for _, c := range []directory.Consumer{
		{ID: "acme", Plan: "pro", Metadata: map[string]any{"team": "search"}},
		{ID: "bob", Plan: "free", Status: directory.StatusSuspended},
	} {
		if _, err := store.CreateConsumer(ctx, directory.Meta{}, c); err != nil {
			t.Fatal(err)
		}
	}
	expires := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	acme, err := store.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme", Name: "production"})
	if err != nil {
		t.Fatal(err)
	}
	expiring, _ := store.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme", Name: "ci", ExpiresAt: &expires})
	bob, _ := store.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "bob"})
	revoked, _ := store.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme"})
	if _, err := store.RevokeKey(ctx, directory.Meta{}, revoked.Key.ID); err != nil {
		t.Fatal(err)
	}
	on := startServerWith(t, "directory", "dir/decision", authz.Options{Resolver: runResolver(t, store, nil)})
	off := startServerWith(t, "directory", "dir/decision", authz.Options{})

	tests := []struct {
		name     string
		client   authv3.AuthorizationClient
		headers  map[string]string
		wantDeny int
		wantKey  string // the x-key header the policy set
	}{
		{name: "active consumer", client: on, headers: map[string]string{"x-api-key": acme.Plaintext},
			wantKey: acme.Key.ID + "/production/never"},
		{name: "expiring key", client: on, headers: map[string]string{"x-api-key": expiring.Plaintext},
			wantKey: expiring.Key.ID + "/ci/" + expires.Format(time.RFC3339)},
		{name: "suspended consumer", client: on, headers: map[string]string{"x-api-key": bob.Plaintext}, wantDeny: http.StatusPaymentRequired},
		{name: "revoked key", client: on, headers: map[string]string{"x-api-key": revoked.Plaintext}, wantDeny: http.StatusUnauthorized},
		{name: "unknown key", client: on, headers: map[string]string{"x-api-key": "tg_unknown"}, wantDeny: http.StatusUnauthorized},
		{name: "malformed key", client: on, headers: map[string]string{"x-api-key": "tg a"}, wantDeny: http.StatusUnauthorized},
		{name: "no key", client: on, headers: map[string]string{}, wantDeny: http.StatusUnauthorized},
		{name: "no resolver", client: off, headers: map[string]string{"x-api-key": acme.Plaintext}, wantDeny: http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := tt.client.Check(ctx, checkRequest(tt.headers))
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantDeny != 0 {
				if got := resp.GetDeniedResponse().GetStatus().GetCode(); int(got) != tt.wantDeny {
					t.Fatalf("status %v, want %d", got, tt.wantDeny)
				}
				return
			}
			ok := resp.GetOkResponse()
			if ok == nil {
				t.Fatalf("denied: %v, want allowed", resp.GetDeniedResponse())
			}
			got := map[string]string{}
			for _, h := range ok.GetHeaders() {
				got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
			}
			if got["x-key"] != tt.wantKey || got["x-team"] != "search" || got["x-tollgate-consumer"] != "acme" || got["x-tollgate-plan"] != "pro" {
				t.Errorf("headers %v, want x-key %q, x-team search, consumer acme, plan pro", got, tt.wantKey)
			}
			if len(ok.GetHeadersToRemove()) != 1 || ok.GetHeadersToRemove()[0] != "x-api-key" {
				t.Errorf("headers_to_remove %v, want [x-api-key] (the credential hidden)", ok.GetHeadersToRemove())
			}
		})
	}
}

// TestCheckSeesConsumerChange: input.tollgate.consumer (built once per
// resolved key and shared) follows a change of the consumer's plan.
func TestCheckSeesConsumerChange(t *testing.T) {
	ctx := context.Background()
	store := directory.NewMemory(directory.MemoryOptions{})
	if _, err := store.CreateConsumer(ctx, directory.Meta{}, directory.Consumer{ID: "acme", Plan: "free"}); err != nil {
		t.Fatal(err)
	}
	key, err := store.CreateKey(ctx, directory.Meta{}, directory.KeyRequest{Consumer: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	client := startServerWith(t, "directory", "dir/decision", authz.Options{Resolver: runResolver(t, store, nil)})
	plan := func() string {
		resp, err := client.Check(ctx, checkRequest(map[string]string{"x-api-key": key.Plaintext}))
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range resp.GetOkResponse().GetHeaders() {
			if h.GetHeader().GetKey() == "x-tollgate-plan" {
				return h.GetHeader().GetValue()
			}
		}
		return ""
	}
	for range 3 {
		if got := plan(); got != "free" {
			t.Fatalf("plan %q, want free", got)
		}
	}
	pro := "pro"
	if _, err := store.UpdateConsumer(ctx, directory.Meta{}, "acme", directory.ConsumerUpdate{Plan: &pro}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Second); plan() != "pro"; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the plan change was not seen within 1s")
		}
	}
}

// TestCheckSkipsResolutionUnread: a policy that never reads input.tollgate
// (the demo) costs no lookup.
func TestCheckSkipsResolutionUnread(t *testing.T) {
	store := directory.NewMemory(directory.MemoryOptions{})
	reg := prometheus.NewRegistry()
	client := startServerWith(t, "demo", "tollgate/decision", authz.Options{Resolver: runResolver(t, store, reg)})
	if _, err := client.Check(context.Background(), checkRequest(map[string]string{"x-api-key": "tg_live_3f9a1c0d5e7b4a2c"})); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tollgate_directory_lookups_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if v := m.GetCounter().GetValue(); v != 0 {
				t.Errorf("%s%v = %v, want 0", mf.GetName(), m.GetLabel(), v)
			}
		}
	}
}
