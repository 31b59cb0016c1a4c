package redistest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// MasterName is the name the Sentinels of StartSentinel monitor.
const MasterName = "mymaster"

// Sentinel is a Redis primary, its replicas and three Sentinels watching
// them, on loopback ports, owned by one test.
type Sentinel struct {
	t testing.TB
	// Nodes are the data nodes: Nodes[0] is the first primary, the rest
	// its replicas (a failover changes which is primary: see Primary).
	Nodes     []*Server
	Sentinels []*Server
}

// Timeouts of the Sentinels: a primary is down after downAfter without an
// answer; a failover that stalls is retried after failoverTimeout.
const (
	downAfter       = 1000 // ms
	failoverTimeout = 5000 // ms
)

// StartSentinel starts a primary with replicas (1 or 2) replicating it and
// three Sentinels monitoring it with quorum 2, and stops them all when the
// test ends. It returns once every replica is in sync and every Sentinel
// knows the replicas and the other two Sentinels.
// args are more redis-server arguments for the data nodes (such as
// "--min-replicas-to-write", "1").
func StartSentinel(t testing.TB, replicas int, args ...string) *Sentinel {
	t.Helper()
	if replicas < 1 || replicas > 2 {
		t.Fatalf("redistest.StartSentinel: %d replicas (allowed: 1 or 2)", replicas)
	}
	// A replica's first sync goes over the socket at once, not after the
	// default 5 s wait for more replicas.
	repl := append([]string{"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"}, args...)
	g := &Sentinel{t: t}
	primary := start(t, repl...)
	g.Nodes = append(g.Nodes, primary)
	host, port, _ := net.SplitHostPort(primary.Addr)
	for range replicas {
		g.Nodes = append(g.Nodes, start(t, append(repl, "--replicaof", host, port)...))
	}
	g.waitSynced(primary, replicas)
	conf := func(string) string {
		return fmt.Sprintf("sentinel monitor %s %s %s 2\n"+
			"sentinel down-after-milliseconds %s %d\n"+
			"sentinel failover-timeout %s %d\n",
			MasterName, host, port, MasterName, downAfter, MasterName, failoverTimeout)
	}
	for range 3 {
		g.Sentinels = append(g.Sentinels, startConf(t, conf))
	}
	for _, s := range g.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
		waitFor(t, 10*time.Second, "sentinel "+s.Addr+" knows the group", func(ctx context.Context) (bool, string) {
			m, err := sc.Master(ctx, MasterName).Result()
			if err != nil {
				return false, err.Error()
			}
			ok := m["flags"] == "master" && m["num-slaves"] == strconv.Itoa(replicas) && m["num-other-sentinels"] == "2"
			return ok, fmt.Sprintf("flags %s, %s replicas, %s other sentinels", m["flags"], m["num-slaves"], m["num-other-sentinels"])
		})
		sc.Close()
	}
	return g
}

// waitSynced waits until primary has n replicas online and each says its
// link is up.
func (g *Sentinel) waitSynced(primary *Server, n int) {
	g.t.Helper()
	waitFor(g.t, 10*time.Second, "replicas in sync with "+primary.Addr, func(ctx context.Context) (bool, string) {
		info := infoOf(ctx, primary.Addr, "replication")
		if !strings.Contains(info, "role:master") || strings.Count(info, "state=online") != n {
			return false, info
		}
		for _, r := range g.Nodes {
			if r == primary {
				continue
			}
			if ri := infoOf(ctx, r.Addr, "replication"); !strings.Contains(ri, "master_link_status:up") ||
				!strings.Contains(ri, "master_port:"+portOf(primary.Addr)+"\r") {
				return false, r.Addr + ": " + ri
			}
		}
		return true, ""
	})
}

// Addrs are the Sentinels' addresses (store.redis.addrs with master_name).
func (g *Sentinel) Addrs() []string {
	addrs := make([]string, len(g.Sentinels))
	for i, s := range g.Sentinels {
		addrs[i] = s.Addr
	}
	return addrs
}

// Client returns a new client that finds the primary through the
// Sentinels and follows failovers, closed when the test ends.
func (g *Sentinel) Client() redis.UniversalClient {
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: MasterName, SentinelAddrs: g.Addrs(), MaxRetries: -1, DialTimeout: time.Second})
	g.t.Cleanup(func() { c.Close() })
	return c
}

// Primary is the data node every Sentinel names as the primary and that
// says it is one.
func (g *Sentinel) Primary() *Server {
	g.t.Helper()
	var primary *Server
	waitFor(g.t, 10*time.Second, "sentinels agree on the primary", func(ctx context.Context) (bool, string) {
		addr, detail := g.agreed(ctx)
		if addr == "" {
			return false, detail
		}
		for _, n := range g.Nodes {
			if n.Addr == addr && strings.Contains(infoOf(ctx, addr, "replication"), "role:master") {
				primary = n
				return true, ""
			}
		}
		return false, addr + " is not (yet) a primary"
	})
	return primary
}

