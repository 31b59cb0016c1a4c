package accesslog_test

import (
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tollgate-dev/tollgate/authz/accesslog"
	"github.com/tollgate-dev/tollgate/internal/wire"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

// FuzzParse: any access log entry Envoy (or anyone reaching the listener)
// sends is parsed without a panic; a well-formed one names an account, a
// reservation of at most MaxReservationID bytes and a settle mode that
// reserves, and captures only after an upstream attempt.
func FuzzParse(f *testing.F) {
	md := &structpb.Struct{Fields: map[string]*structpb.Value{wire.MetadataKey: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
		wire.MetadataAccount: structpb.NewStringValue("acme"), wire.MetadataReservation: structpb.NewStringValue("r-1"), wire.MetadataSettle: structpb.NewStringValue("success"),
	}})}}
	for _, attempts := range []uint32{0, 1} {
		seed, err := proto.Marshal(entry(md, attempts, 503))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(seed)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		e := &accesslogv3.HTTPAccessLogEntry{}
		if proto.Unmarshal(b, e) != nil {
			return
		}
		r, found, ok := accesslog.Parse(e)
		if !ok {
			return
		}
		if !found || r.Account == "" || r.Reservation == "" || len(r.Reservation) > ratelimit.MaxReservationID ||
			(r.Mode != ratelimit.SettleDelivery && r.Mode != ratelimit.SettleSuccess) {
			t.Errorf("Parse accepted %+v (found %v)", r, found)
		}
		if r.Capture && e.GetCommonProperties().GetUpstreamRequestAttemptCount() == 0 {
			t.Errorf("captured without an upstream attempt: %v", e)
		}
	})
}
