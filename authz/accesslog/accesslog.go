// Package accesslog is Tollgate's Envoy access log service
// (envoy.service.accesslog.v3.AccessLogService): it completes what
// ext_authz reserved. Envoy logs each request when it ends; an entry that
// carries a reservation in ext_authz's dynamic metadata (internal/wire)
// settles it: captured when Envoy sent the request upstream (and, for
// "success", the upstream answered below 500), released otherwise.
//
// Entries without a reservation are ignored; a malformed one is skipped
// and counted. A reservation whose entry never arrives (Envoy's logger
// drops entries under pressure) is released by the engine's sweeper after
// the settle timeout: the customer is not charged.
package accesslog

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/internal/wire"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

// Settler captures or releases a reservation; *ratelimit.Engine
// implements it.
type Settler interface {
	Settle(ctx context.Context, account, reservation string, capture bool) (ratelimit.SettleResult, error)
}

// Options configure a Server.
type Options struct {
	Logger *slog.Logger
	// Registerer receives the access log metrics; none when nil.
	Registerer prometheus.Registerer
	// MaxEntries bounds the entries settled from one message (default
	// DefaultMaxEntries); the rest are skipped and counted.
	MaxEntries int
	// Timeout bounds each settle (default DefaultTimeout).
	Timeout time.Duration
	// MessageTimeout bounds the settles of one message together (default
	// DefaultMessageTimeout): a slow store cannot hold a stream for
	// MaxEntries × Timeout. A settle cut short is retried by the engine.
	MessageTimeout time.Duration
}

// Defaults of Options.
const (
	// DefaultMaxEntries is far above what Envoy batches in one message
	// (its buffer_size_bytes, 16 KiB by default).
	DefaultMaxEntries     = 1000
	DefaultTimeout        = time.Second
	DefaultMessageTimeout = 5 * time.Second
)

// Server implements envoy.service.accesslog.v3.AccessLogService.
type Server struct {
	alsv3.UnimplementedAccessLogServiceServer
	settler Settler
	opts    Options
	log     *slog.Logger
	entries *prometheus.CounterVec
}

var _ alsv3.AccessLogServiceServer = (*Server)(nil)

// New returns a Server that settles through settler.
func New(settler Settler, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MessageTimeout <= 0 {
		opts.MessageTimeout = DefaultMessageTimeout
	}
	s := &Server{
		settler: settler,
		opts:    opts,
		log:     opts.Logger,
		entries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_accesslog_entries_total",
			Help: "HTTP access log entries received, by result: settled (its reservation was settled; see tollgate_settle_total), no_reservation, malformed (skipped), over_limit (past the entries settled per message; skipped), error (the store failed; the settle is retried in the background).",
		}, []string{"result"}),
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(s.entries); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// StreamAccessLogs reads Envoy's access log stream, settling each
// reservation it names, until Envoy closes it.
func (s *Server) StreamAccessLogs(stream alsv3.AccessLogService_StreamAccessLogsServer) error {
	// Settles outlive a stream Envoy closes: a received entry is settled.
	ctx := context.WithoutCancel(stream.Context())
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&alsv3.StreamAccessLogsResponse{})
		}
		if err != nil {
			return err
		}
		s.Handle(ctx, msg)
	}
}

// Handle settles the reservations of one message's HTTP entries (TCP
// entries carry none), at most MaxEntries of them.
func (s *Server) Handle(ctx context.Context, msg *alsv3.StreamAccessLogsMessage) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.MessageTimeout)
	defer cancel()
	for i, e := range msg.GetHttpLogs().GetLogEntry() {
		if i >= s.opts.MaxEntries {
			s.entries.WithLabelValues("over_limit").Inc()
			continue
		}
		s.entries.WithLabelValues(s.entry(ctx, e)).Inc()
	}
}

// entry settles one entry's reservation and returns its result label.
func (s *Server) entry(ctx context.Context, e *accesslogv3.HTTPAccessLogEntry) string {
	r, found, ok := Parse(e)
	switch {
	case !found:
		return "no_reservation"
	case !ok:
		if s.log.Enabled(ctx, slog.LevelDebug) {
			s.log.Debug("skipped an access log entry with malformed tollgate metadata", "account", r.Account, "reservation", r.Reservation, "settle", string(r.Mode))
		}
		return "malformed"
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	if _, err := s.settler.Settle(ctx, r.Account, r.Reservation, r.Capture); err != nil {
		// The engine retries it until the store acknowledges it (before
		// the reservation expires, normally).
		return "error"
	}
	return "settled"
}

// Settle is what one access log entry says about its reservation.
type Settle struct {
	Account, Reservation string
	Mode                 ratelimit.Settle
	// Capture: Envoy sent the request upstream (at least one attempt)
	// and, for SettleSuccess, the upstream answered below 500.
	Capture bool
}

// Parse reads the reservation of an entry: found reports that the entry
// carries Tollgate's metadata, ok that it is well formed.
func Parse(e *accesslogv3.HTTPAccessLogEntry) (r Settle, found, ok bool) {
	cp := e.GetCommonProperties()
	v, found := cp.GetMetadata().GetFilterMetadata()[wire.MetadataNamespace].GetFields()[wire.MetadataKey]
	if !found {
		return r, false, false
	}
	f := v.GetStructValue().GetFields()
	r.Account = f[wire.MetadataAccount].GetStringValue()
	r.Reservation = f[wire.MetadataReservation].GetStringValue()
	r.Mode = ratelimit.Settle(f[wire.MetadataSettle].GetStringValue())
	if r.Account == "" || r.Reservation == "" || len(r.Reservation) > ratelimit.MaxReservationID ||
		(r.Mode != ratelimit.SettleDelivery && r.Mode != ratelimit.SettleSuccess) {
		return r, true, false
	}
	// Not merely the absence of the UAEX flag: a request Envoy answered
	// itself (a local reply, a route with no healthy upstream, a filter
	// after ext_authz that denied) made no upstream attempt.
	r.Capture = cp.GetUpstreamRequestAttemptCount() > 0
	if r.Mode == ratelimit.SettleSuccess {
		code := e.GetResponse().GetResponseCode().GetValue()
		r.Capture = r.Capture && code > 0 && code < 500
	}
	return r, true, true
}