// agreed returns the primary's address when every Sentinel names the
// same one ("" and what they said otherwise).
func (g *Sentinel) agreed(ctx context.Context) (string, string) {
	var said []string
	for _, s := range g.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
		a, err := sc.GetMasterAddrByName(ctx, MasterName).Result()
		sc.Close()
		if err != nil || len(a) != 2 {
			said = append(said, fmt.Sprint(a, err))
			continue
		}
		said = append(said, net.JoinHostPort(a[0], a[1]))
	}
	for _, a := range said[1:] {
		if a != said[0] {
			return "", strings.Join(said, ", ")
		}
	}
	if _, _, err := net.SplitHostPort(said[0]); err != nil {
		return "", said[0]
	}
	return said[0], ""
}

// Failover runs SENTINEL FAILOVER and returns the new primary once every
// Sentinel names it, it says it is a primary, and every other data node
// replicates it with its link up.
func (g *Sentinel) Failover() *Server {
	g.t.Helper()
	old := g.Primary()
	sc := redis.NewSentinelClient(&redis.Options{Addr: g.Sentinels[0].Addr})
	defer sc.Close()
	if err := sc.Failover(g.t.Context(), MasterName).Err(); err != nil {
		g.t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	var primary *Server
	waitFor(g.t, 20*time.Second, "failover away from "+old.Addr, func(ctx context.Context) (bool, string) {
		addr, detail := g.agreed(ctx)
		if addr == "" || addr == old.Addr {
			return false, "sentinels say " + addr + detail
		}
		for _, n := range g.Nodes {
			if n.Addr == addr {
				primary = n
			}
		}
		return primary != nil, "unknown primary " + addr
	})
	// The old primary learns it is a replica from a Sentinel some 8 to 20
	// s later (it waits to see it report the wrong role for a while); tell
	// it now, as the Sentinel would.
	c := redis.NewClient(&redis.Options{Addr: old.Addr, MaxRetries: -1})
	defer c.Close()
	host, port, _ := net.SplitHostPort(primary.Addr)
	if err := c.SlaveOf(g.t.Context(), host, port).Err(); err != nil {
		g.t.Fatalf("REPLICAOF on the old primary %s: %v", old.Addr, err)
	}
	g.waitSynced(primary, len(g.Nodes)-1)
	return primary
}

// waitFor polls cond every 20 ms until it holds, failing the test after
// timeout with what cond said last.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		ok, detail := cond(ctx)
		cancel()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: waited %v for %s: %s", timeout, what, detail)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// infoOf is a section of INFO from addr ("" when it does not answer).
func infoOf(ctx context.Context, addr, section string) string {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	info, _ := c.Info(ctx, section).Result()
	return info
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// StartReplica starts a replica of primary (sent at once, without the
// wait for more replicas) and returns once it is in sync.
func StartReplica(t testing.TB, primary *Server) *Server {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: primary.Addr, MaxRetries: -1})
	defer c.Close()
	if err := c.ConfigSet(t.Context(), "repl-diskless-sync-delay", "0").Err(); err != nil {
		t.Fatalf("CONFIG SET on %s: %v", primary.Addr, err)
	}
	host, port, _ := net.SplitHostPort(primary.Addr)
	r := start(t, "--replicaof", host, port)
	waitFor(t, 10*time.Second, "replica "+r.Addr+" in sync", func(ctx context.Context) (bool, string) {
		info := infoOf(ctx, r.Addr, "replication")
		return strings.Contains(info, "master_link_status:up") && strings.Contains(info, "master_sync_in_progress:0"), info
	})
	return r
}

// KillPrimary kills the primary (SIGKILL, as a crash; it stays down) and
// returns the replica the Sentinels promote, once every Sentinel names it
// and it says it is a primary.
func (g *Sentinel) KillPrimary() *Server {
	g.t.Helper()
	old := g.Primary()
	old.Stop()
	var primary *Server
	waitFor(g.t, 20*time.Second, "the Sentinels to replace "+old.Addr, func(ctx context.Context) (bool, string) {
		addr, detail := g.agreed(ctx)
		if addr == "" || addr == old.Addr {
			return false, "sentinels say " + addr + detail
		}
		if !strings.Contains(infoOf(ctx, addr, "replication"), "role:master") {
			return false, addr + " is not a primary yet"
		}
		for _, n := range g.Nodes {
			if n.Addr == addr {
				primary = n
			}
		}
		return primary != nil, "unknown primary " + addr
	})
	return primary
}
