package accesslog_test

import (
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tollgate-dev/tollgate/authz/accesslog"
)

// ExampleParse reads the reservation ext_authz named in an access log
// entry: the upstream answered 503, so a "success" charge is released.
func ExampleParse() {
	md, _ := structpb.NewStruct(map[string]any{
		"tollgate": map[string]any{"account": "acme", "reservation": "0f9c5e4e-7d1b-4c1e-9a57-3c2d8e1b6a40", "settle": "success"},
	})
	e := &accesslogv3.HTTPAccessLogEntry{
		CommonProperties: &accesslogv3.AccessLogCommon{
			UpstreamRequestAttemptCount: 1,
			Metadata:                    &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.filters.http.ext_authz": md}},
		},
		Response: &accesslogv3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(503)},
	}
	r, found, ok := accesslog.Parse(e)
	fmt.Println(found, ok, r.Account, r.Mode, r.Capture)
	// Output: true true acme success false
}
