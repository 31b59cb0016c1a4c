package admin_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/admin"
	"github.com/tollgate-dev/tollgate/internal/tlsconfig/tlstest"
)

// dial opens a raw TCP connection to the admin server at base.
func dial(t *testing.T, base string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// probe sends GET /healthz on c (kept alive) and reads the answer within
// wait; it reports whether one came.
func probe(t *testing.T, c net.Conn, r *bufio.Reader, wait time.Duration) bool {
	t.Helper()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return false
		}
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz: %s", resp.Status)
	}
	return true
}

// closedWithin reports how long the server took to close c (reading
// until EOF or a reset), failing past limit.
func closedWithin(t *testing.T, c net.Conn, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept the connection open for %v", limit)
	}
	return time.Since(start)
}

// TestIdleConnectionsClosed: a keep-alive connection left idle is closed
// after IdleTimeout (one client once held 20,000 of them open and the
// process ran out of file descriptors).
func TestIdleConnectionsClosed(t *testing.T) {
	const idle = 300 * time.Millisecond
	base := adminServer(t, nil, admin.Limits{IdleTimeout: idle})
	c := dial(t, base)
	if !probe(t, c, bufio.NewReader(c), 5*time.Second) {
		t.Fatal("no answer")
	}
	if d := closedWithin(t, c, 5*time.Second); d < idle/2 {
		t.Errorf("closed after %v, before the idle timeout %v", d, idle)
	}
}

// TestConnectionCap: with MaxConnections open, one more connection is not
// served (it waits in the listen backlog) until one of them closes.
func TestConnectionCap(t *testing.T) {
	const max = 3
	base := adminServer(t, nil, admin.Limits{MaxConnections: max})
	conns := make([]net.Conn, max)
	for i := range conns {
		conns[i] = dial(t, base)
		if !probe(t, conns[i], bufio.NewReader(conns[i]), 5*time.Second) {
			t.Fatalf("connection %d of %d not served", i+1, max)
		}
	}
	extra := dial(t, base) // the kernel completes the handshake; Tollgate does not accept it
	r := bufio.NewReader(extra)
	if probe(t, extra, r, 500*time.Millisecond) {
		t.Fatalf("connection %d served while %d were open", max+1, max)
	}
	conns[0].Close()
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(r, nil) // the request sent above, now read
	if err != nil {
		t.Fatalf("after one connection closed, connection %d: %v", max+1, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("connection %d: %s", max+1, resp.Status)
	}
}

// TestSlowlorisCut: a client sending its headers a byte at a time is cut
// off after ReadHeaderTimeout, freeing its slot under the connection cap.
func TestSlowlorisCut(t *testing.T) {
	const header = 300 * time.Millisecond
	base := adminServer(t, nil, admin.Limits{ReadHeaderTimeout: header, MaxConnections: 1})
	slow := dial(t, base)
	stop := make(chan struct{})
	trickled := make(chan struct{})
	go func() {
		defer close(trickled)
		msg := "GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Slow: " + strings.Repeat("a", 200)
		for i := range len(msg) {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := io.WriteString(slow, msg[i:i+1]); err != nil {
				return // cut off
			}
		}
	}()
	d := closedWithin(t, slow, 3*time.Second)
	close(stop)
	<-trickled
	if d > 2*time.Second {
		t.Errorf("the slow client was cut after %v, want about %v", d, header)
	}
	// Its slot is free again: the next client is served.
	next := dial(t, base)
	if !probe(t, next, bufio.NewReader(next), 5*time.Second) {
		t.Error("the next client was not served after the slow one was cut")
	}
}

// TestMaxHeaderBytes: headers past MaxHeaderBytes are refused (431).
func TestMaxHeaderBytes(t *testing.T) {
	base := adminServer(t, nil, admin.Limits{MaxHeaderBytes: 4 << 10})
	req, _ := http.NewRequest("GET", base+"/healthz", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 64<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("64 KiB of headers: %s, want 431", resp.Status)
	}
}

// TestDefaultLimits: the admin listener is bounded by default.
func TestDefaultLimits(t *testing.T) {
	l := admin.DefaultLimits
	if l.MaxConnections <= 0 || l.ReadHeaderTimeout <= 0 || l.ReadTimeout <= 0 || l.WriteTimeout <= 0 || l.IdleTimeout <= 0 || l.MaxHeaderBytes <= 0 {
		t.Errorf("DefaultLimits %+v: want every bound set", l)
	}
	if l.WriteTimeout <= admin.UsageTimeout {
		t.Errorf("WriteTimeout %v: want more than a usage report's query may take (%v), or its answer is cut", l.WriteTimeout, admin.UsageTimeout)
	}
}

// selfSigned is a certificate for 127.0.0.1 and a pool trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	ca := tlstest.NewCA(t, "admin")
	return ca.Server(t).TLS, ca.Pool()
}

// TestConnectionCapUnderTLS: the cap counts TCP connections under TLS: a
// client that connects and never completes its handshake holds a slot
// (so the cap bounds file descriptors, not just finished handshakes) until
// the handshake times out with ReadHeaderTimeout.
func TestConnectionCapUnderTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	const header = 400 * time.Millisecond
	s := admin.New(admin.Options{
		Gatherer: prometheus.NewRegistry(), Ready: func() bool { return true }, Status: func() any { return nil }, Logger: discard,
		TLS:    &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		Limits: admin.Limits{MaxConnections: 1, ReadHeaderTimeout: header},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	base := "http://" + ln.Addr().String()
	mute := dial(t, base)             // TCP only: no ClientHello
	time.Sleep(50 * time.Millisecond) // accepted first
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	start := time.Now()
	resp, err := client.Get("https://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if waited := time.Since(start); resp.StatusCode != http.StatusOK || waited < header/2 {
		t.Errorf("HTTPS client: %s after %v; want 200 once the silent connection's handshake timed out (%v)", resp.Status, waited, header)
	}
	if d := closedWithin(t, mute, 5*time.Second); d > 3*time.Second {
		t.Errorf("the silent connection stayed %v", d)
	}
}
