package directory_test

import (
	"context"
	"fmt"
	"time"

	"github.com/tollgate-dev/tollgate/internal/directory"
)

// A consumer, a key shown once, and a resolver that answers for it from
// its cache and refuses an unknown key by its filter.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	store := directory.NewMemory(directory.MemoryOptions{})
	if _, err := store.CreateConsumer(ctx, directory.Meta{IdempotencyKey: "signup-acme"}, directory.Consumer{ID: "acme", Plan: "pro"}); err != nil {
		panic(err)
	}
	nk, err := store.CreateKey(ctx, directory.Meta{IdempotencyKey: "key-acme-1"}, directory.KeyRequest{Consumer: "acme", Name: "ci"})
	if err != nil {
		panic(err)
	}
	r, err := directory.NewResolver(store, directory.ResolverOptions{Logger: quiet})
	if err != nil {
		panic(err)
	}
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	for !r.Ready() {
		time.Sleep(time.Millisecond)
	}

	v, ok := r.Resolve(ctx, nk.Plaintext)
	fmt.Println(ok, v.Consumer.ID, v.Consumer.Plan, v.Key.Name, v.Key.Prefix == nk.Plaintext[:11])
	_, ok = r.Resolve(ctx, "tg_not_a_key")
	fmt.Println(ok)

	cancel()
	<-done
	// Output:
	// true acme pro ci true
	// false
}
