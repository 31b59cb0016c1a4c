package ratelimit_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/redistest"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

// replyDropper dials connections that, once armed, let the next EVALSHA
// through and lose its reply: the connection closes when the reply comes,
// as when a failover or a network fault cuts it after the script ran.
type replyDropper struct {
	armed   atomic.Bool
	dropped atomic.Int64
}

func (d *replyDropper) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &dropConn{Conn: c, d: d}, nil
}

type dropConn struct {
	net.Conn
	d    *replyDropper
	drop atomic.Bool
}

func (c *dropConn) Write(p []byte) (int, error) {
	if bytes.Contains(bytes.ToLower(p), []byte("evalsha")) && c.d.armed.CompareAndSwap(true, false) {
		c.drop.Store(true)
	}
	return c.Conn.Write(p)
}

func (c *dropConn) Read(p []byte) (int, error) {
	if c.drop.CompareAndSwap(true, false) {
		_, _ = c.Conn.Read(p) // the reply: the script ran
		c.Conn.Close()
		c.d.dropped.Add(1)
		return 0, io.EOF
	}
	return c.Conn.Read(p)
}

// TestClusterTakeNotResent: in a Cluster, go-redis resends a command whose
// connection failed (EOF) up to MaxRedirects times, whatever MaxRetries
// says. A Take whose reply is lost after its script ran must not run again
// (it would charge twice, and the caller would see one charge): it fails,
// and its void refunds the one charge.
func TestClusterTakeNotResent(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	d := &replyDropper{}
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	client := ratelimit.NewRedisClient(ratelimit.RedisOptions{Addrs: addrs, Timeout: time.Second, Dialer: d.dial}, nil)
	t.Cleanup(func() { client.Close() })
	eng, err := ratelimit.NewEngine(ratelimit.NewRedisStore(client, time.Second), ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := eng.Credit(ctx, "acme", 100, "seed"); err != nil {
		t.Fatal(err)
	}
	req := func() *ratelimit.Request {
		return &ratelimit.Request{Charge: &ratelimit.Charge{Account: "acme", Credits: 10}}
	}
	if _, err := eng.Take(ctx, req()); err != nil { // loads the script
		t.Fatal(err)
	}
	d.armed.Store(true)
	out, err := eng.Take(ctx, req())
	if d.dropped.Load() != 1 {
		t.Fatalf("%d replies dropped, want 1", d.dropped.Load())
	}
	if !errors.Is(err, ratelimit.ErrStoreUnavailable) {
		t.Fatalf("the Take whose reply was lost: %+v, %v; want ErrStoreUnavailable (balance %d)", out, err, balance(t, eng.Store(), "acme"))
	}
	if b := balance(t, eng.Store(), "acme"); b != 80 {
		t.Fatalf("balance %d after the Take whose reply was lost, want 80 (run once, not voided yet)", b)
	}
	runUntil(t, eng, "the Take whose reply was lost was never voided", func() bool { return balance(t, eng.Store(), "acme") == 90 })
}
