package authz

import (
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
)

// withHeaderMap returns req with attributes.request.http.headers filled
// from header_map when Envoy sent only header_map (ext_authz with
// encode_raw_headers: true), so policies, body parsing, request ids,
// decision logs and the removal of forged x-tollgate-* headers see the
// same headers either way. Otherwise it returns req itself. The copy
// (one per request, only in that mode) leaves the caller's request as it
// was.
func withHeaderMap(req *authv3.CheckRequest) *authv3.CheckRequest {
	h := req.GetAttributes().GetRequest().GetHttp()
	if len(h.GetHeaders()) != 0 || len(h.GetHeaderMap().GetHeaders()) == 0 {
		return req
	}
	out := proto.Clone(req).(*authv3.CheckRequest)
	out.Attributes.Request.Http.Headers = headerMap(h)
	return out
}

// fillHeaderMap is withHeaderMap in place, for Check: gRPC decodes a
// request per call, so there is no caller's copy to keep (and no copy of
// a buffered body per request).
func fillHeaderMap(req *authv3.CheckRequest) {
	h := req.GetAttributes().GetRequest().GetHttp()
	if len(h.GetHeaders()) == 0 && len(h.GetHeaderMap().GetHeaders()) != 0 {
		h.Headers = headerMap(h)
	}
}

// headerMap reads header_map as Envoy writes headers: lower-case names,
// the values of a repeated name joined with "," in the order sent. Envoy
// fills raw_value (bytes) in header_map; value is read when raw_value is
// empty.
func headerMap(h *authv3.AttributeContext_HttpRequest) map[string]string {
	hvs := h.GetHeaderMap().GetHeaders()
	out := make(map[string]string, len(hvs))
	for _, hv := range hvs {
		k := strings.ToLower(hv.GetKey())
		v := hv.GetValue()
		if raw := hv.GetRawValue(); len(raw) != 0 {
			v = string(raw)
		}
		if prev, ok := out[k]; ok {
			v = prev + "," + v
		}
		out[k] = v
	}
	return out
}
