// Package redistest starts a real redis-server for tests, on a free
// loopback port, with nothing persisted. No mocks: tests talk to Redis.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
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

// Cluster is a Redis Cluster owned by one test, on loopback ports, built
// with redis-cli --cluster create.
type Cluster struct {
	t        testing.TB
	Nodes    []*Server
	replicas int // per master
}

// StartCluster starts a Cluster of n masters (at least 3) and stops it when
// the test ends. It returns once every node reports cluster_state:ok.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	return StartClusterReplicas(t, n, 0)
}

// StartClusterReplicas starts a Cluster of n masters (at least 3), each
// with replicas replicas, and stops it when the test ends. It returns once
// every node reports cluster_state:ok and every replica is in sync.
func StartClusterReplicas(t testing.TB, n, replicas int) *Cluster {
	t.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		msg := "redis-cli is not on PATH (install it: apt-get install redis-tools)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	c := &Cluster{t: t, replicas: replicas}
	total := n * (1 + replicas)
	addrs := make([]string, total)
	for i := range total {
		c.Nodes = append(c.Nodes, start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000",
			"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"))
		addrs[i] = c.Nodes[i].Addr
	}
	out, err := exec.Command("redis-cli", append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, lastLines(string(out), 10))
	}
	c.waitOK(20 * time.Second)
	return c
}

// waitOK waits until every node reports cluster_state:ok, agrees on which
// node serves every slot, and every replica's link is up.
func (c *Cluster) waitOK(timeout time.Duration) {
	c.t.Helper()
	waitFor(c.t, timeout, "cluster_state:ok on every node", func(ctx context.Context) (bool, string) {
		var first string
		for _, node := range c.Nodes {
			rc := redis.NewClient(&redis.Options{Addr: node.Addr, MaxRetries: -1})
			info, err := rc.ClusterInfo(ctx).Result()
			slots, _ := c.slotMap(ctx, rc)
			nodes, _ := rc.ClusterNodes(ctx).Result()
			rc.Close()
			// Each node learns the others' roles by gossip, later.
			if want := len(c.Nodes) / (1 + c.replicas) * c.replicas; strings.Count(nodes, "slave") != want {
				return false, fmt.Sprintf("%s knows %d replicas, want %d:\n%s", node.Addr, strings.Count(nodes, "slave"), want, nodes)
			}
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false, fmt.Sprintf("%s: %v %s", node.Addr, err, info)
			}
			if first == "" {
				first = slots
			} else if slots != first {
				return false, node.Addr + " disagrees on the slots: " + slots + " vs " + first
			}
			repl := infoOf(ctx, node.Addr, "replication")
			if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") ||
				strings.Contains(repl, "role:master") && strings.Count(repl, "state=online") != c.replicas {
				return false, node.Addr + ": " + repl
			}
		}
		return true, ""
	})
}

// slotMap is a node's view of the slots: "start-end=addr ..." in order.
func (c *Cluster) slotMap(ctx context.Context, rc *redis.Client) (string, error) {
	slots, err := rc.ClusterSlots(ctx).Result()
	if err != nil {
		return "", err
	}
	parts := make([]string, len(slots))
	for i, s := range slots {
		parts[i] = fmt.Sprintf("%d-%d=%s", s.Start, s.End, s.Nodes[0].Addr)
	}
	sort.Strings(parts)
	return strings.Join(parts, " "), nil
}

// node is the Server at addr.
func (c *Cluster) node(addr string) *Server {
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	c.t.Fatalf("redistest: no cluster node at %s", addr)
	return nil
}

// clusterNode is a line of CLUSTER NODES.
type clusterNode struct {
	id, addr, master string // master: the master's id, for a replica
	primary          bool
	slots            [][2]int
}

// nodes reads CLUSTER NODES from the first node.
func (c *Cluster) nodes() []clusterNode {
	c.t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: c.Nodes[0].Addr, MaxRetries: -1})
	defer rc.Close()
	text, err := rc.ClusterNodes(c.t.Context()).Result()
	if err != nil {
		c.t.Fatalf("CLUSTER NODES: %v", err)
	}
	var out []clusterNode
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		n := clusterNode{id: f[0], addr: strings.Split(f[1], "@")[0], master: f[3], primary: strings.Contains(f[2], "master")}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") { // a slot being migrated
				continue
			}
			a, b, found := strings.Cut(r, "-")
			lo, _ := strconv.Atoi(a)
			hi := lo
			if found {
				hi, _ = strconv.Atoi(b)
			}
			n.slots = append(n.slots, [2]int{lo, hi})
		}
		out = append(out, n)
	}
	return out
}

