package xds

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/tollgate-dev/tollgate/internal/filewatch"
)

// DefaultFleet names the snapshot served to nodes whose cluster has no
// routes file of its own.
const DefaultFleet = ""

// Options configure a Server.
type Options struct {
	// Files maps an Envoy node's cluster (its fleet) to a routes file;
	// DefaultFleet ("") is served to every other node.
	Files      map[string]string
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Server is Tollgate's xDS control plane: ADS, state of the world and
// delta, on go-control-plane. Each fleet's routes file becomes one
// snapshot, validated and Consistent() before it is published.
type Server struct {
	opts    Options
	log     *slog.Logger
	cache   cache.SnapshotCache
	xds     serverv3.Server
	reloads *prometheus.CounterVec
	nacks   prometheus.Counter

	mu     sync.Mutex
	status Status
}

// Status is shown on the admin /status endpoint.
type Status struct {
	Fleets    map[string]FleetStatus `json:"fleets"`
	Reloads   int                    `json:"reloads"`
	Failures  int                    `json:"failures"`
	LastError string                 `json:"last_error,omitempty"`
	FailedAt  time.Time              `json:"failed_at,omitzero"`
}

// FleetStatus is one fleet's snapshot.
type FleetStatus struct {
	File     string    `json:"file"`
	Version  string    `json:"version"`
	LoadedAt time.Time `json:"loaded_at"`
}

type fleetHash struct{ s *Server }

// ID puts a node in its cluster's fleet when that fleet has a file, else
// in the default fleet.
func (h fleetHash) ID(node *corev3.Node) string {
	if c := node.GetCluster(); c != DefaultFleet {
		if _, ok := h.s.opts.Files[c]; ok {
			return c
		}
	}
	return DefaultFleet
}

// New loads every routes file and publishes the snapshots; it fails if any
// file is invalid (there is no last good snapshot yet).
func New(ctx context.Context, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{
		opts:   opts,
		log:    opts.Logger,
		status: Status{Fleets: map[string]FleetStatus{}},
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_xds_reloads_total",
			Help: "Routes file loads by result (success or failure). A failure keeps the last good snapshot.",
		}, []string{"result"}),
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_xds_nacks_total",
			Help: "xDS responses that an Envoy or gRPC client rejected (NACK).",
		}),
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{s.reloads, s.nacks} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	// ads=false: go-control-plane's ADS mode answers a named subscription
	// only if it names every resource of its type in the snapshot, which
	// would starve proxyless gRPC clients (they ask for exactly the
	// clusters they use). Responses still flow over the ADS stream.
	s.cache = cache.NewSnapshotCache(false, fleetHash{s}, nil)
	s.xds = serverv3.NewServer(ctx, s.cache, serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, req *discoverygrpc.DiscoveryRequest) error {
			if d := req.GetErrorDetail(); d != nil {
				s.nack(req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), d.GetMessage())
			}
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, req *discoverygrpc.DeltaDiscoveryRequest) error {
			if d := req.GetErrorDetail(); d != nil {
				s.nack(req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), d.GetMessage())
			}
			return nil
		},
	})
	if err := s.Reload(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) nack(node *corev3.Node, typeURL, nonce, msg string) {
	s.nacks.Inc()
	s.log.Warn("xDS update rejected (NACK)", "node", node.GetId(), "cluster", node.GetCluster(), "type", typeURL, "nonce", nonce, "error", msg)
}

// Register adds the ADS service (SotW and delta) to g.
func (s *Server) Register(g *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
}

// Reload builds every fleet's snapshot and publishes them only if all are
// valid; otherwise the last good snapshots stay and the error is recorded.
func (s *Server) Reload(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	snaps := map[string]*cache.Snapshot{}
	for _, fleet := range slices.Sorted(maps.Keys(s.opts.Files)) {
		snap, err := BuildFile(s.opts.Files[fleet])
		if err != nil {
			s.reloads.WithLabelValues("failure").Inc()
			s.status.Failures++
			s.status.LastError = err.Error()
			s.status.FailedAt = time.Now()
			return err
		}
		snaps[fleet] = snap
	}
	for fleet, snap := range snaps {
		if err := s.cache.SetSnapshot(ctx, fleet, snap); err != nil {
			return fmt.Errorf("xds: publish %q: %w", fleet, err)
		}
		s.status.Fleets[fleet] = FleetStatus{File: s.opts.Files[fleet], Version: snap.GetVersion(resource.ListenerType), LoadedAt: time.Now()}
	}
	s.reloads.WithLabelValues("success").Inc()
	s.status.Reloads++
	s.status.LastError = ""
	return nil
}

// BuildFile reads, validates and renders a routes file into a consistent
// snapshot.
func BuildFile(path string) (*cache.Snapshot, error) {
	f, err := Load(path)
	if err != nil {
		return nil, err
	}
	r, err := Build(f, "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r.Snapshot()
}

// Status returns a copy of the current status.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.Fleets = maps.Clone(st.Fleets)
	return st
}

// Watch sets up watches on the routes files (before it returns); the
// returned function, run by the watcher, reloads on every change.
func (s *Server) Watch() (*filewatch.Watcher, func(context.Context), error) {
	w, err := filewatch.New(slices.Collect(maps.Values(s.opts.Files)), s.log)
	if err != nil {
		return nil, nil, err
	}
	return w, func(ctx context.Context) {
		if err := s.Reload(ctx); err != nil {
			s.log.Error("routes reload failed; Envoys keep the last good configuration", "error", err)
			return
		}
		s.log.Info("routes reloaded", "fleets", s.Status().Fleets)
	}, nil
}
