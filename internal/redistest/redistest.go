// Package redistest starts a real redis-server for tests, on a free
// loopback port, with nothing persisted. No mocks: tests talk to Redis.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server process owned by one test.
type Server struct {
	t    testing.TB
	Addr string
	dir  string
	cmd  *exec.Cmd
	args []string // extra redis-server arguments
	conf string   // a Sentinel's config file (redis-server conf --sentinel)
}

// Start starts redis-server from PATH and stops it when the test ends.
// Without the binary the test fails when CI is set, and is skipped
// otherwise, saying how to install it.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t)
}

// StartWith starts redis-server with more arguments (such as
// "--appendonly", "yes" to persist across Restart).
func StartWith(t testing.TB, args ...string) *Server {
	t.Helper()
	return start(t, args...)
}

func start(t testing.TB, args ...string) *Server {
	t.Helper()
	return startConf(t, nil, args...)
}

// startConf starts redis-server; with conf, a Sentinel whose config file
// conf writes (it is given the server's port).
func startConf(t testing.TB, conf func(port string) string, args ...string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		msg := "redis-server is not on PATH (install it: apt-get install redis-server, or brew install redis)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	s := &Server{t: t, dir: t.TempDir(), args: args}
	for attempt := 0; ; attempt++ {
		s.Addr = freeAddr(t)
		if conf != nil {
			_, port, _ := net.SplitHostPort(s.Addr)
			s.conf = filepath.Join(s.dir, "sentinel.conf")
			if err := os.WriteFile(s.conf, []byte(conf(port)), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		err := s.start()
		if err == nil {
			break
		}
		if attempt == 4 {
			t.Fatalf("redis-server: %v", err)
		}
	}
	t.Cleanup(s.Stop)
	return s
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (s *Server) start() error {
	_, port, _ := net.SplitHostPort(s.Addr)
	var args []string
	if s.conf != "" {
		args = []string{s.conf, "--sentinel"}
	}
	args = append(append(args, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log")), s.args...)
	s.cmd = exec.Command("redis-server", args...)
	if err := s.cmd.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", s.Addr, 100*time.Millisecond)
		if err == nil {
			ok := ping(c)
			c.Close()
			if ok {
				return nil
			}
		}
		if s.cmd.ProcessState != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	return fmt.Errorf("did not start on %s:\n%s", s.Addr, lastLines(string(log), 5))
}

func ping(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Stop kills the server (as a crash would). Start it again with Restart.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Pause stops the server process (SIGSTOP) without closing its sockets:
// commands sent meanwhile wait, and run after Resume, as in a Redis pause
// (a fork, a slow disk, a busy script).
func (s *Server) Pause() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatalf("redis-server pause: %v", err)
	}
}

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		s.t.Fatalf("redis-server resume: %v", err)
	}
}

// Restart starts the server again on the same address, as after a crash:
// empty, unless it was started with persistence (StartWith).
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		s.t.Fatalf("redis-server restart: %v", err)
	}
}

// Client returns a new client for the server, closed when the test ends.
func (s *Server) Client() redis.UniversalClient {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DialTimeout: time.Second})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Cluster is a Redis Cluster of masters (no replicas) owned by one test,
// on loopback ports, built with redis-cli --cluster create.
type Cluster struct {
	t     testing.TB
	Nodes []*Server
}

// StartCluster starts a Cluster of n masters (at least 3) and stops it when
// the test ends. It returns once every node reports cluster_state:ok.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		msg := "redis-cli is not on PATH (install it: apt-get install redis-tools)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	c := &Cluster{t: t}
	addrs := make([]string, n)
	for i := range n {
		c.Nodes = append(c.Nodes, start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"))
		addrs[i] = c.Nodes[i].Addr
	}
	out, err := exec.Command("redis-cli", append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, lastLines(string(out), 10))
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, node := range c.Nodes {
		rc := redis.NewClient(&redis.Options{Addr: node.Addr})
		for {
			info, err := rc.ClusterInfo(t.Context()).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				rc.Close()
				t.Fatalf("cluster node %s never reported cluster_state:ok: %v %s", node.Addr, err, info)
			}
			time.Sleep(20 * time.Millisecond)
		}
		rc.Close()
	}
	return c
}

// Client returns a new Cluster client, closed when the test ends.
func (c *Cluster) Client() *redis.ClusterClient {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, MaxRetries: -1, DialTimeout: time.Second})
	c.t.Cleanup(func() { cc.Close() })
	return cc
}
