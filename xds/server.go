package xds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/tollgate-dev/tollgate/internal/reload"
)

// DefaultFleet names the snapshot served to nodes whose cluster has no
// routes file of its own.
const DefaultFleet = ""

// Options configure a Server.
type Options struct {
	// Files maps an Envoy node's cluster (its fleet) to a routes file;
	// DefaultFleet ("") is served to every other node.
	Files map[string]string
	// Watch pushes valid changes of the files, while the Reloader runs.
	Watch bool
	// Logger receives reload results and NACKs; slog.Default() when nil.
	Logger *slog.Logger
	// Registerer receives tollgate_reloads_total{component="xds"} and
	// tollgate_xds_nacks_total; none when nil.
	Registerer prometheus.Registerer
}

// Server is Tollgate's xDS control plane: ADS, state of the world and
// delta, on go-control-plane. Each fleet's routes file becomes one
// snapshot, validated and Consistent() before it is published.
type Server struct {
	opts  Options
	log   *slog.Logger
	cache cache.SnapshotCache
	xds   serverv3.Server
	nacks prometheus.Counter
	r     *reload.Reloader
}

// Detail is what /status shows of the snapshots in force.
type Detail struct {
	Fleets map[string]Fleet `json:"fleets"`
}

// Fleet is one fleet's routes file and snapshot version.
type Fleet struct {
	File    string `json:"file"`
	Version string `json:"version"`
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
// file is invalid (there is no last good snapshot yet). With Options.Watch
// the files are watched from before they are read; the Reloader's Run
// reloads them.
func New(ctx context.Context, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{
		opts: opts,
		log:  opts.Logger,
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_xds_nacks_total",
			Help: "xDS responses that an Envoy or gRPC client rejected (NACK).",
		}),
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(s.nacks); err != nil {
			return nil, err
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
	files := slices.Sorted(maps.Values(opts.Files))
	r, err := reload.New(ctx, reload.Options{
		Component:  "xds",
		Paths:      slices.Compact(files),
		Build:      s.build,
		Watch:      opts.Watch,
		Logger:     opts.Logger,
		Registerer: opts.Registerer,
	})
	if err != nil {
		return nil, err
	}
	s.r = r
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

// Reloader reloads the routes files (Reload, or Run when watching) and
// reports their status. A reload builds every fleet's snapshot and
// publishes them only if all are valid.
func (s *Server) Reloader() *reload.Reloader { return s.r }

// build builds every fleet's snapshot; publishing sets them in the cache.
// The revision is a hash of the fleets' content-hash versions.
func (s *Server) build(context.Context) (*reload.Built, error) {
	snaps := map[string]*cache.Snapshot{}
	detail := Detail{Fleets: map[string]Fleet{}}
	h := sha256.New()
	for _, fleet := range slices.Sorted(maps.Keys(s.opts.Files)) {
		snap, err := BuildFile(s.opts.Files[fleet])
		if err != nil {
			return nil, err
		}
		snaps[fleet] = snap
		v := snap.GetVersion(resource.ListenerType)
		detail.Fleets[fleet] = Fleet{File: s.opts.Files[fleet], Version: v}
		fmt.Fprintf(h, "%s\x00%s\x00", fleet, v)
	}
	files := slices.Compact(slices.Sorted(maps.Values(s.opts.Files)))
	return &reload.Built{
		Revision: hex.EncodeToString(h.Sum(nil))[:16],
		Files:    files,
		Detail:   detail,
		Publish: func(ctx context.Context) error {
			for _, fleet := range slices.Sorted(maps.Keys(snaps)) {
				if err := s.cache.SetSnapshot(ctx, fleet, snaps[fleet]); err != nil {
					return fmt.Errorf("xds: publish %q: %w", fleet, err)
				}
			}
			return nil
		},
	}, nil
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