// Slot is the hash slot of key.
func (c *Cluster) Slot(key string) int {
	c.t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: c.Nodes[0].Addr, MaxRetries: -1})
	defer rc.Close()
	slot, err := rc.ClusterKeySlot(c.t.Context(), key).Result()
	if err != nil {
		c.t.Fatalf("CLUSTER KEYSLOT: %v", err)
	}
	return int(slot)
}

// Primary is the master serving slot.
func (c *Cluster) Primary(slot int) *Server {
	c.t.Helper()
	for _, n := range c.nodes() {
		for _, r := range n.slots {
			if n.primary && slot >= r[0] && slot <= r[1] {
				return c.node(n.addr)
			}
		}
	}
	c.t.Fatalf("redistest: no master serves slot %d", slot)
	return nil
}

// Failover runs CLUSTER FAILOVER (coordinated: the master stops writes
// until the replica has caught up) on a replica of the master serving
// slot, and returns the replica, once every node reports it serving slot
// and the old master replicates it.
func (c *Cluster) Failover(slot int) *Server {
	c.t.Helper()
	old := c.Primary(slot)
	var oldID string
	nodes := c.nodes()
	for _, n := range nodes {
		if n.addr == old.Addr {
			oldID = n.id
		}
	}
	var replica *Server
	for _, n := range nodes {
		if n.master == oldID {
			replica = c.node(n.addr)
			break
		}
	}
	if replica == nil {
		c.t.Fatalf("redistest: master %s of slot %d has no replica (StartClusterReplicas): %+v", old.Addr, slot, nodes)
	}
	rc := redis.NewClient(&redis.Options{Addr: replica.Addr, MaxRetries: -1})
	defer rc.Close()
	if err := rc.ClusterFailover(c.t.Context()).Err(); err != nil {
		c.t.Fatalf("CLUSTER FAILOVER on %s: %v", replica.Addr, err)
	}
	waitFor(c.t, 20*time.Second, "the failover of slot "+strconv.Itoa(slot)+" to "+replica.Addr, func(ctx context.Context) (bool, string) {
		info := infoOf(ctx, replica.Addr, "replication")
		return strings.Contains(info, "role:master"), info
	})
	c.waitOK(20 * time.Second)
	if got := c.Primary(slot); got != replica {
		c.t.Fatalf("redistest: slot %d is served by %s after the failover to %s", slot, got.Addr, replica.Addr)
	}
	return replica
}

// MoveSlot migrates slot, keys and all, to the master to (CLUSTER SETSLOT
// IMPORTING and MIGRATING, MIGRATE of its keys, then SETSLOT NODE on every
// master), as redis-cli --cluster reshard does, and returns once every
// node agrees.
func (c *Cluster) MoveSlot(slot int, to *Server) {
	c.t.Helper()
	ctx := c.t.Context()
	from := c.Primary(slot)
	ids := map[string]string{}
	var masters []string
	for _, n := range c.nodes() {
		ids[n.addr] = n.id
		if n.primary {
			masters = append(masters, n.addr)
		}
	}
	src := redis.NewClient(&redis.Options{Addr: from.Addr, MaxRetries: -1})
	defer src.Close()
	dst := redis.NewClient(&redis.Options{Addr: to.Addr, MaxRetries: -1})
	defer dst.Close()
	must := func(what string, err error) {
		if err != nil {
			c.t.Fatalf("moving slot %d from %s to %s: %s: %v", slot, from.Addr, to.Addr, what, err)
		}
	}
	must("IMPORTING", dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[from.Addr]).Err())
	must("MIGRATING", src.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[to.Addr]).Err())
	host, port, _ := net.SplitHostPort(to.Addr)
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, slot, 100).Result()
		must("GETKEYSINSLOT", err)
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		must("MIGRATE", src.Do(ctx, args...).Err())
	}
	must("SETSLOT NODE on the target", dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", ids[to.Addr]).Err())
	must("SETSLOT NODE on the source", src.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", ids[to.Addr]).Err())
	for _, addr := range masters {
		if addr == from.Addr || addr == to.Addr {
			continue
		}
		rc := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
		err := rc.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", ids[to.Addr]).Err()
		rc.Close()
		must("SETSLOT NODE on "+addr, err)
	}
	c.waitOK(20 * time.Second)
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

// IsPrimary reports whether n is a master of the Cluster.
func (c *Cluster) IsPrimary(n *Server) bool {
	c.t.Helper()
	for _, cn := range c.nodes() {
		if cn.addr == n.Addr {
			return cn.primary
		}
	}
	return false
}
