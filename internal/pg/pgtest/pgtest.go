// Package pgtest gives each test a PostgreSQL database of its own, on the
// server named by TOLLGATE_TEST_POSTGRES, dropped when the test ends; and
// a TCP proxy in front of the server that a test can cut. No mocks: tests
// talk to PostgreSQL.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate-dev/tollgate/internal/config"
)

// EnvVar names the server the tests use; DefaultServer is used when it is
// unset (a local server with trust authentication, as CI starts it).
const (
	EnvVar        = "TOLLGATE_TEST_POSTGRES"
	DefaultServer = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
)

const install = "install and start PostgreSQL (apt-get install postgresql && pg_ctlcluster $(ls /etc/postgresql) main start; " +
	"or docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres), or set " + EnvVar +
	" to a server where this user may CREATE DATABASE"

// DB is a database created for one test.
type DB struct {
	t testing.TB
	// Name is the database's name (tollgate_test_ and random hex).
	Name string
	// DSN connects to it.
	DSN    string
	server string // DSN of the server's maintenance database
	addr   string // the server's address, for a Proxy
	net    string // "tcp" or "unix"
}

// New creates an empty database for the test and drops it when the test
// ends, terminating the connections left to it. When the server does not
// answer, the test fails if CI is set and is skipped otherwise, saying
// how to install one.
func New(t testing.TB) *DB {
	t.Helper()
	server := os.Getenv(EnvVar)
	if server == "" {
		server = DefaultServer
	}
	if _, err := config.ParsePostgresDSN(server); err != nil { // a message that shows no password
		t.Fatalf("%s: %v", EnvVar, err)
	}
	cfg, err := pgx.ParseConfig(server)
	if err != nil {
		t.Fatalf("%s: %v", EnvVar, err)
	}
	cfg.ConnectTimeout = 3 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		msg := fmt.Sprintf("PostgreSQL at %s:%d does not answer (%v): %s", cfg.Host, cfg.Port, err, install)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	defer conn.Close(context.Background())
	d := &DB{t: t, Name: "tollgate_test_" + randomHex(t, 6), server: server, net: "tcp", addr: net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))}
	if strings.HasPrefix(cfg.Host, "/") {
		d.net, d.addr = "unix", fmt.Sprintf("%s/.s.PGSQL.%d", cfg.Host, cfg.Port)
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{d.Name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database %s: %v", d.Name, err)
	}
	t.Cleanup(d.drop) // registered first: runs after the pools' cleanups
	d.DSN = withDatabase(server, d.Name)
	return d
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// withDatabase returns dsn connecting to database name instead.
func withDatabase(dsn, name string) string {
	if u, ok := parseURL(dsn); ok {
		u.Path = "/" + name
		return u.String()
	}
	return dsn + " dbname=" + name // key=value: the last one wins
}

// withAddr returns dsn connecting to the TCP address addr instead.
func withAddr(dsn, addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	if u, ok := parseURL(dsn); ok {
		u.Host = addr
		return u.String()
	}
	return dsn + " host=" + host + " port=" + port
}

func parseURL(dsn string) (*url.URL, bool) {
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return nil, false
	}
	u, err := url.Parse(dsn)
	return u, err == nil
}

// drop terminates the connections left to the database and drops it.
func (d *DB) drop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, d.server)
	if err != nil {
		d.t.Errorf("pgtest: drop database %s: %v", d.Name, err)
		return
	}
	defer conn.Close(context.Background())
	for attempt := 0; ; attempt++ {
		_, err = conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, d.Name)
		if err == nil {
			_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{d.Name}.Sanitize())
		}
		if err == nil {
			return
		}
		if attempt == 20 || ctx.Err() != nil {
			d.t.Errorf("pgtest: drop database %s: %v", d.Name, err)
			return
		}
		time.Sleep(100 * time.Millisecond) // a backend still exiting
	}
}

// Pool returns a new connection pool to the database, closed when the
// test ends.
func (d *DB) Pool() *pgxpool.Pool { return newPool(d.t, d.DSN) }

func newPool(t testing.TB, dsn string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	cfg.ConnConfig.ConnectTimeout = 3 * time.Second
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Proxy is a TCP proxy in front of the server, owned by one test, that
// the test can cut to play an outage.
type Proxy struct {
	t testing.TB
	// DSN connects to the test's database through the proxy.
	DSN    string
	ln     net.Listener
	target string
	net    string
	wg     sync.WaitGroup

	mu      sync.Mutex
	cut     bool
	dropped bool
	conns   map[net.Conn]struct{}
}

// Proxy starts a proxy to the server on a free loopback port, closed
// when the test ends. (With sslmode=verify-full its address would not
// match the server's certificate: test servers use sslmode=disable.)
func (d *DB) Proxy() *Proxy {
	d.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		d.t.Fatal(err)
	}
	p := &Proxy{t: d.t, ln: ln, target: d.addr, net: d.net, conns: map[net.Conn]struct{}{}}
	p.DSN = withAddr(d.DSN, ln.Addr().String())
	p.wg.Add(1)
	go p.accept()
	d.t.Cleanup(p.Close)
	return p
}

// Pool returns a new connection pool through the proxy, closed when the
// test ends.
func (p *Proxy) Pool() *pgxpool.Pool { return newPool(p.t, p.DSN) }

// Cut closes every connection through the proxy and refuses new ones
// until Restore, as a network partition or a server crash would.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	p.dropped = false
	for c := range p.conns {
		c.Close()
	}
}

// DropReplies keeps the connections open but throws away what the server
// sends, until Cut: a statement runs (and commits) while its client never
// learns it did.
func (p *Proxy) DropReplies() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropped = true
}

// Restore lets new connections through again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
	p.dropped = false
}

// Close stops the proxy and waits for its goroutines.
func (p *Proxy) Close() {
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c)
		}()
	}
}

// track adds c to the open connections unless the proxy is cut.
func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
		c.Close()
	}
}

func (p *Proxy) serve(client net.Conn) {
	server, err := net.DialTimeout(p.net, p.target, 3*time.Second)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(client, server) {
		client.Close()
		server.Close()
		return
	}
	defer p.untrack(client, server)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(server, client)
		server.Close()
	}()
	_, _ = io.Copy(client, replies{p, server})
	client.Close()
	<-done
}

// replies reads what the server sends, throwing it away while the proxy
// drops replies.
type replies struct {
	p *Proxy
	r io.Reader
}

func (r replies) Read(b []byte) (int, error) {
	for {
		n, err := r.r.Read(b)
		r.p.mu.Lock()
		dropped := r.p.dropped
		r.p.mu.Unlock()
		if !dropped || err != nil {
			return n, err
		}
	}
}
