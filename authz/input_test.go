package authz

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/envoyproxy/protoc-gen-validate/validate"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ---------------------------------------------------------------------------
// Reference implementation: the slow opa-envoy-plugin way.
// ---------------------------------------------------------------------------

// opaEnvoyResult is what opa-envoy-plugin's RequestToInput computes for a
// CheckRequest. Where opa-envoy-plugin would fail the whole request, the
// corresponding error is set and doc follows Tollgate's documented
// deviations instead: parsed_path/parsed_query absent when the path does not
// parse; parsed_body absent and truncated_body false when the body does not
// parse; headers read from header_map when Envoy sent only header_map
// (encode_raw_headers: true).
type opaEnvoyResult struct {
	doc        map[string]any
	marshalErr error // protojson.Marshal (or the JSON decode) failed: no doc
	pathErr    error
	bodyErr    error
}

func opaEnvoyInput(req *authv3.CheckRequest) opaEnvoyResult {
	var r opaEnvoyResult
	if h := req.GetAttributes().GetRequest().GetHttp(); len(h.GetHeaders()) == 0 && len(h.GetHeaderMap().GetHeaders()) > 0 {
		req = proto.Clone(req).(*authv3.CheckRequest)
		headers := map[string][]string{}
		for _, hv := range h.GetHeaderMap().GetHeaders() {
			v := hv.GetValue()
			if len(hv.GetRawValue()) != 0 {
				v = string(hv.GetRawValue())
			}
			headers[strings.ToLower(hv.GetKey())] = append(headers[strings.ToLower(hv.GetKey())], v)
		}
		req.Attributes.Request.Http.Headers = map[string]string{}
		for k, vs := range headers {
			req.Attributes.Request.Http.Headers[k] = strings.Join(vs, ",")
		}
	}
	bs, err := protojson.Marshal(req)
	if err != nil {
		r.marshalErr = err
		return r
	}
	var doc map[string]any
	if err := util.UnmarshalJSON(bs, &doc); err != nil {
		r.marshalErr = err
		return r
	}
	doc["version"] = map[string]any{"ext_authz": "v3", "encoding": "protojson"}

	h := req.GetAttributes().GetRequest().GetHttp()
	path, query, err := refParsePath(h.GetPath())
	if err != nil {
		r.pathErr = err
	} else {
		doc["parsed_path"] = path
		doc["parsed_query"] = query
	}

	body, truncated, err := refParseBody(h.GetHeaders(), h.GetBody(), h.GetRawBody())
	if err != nil {
		r.bodyErr = err
		doc["truncated_body"] = false
	} else {
		doc["parsed_body"] = body
		doc["truncated_body"] = truncated
	}
	r.doc = doc
	return r
}

// refParsePath is opa-envoy-plugin's getParsedPathAndQuery.
func refParsePath(path string) ([]any, map[string]any, error) {
	u, err := url.Parse(path)
	if err != nil {
		return nil, nil, err
	}
	segs := strings.Split(strings.TrimLeft(u.Path, "/"), "/")
	p := make([]any, len(segs))
	for i, s := range segs {
		p[i] = s
	}
	q := map[string]any{}
	for k, vs := range u.Query() {
		arr := make([]any, len(vs))
		for i, v := range vs {
			arr[i] = v
		}
		q[k] = arr
	}
	return p, q, nil
}

// refParseBody is opa-envoy-plugin's getParsedBody for the JSON and form
// content types (everything else gives null).
func refParseBody(headers map[string]string, body string, raw []byte) (any, bool, error) {
	ct, ok := headers["content-type"]
	if !ok {
		return nil, false, nil
	}
	isJSON := strings.Contains(ct, "application/json")
	if !isJSON && !strings.Contains(ct, "application/x-www-form-urlencoded") {
		return nil, false, nil
	}
	if body == "" {
		if len(raw) == 0 {
			return nil, false, nil
		}
		body = string(raw)
	}
	if cl, ok := headers["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, err
		}
		if n != -1 && n > int64(len(body)) {
			return nil, true, nil
		}
	}
	if isJSON {
		var x any
		if err := util.UnmarshalJSON([]byte(body), &x); err != nil {
			return nil, false, err
		}
		return x, false, nil
	}
	form, err := url.ParseQuery(body)
	if err != nil {
		return nil, false, err
	}
	out := make(map[string]any, len(form))
	for k, vs := range form {
		arr := make([]any, len(vs))
		for i, v := range vs {
			arr[i] = v
		}
		out[k] = arr
	}
	return out, false, nil
}

func (r opaEnvoyResult) value(t testing.TB) ast.Value {
	t.Helper()
	if r.marshalErr != nil {
		t.Fatalf("reference: %v", r.marshalErr)
	}
	v, err := ast.InterfaceToValue(r.doc)
	if err != nil {
		t.Fatalf("reference: InterfaceToValue: %v", err)
	}
	return v
}

// referenceInput builds the input the slow way: protojson.Marshal →
// util.UnmarshalJSON → extra keys as Go values → ast.InterfaceToValue. Parts
// opa-envoy-plugin would reject are left out as Input does (see
// opaEnvoyResult).
func referenceInput(t testing.TB, req *authv3.CheckRequest) ast.Value {
	t.Helper()
	return opaEnvoyInput(req).value(t)
}

// ---------------------------------------------------------------------------
// Comparison helpers.
// ---------------------------------------------------------------------------

// without returns a copy of the top-level object v without the given keys.
func without(v ast.Value, keys ...string) ast.Value {
	obj, ok := v.(ast.Object)
	if !ok {
		return v
	}
	out := ast.NewObject()
	obj.Foreach(func(k, val *ast.Term) {
		if s, ok := k.Value.(ast.String); ok {
			for _, drop := range keys {
				if string(s) == drop {
					return
				}
			}
		}
		out.Insert(k, val)
	})
	return out
}

// assertSameInput fails unless got and want are equal, ignoring the listed
// top-level keys: equal by ast.Compare (which compares numbers by value) and
// with every number written as protojson writes it (policies see a number's
// text through json.marshal and sprintf). On a mismatch it prints the
// differing paths and both documents.
func assertSameInput(t testing.TB, got, want ast.Value, ignore ...string) {
	t.Helper()
	if len(ignore) > 0 {
		got, want = without(got, ignore...), without(want, ignore...)
	}
	if ast.Compare(got, want) == 0 {
		var diffs []string
		numberTextDiffs("input", got, want, &diffs)
		if len(diffs) > 0 {
			t.Errorf("numbers written differently from protojson:\n  %s", strings.Join(diffs, "\n  "))
		}
		return
	}
	var diffs []string
	diffValues("input", got, want, &diffs)
	if len(diffs) > 40 {
		diffs = append(diffs[:40], fmt.Sprintf("... and %d more", len(diffs)-40))
	}
	t.Errorf("Input differs from the opa-envoy-plugin reference:\n  %s\n--- got (Input):\n%s\n--- want (reference):\n%s",
		strings.Join(diffs, "\n  "), pretty(got), pretty(want))
}

func diffValues(path string, got, want ast.Value, out *[]string) {
	if ast.Compare(got, want) == 0 {
		return
	}
	switch g := got.(type) {
	case ast.Object:
		if w, ok := want.(ast.Object); ok {
			for _, k := range g.Keys() {
				kp := path + "[" + k.String() + "]"
				if wv := w.Get(k); wv == nil {
					*out = append(*out, fmt.Sprintf("%s: unexpected, got %v", kp, g.Get(k)))
				} else {
					diffValues(kp, g.Get(k).Value, wv.Value, out)
				}
			}
			for _, k := range w.Keys() {
				if g.Get(k) == nil {
					*out = append(*out, fmt.Sprintf("%s[%v]: missing, want %v", path, k, w.Get(k)))
				}
			}
			return
		}
	case *ast.Array:
		if w, ok := want.(*ast.Array); ok && g.Len() == w.Len() {
			for i := range g.Len() {
				diffValues(fmt.Sprintf("%s[%d]", path, i), g.Elem(i).Value, w.Elem(i).Value, out)
			}
			return
		}
	}
	*out = append(*out, fmt.Sprintf("%s: got %v, want %v", path, got, want))
}

func pretty(v ast.Value) string {
	x, err := ast.JSON(v)
	if err != nil {
		return v.String()
	}
	bs, err := json.MarshalIndent(x, "", "  ")
	if err != nil {
		return v.String()
	}
	return string(bs)
}

// numberTextDiffs lists the numbers that are equal by value but written
// differently (e.g. 1.795e+09 vs 1795000000).
func numberTextDiffs(path string, got, want ast.Value, out *[]string) {
	switch g := got.(type) {
	case ast.Number:
		if w, ok := want.(ast.Number); ok && g != w {
			*out = append(*out, fmt.Sprintf("%s: got %s, want %s", path, g, w))
		}
	case ast.Object:
		if w, ok := want.(ast.Object); ok {
			g.Foreach(func(k, v *ast.Term) {
				if wv := w.Get(k); wv != nil {
					numberTextDiffs(path+"["+k.String()+"]", v.Value, wv.Value, out)
				}
			})
		}
	case *ast.Array:
		if w, ok := want.(*ast.Array); ok && g.Len() == w.Len() {
			for i := range g.Len() {
				numberTextDiffs(fmt.Sprintf("%s[%d]", path, i), g.Elem(i).Value, w.Elem(i).Value, out)
			}
		}
	}
}

func get(v ast.Value, key string) *ast.Term {
	obj, ok := v.(ast.Object)
	if !ok {
		return nil
	}
	return obj.Get(ast.StringTerm(key))
}

// ---------------------------------------------------------------------------
// Fixtures and hand-built requests.
// ---------------------------------------------------------------------------

const fixtureDir = "testdata/input"

type fixture struct {
	name string
	req  *authv3.CheckRequest
}

func loadFixtures(t testing.TB) []fixture {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(fixtureDir, "check-*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("want at least 3 fixtures in %s, found %d", fixtureDir, len(files))
	}
	sort.Strings(files)
	var out []fixture
	for _, f := range files {
		bs, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		req := &authv3.CheckRequest{}
		if err := protojson.Unmarshal(bs, req); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, fixture{strings.TrimSuffix(filepath.Base(f), ".json"), req})
	}
	return out
}

func loadFixture(t testing.TB, name string) *authv3.CheckRequest {
	t.Helper()
	for _, f := range loadFixtures(t) {
		if f.name == name {
			return f.req
		}
	}
	t.Fatalf("fixture %s not found", name)
	return nil
}

func mustStruct(t testing.TB, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// httpReq wraps an HttpRequest into a CheckRequest.
func httpReq(h *authv3.AttributeContext_HttpRequest) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: h},
	}}
}

func bodyReq(contentType, contentLength, body string, raw []byte) *authv3.CheckRequest {
	headers := map[string]string{":method": "POST", ":path": "/submit"}
	if contentType != "" {
		headers["content-type"] = contentType
	}
	if contentLength != "" {
		headers["content-length"] = contentLength
	}
	return httpReq(&authv3.AttributeContext_HttpRequest{
		Method: "POST", Path: "/submit", Headers: headers, Body: body, RawBody: raw,
	})
}

func withTime(ts *timestamppb.Timestamp) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{
			Time: ts,
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/"},
		},
	}}
}

func withMetadata(md *corev3.Metadata) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request:         &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Path: "/"}},
		MetadataContext: md,
	}}
}

type inputCase struct {
	name string
	req  *authv3.CheckRequest
	// expect holds top-level keys of the input and their expected values as
	// Rego terms, checked on Input's result independently of the reference.
	expect map[string]string
}

func handCases(t testing.TB) []inputCase {
	t.Helper()
	nested := mustStruct(t, map[string]any{
		"sub":     "acme",
		"exp":     1795000000,
		"iat":     1.5,
		"neg":     -42,
		"zero":    0,
		"tiny":    1e-7,
		"small":   0.000123,
		"huge":    1e21,
		"big":     123456789012,
		"active":  true,
		"revoked": false,
		"nothing": nil,
		"roles":   []any{"admin", "billing", []any{1, 2.5, nil, true}, map[string]any{"x": "y"}},
		"empty":   []any{},
		"obj":     map[string]any{"deeper": map[string]any{"list": []any{map[string]any{}}}},
		"unicode": "ü→✓ \"quoted\" \\ \n\t\u0000",
	})
	// A Value whose list/struct kind is set to a nil message.
	odd := &structpb.Struct{Fields: map[string]*structpb.Value{
		"nil_list":   {Kind: &structpb.Value_ListValue{}},
		"nil_struct": {Kind: &structpb.Value_StructValue{}},
		"null":       {Kind: &structpb.Value_NullValue{}},
	}}
	peer := &authv3.AttributeContext_Peer{
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Protocol: corev3.SocketAddress_UDP, Address: "2001:db8::1",
			PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 65535},
			ResolverName:  "custom", Ipv4Compat: true,
		}}},
		Service:     "billing",
		Labels:      map[string]string{"app": "invoice-worker", "version": "v2"},
		Principal:   "spiffe://cluster.local/ns/billing/sa/invoice-worker",
		Certificate: "-----BEGIN%20CERTIFICATE-----%0AMIIBszCCAVmgAwIBAgIU%2Bz%3D%3D%0A-----END%20CERTIFICATE-----%0A",
	}

	msgOptions := &descriptorpb.MessageOptions{Deprecated: proto.Bool(true)}
	proto.SetExtension(msgOptions, validate.E_Disabled, true)

	return []inputCase{
		{
			name: "metadata filter_metadata struct",
			req: withMetadata(&corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				"envoy.filters.http.jwt_authn": nested,
				"odd":                          odd,
				"empty":                        {},
				"nil":                          nil,
			}}),
		},
		{
			name: "metadata typed_filter_metadata",
			req: withMetadata(&corev3.Metadata{TypedFilterMetadata: map[string]*anypb.Any{
				"struct":    mustAny(t, nested),
				"string":    mustAny(t, wrapperspb.String("hello")),
				"int64":     mustAny(t, wrapperspb.Int64(-9007199254740993)),
				"uint64":    mustAny(t, wrapperspb.UInt64(math.MaxUint64)),
				"int32":     mustAny(t, wrapperspb.Int32(math.MinInt32)),
				"uint32":    mustAny(t, wrapperspb.UInt32(math.MaxUint32)),
				"bool":      mustAny(t, wrapperspb.Bool(false)),
				"bytes":     mustAny(t, wrapperspb.Bytes([]byte{0, 1, 0xfe, 0xff})),
				"double":    mustAny(t, wrapperspb.Double(2.5)),
				"float":     mustAny(t, wrapperspb.Float(0.25)),
				"value":     mustAny(t, structpb.NewNullValue()),
				"list":      mustAny(t, &structpb.ListValue{Values: []*structpb.Value{structpb.NewStringValue("a"), structpb.NewBoolValue(true)}}),
				"timestamp": mustAny(t, &timestamppb.Timestamp{Seconds: 1795000000, Nanos: 1000}),
				"duration":  mustAny(t, &durationpb.Duration{Seconds: -1, Nanos: -500000000}),
				"mask":      mustAny(t, &fieldmaskpb.FieldMask{Paths: []string{"foo_bar", "baz", "a.b_c"}}),
				"message":   mustAny(t, peer),
				"any":       mustAny(t, mustAny(t, peer)),
				"anywkt":    mustAny(t, mustAny(t, wrapperspb.String("inner"))),
				"typeonly":  {TypeUrl: "type.googleapis.com/google.protobuf.Struct"},
			}}),
		},
		{
			// google.protobuf.Empty has no special JSON mapping inside an
			// Any: protojson writes {"@type": ".../google.protobuf.Empty"}.
			name: "metadata typed_filter_metadata Any of Empty",
			req:  withMetadata(&corev3.Metadata{TypedFilterMetadata: map[string]*anypb.Any{"empty": mustAny(t, &emptypb.Empty{})}}),
		},
		{
			// protojson unmarshals an Any's value with AllowPartial: a proto2
			// message missing required fields is still rendered inline.
			name: "metadata typed_filter_metadata Any of proto2 message missing required fields",
			req: withMetadata(&corev3.Metadata{TypedFilterMetadata: map[string]*anypb.Any{
				"partial": {TypeUrl: "type.googleapis.com/google.protobuf.UninterpretedOption.NamePart"},
			}}),
		},
		{
			name: "metadata typed_filter_metadata Any with extension fields",
			req: withMetadata(&corev3.Metadata{TypedFilterMetadata: map[string]*anypb.Any{
				"ext": mustAny(t, msgOptions),
			}}),
		},
		{
			// protojson renders an Any with neither type_url nor value as {}.
			name: "metadata typed_filter_metadata empty Any",
			req:  withMetadata(&corev3.Metadata{TypedFilterMetadata: map[string]*anypb.Any{"e": {}}}),
		},
		{
			name: "route metadata context",
			req: &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				RouteMetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
					"tollgate": mustStruct(t, map[string]any{"plan": "pro", "weight": 3}),
				}},
			}},
		},
		{name: "timestamp 0 fractional digits", req: withTime(&timestamppb.Timestamp{Seconds: 1795000000})},
		{name: "timestamp 3 fractional digits", req: withTime(&timestamppb.Timestamp{Seconds: 1795000000, Nanos: 120000000})},
		{name: "timestamp 6 fractional digits", req: withTime(&timestamppb.Timestamp{Seconds: 1795000000, Nanos: 123456000})},
		{name: "timestamp 9 fractional digits", req: withTime(&timestamppb.Timestamp{Seconds: 1795000000, Nanos: 123456789})},
		{name: "timestamp 9 digits trailing zero", req: withTime(&timestamppb.Timestamp{Seconds: 1795000000, Nanos: 100000010})},
		{name: "timestamp epoch", req: withTime(&timestamppb.Timestamp{})},
		{name: "timestamp min", req: withTime(&timestamppb.Timestamp{Seconds: -62135596800})},
		{name: "timestamp max", req: withTime(&timestamppb.Timestamp{Seconds: 253402300799, Nanos: 999999999})},
		{
			name: "raw_body JSON with empty body",
			req:  bodyReq("application/json", "", "", []byte(`{"a":1,"b":[true,null,"x"],"c":1.50}`)),
			expect: map[string]string{
				"parsed_body":    `{"a": 1, "b": [true, null, "x"], "c": 1.5}`,
				"truncated_body": `false`,
			},
		},
		{
			name:   "JSON body wins over raw_body",
			req:    bodyReq("application/json; charset=utf-8", "7", `{"a":2}`, []byte(`{"a":1}`)),
			expect: map[string]string{"parsed_body": `{"a": 2}`, "truncated_body": `false`},
		},
		{
			name:   "JSON body scalar and big numbers",
			req:    bodyReq("application/json", "", `[1e400, 12345678901234567890, -0, "s"]`, nil),
			expect: map[string]string{"truncated_body": `false`},
		},
		{
			name:   "JSON content-type without body",
			req:    bodyReq("application/json", "0", "", nil),
			expect: map[string]string{"parsed_body": `null`, "truncated_body": `false`},
		},
		{
			name: "form body",
			req:  bodyReq("application/x-www-form-urlencoded", "", "a=1&b=x%20y&a=2&empty=&flag", nil),
			expect: map[string]string{
				"parsed_body":    `{"a": ["1", "2"], "b": ["x y"], "empty": [""], "flag": [""]}`,
				"truncated_body": `false`,
			},
		},
		{
			name:   "form raw_body",
			req:    bodyReq("application/x-www-form-urlencoded; charset=UTF-8", "9", "", []byte("k=v&k=w+x")),
			expect: map[string]string{"parsed_body": `{"k": ["v", "w x"]}`, "truncated_body": `false`},
		},
		{
			name:   "truncated JSON body",
			req:    bodyReq("application/json", "1000", `{"model":"sm`, nil),
			expect: map[string]string{"parsed_body": `null`, "truncated_body": `true`},
		},
		{
			name:   "truncated form body",
			req:    bodyReq("application/x-www-form-urlencoded", "10", "a=1", nil),
			expect: map[string]string{"parsed_body": `null`, "truncated_body": `true`},
		},
		{
			name:   "truncated raw_body",
			req:    bodyReq("application/json", "5", "", []byte(`{}`)),
			expect: map[string]string{"parsed_body": `null`, "truncated_body": `true`},
		},
		{
			name:   "content-length equal to body",
			req:    bodyReq("application/json", "2", `{}`, nil),
			expect: map[string]string{"parsed_body": `{}`, "truncated_body": `false`},
		},
		{
			name:   "content-length -1 and smaller",
			req:    bodyReq("application/json", "-1", `[1]`, nil),
			expect: map[string]string{"parsed_body": `[1]`, "truncated_body": `false`},
		},
		{
			name:   "other content-type",
			req:    bodyReq("text/plain", "", `{"a":1}`, nil),
			expect: map[string]string{"parsed_body": `null`, "truncated_body": `false`},
		},
		{
			name:   "no content-type",
			req:    bodyReq("", "", `{"a":1}`, nil),
			expect: map[string]string{"parsed_body": `null`, "truncated_body": `false`},
		},
		{
			name: "path with escapes and repeated query params",
			req: httpReq(&authv3.AttributeContext_HttpRequest{
				Method: "GET",
				Path:   "/v1/a%20b/c%2Fd/%E2%9C%93//x/?tag=a&tag=b&tag=&q=hello+world&e=%26%3D&noval&semi=1;x=2#frag",
			}),
			expect: map[string]string{
				"parsed_path":  `["v1", "a b", "c", "d", "✓", "", "x", ""]`, // u.Path is decoded: %2F splits
				"parsed_query": `{"tag": ["a", "b", ""], "q": ["hello world"], "e": ["&="], "noval": [""]}`,
			},
		},
		{
			name: "header_map only (encode_raw_headers)",
			req: httpReq(&authv3.AttributeContext_HttpRequest{
				Method: "POST", Path: "/submit", Body: `{"a":1}`,
				HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
					{Key: "Content-Type", RawValue: []byte("application/json")},
					{Key: "x-dup", RawValue: []byte("1")},
					{Key: "x-dup", Value: "2"},
					{Key: "x-tollgate-plan", RawValue: []byte("forged")},
				}},
			}),
			expect: map[string]string{"parsed_body": `{"a": 1}`},
		},
		{
			name: "query only path",
			req:  httpReq(&authv3.AttributeContext_HttpRequest{Path: "?a=1"}),
			expect: map[string]string{
				"parsed_path":  `[""]`,
				"parsed_query": `{"a": ["1"]}`,
			},
		},
		{
			name: "path with empty query",
			req:  httpReq(&authv3.AttributeContext_HttpRequest{Path: "/a?"}),
			expect: map[string]string{
				"parsed_path":  `["a"]`,
				"parsed_query": `{}`,
			},
		},
		{
			name: "absolute-form and authority-like paths",
			req:  httpReq(&authv3.AttributeContext_HttpRequest{Path: "//evil.example/x?y=1"}),
		},
		{
			name: "empty path",
			req:  httpReq(&authv3.AttributeContext_HttpRequest{Method: "GET"}),
			expect: map[string]string{
				"parsed_path":    `[""]`,
				"parsed_query":   `{}`,
				"parsed_body":    `null`,
				"truncated_body": `false`,
			},
		},
		{
			name: "TLS session and peer certificate",
			req: &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				Source: peer,
				Destination: &authv3.AttributeContext_Peer{
					Address: &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/envoy.sock", Mode: 0o600}}},
				},
				TlsSession: &authv3.AttributeContext_TLSSession{Sni: "api.example.com"},
				Request:    &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Path: "/"}},
			}},
		},
		{
			name: "addresses enums and oneofs",
			req: &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Protocol:      corev3.SocketAddress_Protocol(7), // not a known enum value
					Address:       "10.0.0.1",
					PortSpecifier: &corev3.SocketAddress_NamedPort{NamedPort: "https"},
				}}}},
				Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{
					EnvoyInternalAddress: &corev3.EnvoyInternalAddress{
						AddressNameSpecifier: &corev3.EnvoyInternalAddress_ServerListenerName{ServerListenerName: "internal"},
						EndpointId:           "ep-1",
					},
				}}},
			}},
		},
		{
			name: "empty oneof messages",
			req: &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				Source:      &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{}}},
				Destination: &authv3.AttributeContext_Peer{},
				TlsSession:  &authv3.AttributeContext_TLSSession{},
			}},
		},
		{
			name: "int64 size negative",
			req:  httpReq(&authv3.AttributeContext_HttpRequest{Path: "/", Size: -1, Id: "18446744073709551615"}),
		},
		{
			name: "int64 size extremes",
			req:  httpReq(&authv3.AttributeContext_HttpRequest{Path: "/", Size: math.MinInt64}),
		},
		{
			name: "int64 size max",
			req:  httpReq(&authv3.AttributeContext_HttpRequest{Path: "/", Size: math.MaxInt64}),
		},
		{
			name: "context extensions",
			req: &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				ContextExtensions: map[string]string{"route": "invoices-list", "": "empty-key", "plan": ""},
				Request:           &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Path: "/"}},
			}},
		},
		{
			name: "header map with raw values",
			req: httpReq(&authv3.AttributeContext_HttpRequest{
				Path:    "/",
				Headers: map[string]string{":path": "/", "x-unicode": "ü✓", "x-empty": ""},
				HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
					{Key: ":path", Value: "/"},
					{Key: "x-bin", RawValue: []byte{0, 0xff, 'a'}},
					{Key: "x-empty"},
				}},
				Scheme: "https", Host: "api.example.com", Protocol: "HTTP/2", Query: "ignored=1", Fragment: "f",
			}),
		},
		{name: "nil attributes", req: &authv3.CheckRequest{}},
		{name: "empty attributes", req: &authv3.CheckRequest{Attributes: &authv3.AttributeContext{}}},
		{name: "nil http", req: &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{}}}},
		{name: "nil request", req: (*authv3.CheckRequest)(nil)},
	}
}

// ---------------------------------------------------------------------------
// Differential tests.
// ---------------------------------------------------------------------------

func checkExpect(t *testing.T, got ast.Value, expect map[string]string) {
	t.Helper()
	for key, lit := range expect {
		want := ast.MustParseTerm(lit)
		gt := get(got, key)
		if gt == nil {
			t.Errorf("%s: missing, want %v", key, want)
			continue
		}
		if ast.Compare(gt.Value, want.Value) != 0 {
			t.Errorf("%s: got %v, want %v", key, gt, want)
		}
	}
}

func TestInputFixtures(t *testing.T) {
	for _, f := range loadFixtures(t) {
		t.Run(f.name, func(t *testing.T) {
			ref := opaEnvoyInput(f.req)
			if ref.pathErr != nil || ref.bodyErr != nil {
				t.Fatalf("fixture should be accepted by opa-envoy-plugin: path %v, body %v", ref.pathErr, ref.bodyErr)
			}
			assertSameInput(t, Input(f.req), ref.value(t))
		})
	}
}

func TestInputCases(t *testing.T) {
	for _, c := range handCases(t) {
		t.Run(c.name, func(t *testing.T) {
			ref := opaEnvoyInput(c.req)
			if ref.pathErr != nil || ref.bodyErr != nil {
				t.Fatalf("case should be accepted by opa-envoy-plugin: path %v, body %v", ref.pathErr, ref.bodyErr)
			}
			got := Input(c.req)
			assertSameInput(t, got, ref.value(t))
			checkExpect(t, got, c.expect)
		})
	}
}

// TestInputFixtureSpotChecks pins a few values independently of the
// reference.
func TestInputFixtureSpotChecks(t *testing.T) {
	got := Input(loadFixture(t, "check-get-apikey"))
	checkExpect(t, got, map[string]string{
		"parsed_path":    `["v1", "invoices"]`,
		"parsed_query":   `{"limit": ["10"], "status": ["open"]}`,
		"parsed_body":    `null`,
		"truncated_body": `false`,
		"version":        `{"ext_authz": "v3", "encoding": "protojson"}`,
	})
	http := ast.MustParseRef(`x.attributes.request.http`)[1:]
	h, err := got.Find(http)
	if err != nil {
		t.Fatal(err)
	}
	checkExpect(t, h, map[string]string{
		"size":   `"-1"`,
		"id":     `"9431718290937315524"`,
		"method": `"GET"`,
	})
	tm, err := got.Find(ast.MustParseRef(`x.attributes.request.time`)[1:])
	if err != nil || ast.Compare(tm, ast.String("2026-11-24T10:00:00.123456Z")) != 0 {
		t.Errorf("time: got %v (%v)", tm, err)
	}

	// This fixture's content-length (83) exceeds its body (78 bytes), so
	// opa-envoy-plugin, and Input, report the body as truncated.
	got = Input(loadFixture(t, "check-post-json-bearer"))
	checkExpect(t, got, map[string]string{
		"parsed_path":    `["v1", "chat", "completions"]`,
		"parsed_query":   `{}`,
		"parsed_body":    `null`,
		"truncated_body": `true`,
	})
}

// Tollgate's deliberate differences: where opa-envoy-plugin fails the whole
// request, Input leaves the unparseable part undefined.

func TestInputMalformedBody(t *testing.T) {
	cases := []struct {
		name string
		req  *authv3.CheckRequest
	}{
		{"truncated JSON object", bodyReq("application/json", "", `{"a":`, nil)},
		{"JSON trailing data", bodyReq("application/json", "", `{} {}`, nil)},
		{"JSON garbage", bodyReq("application/json", "3", `abc`, nil)},
		{"malformed JSON raw_body", bodyReq("application/json", "", "", []byte(`[1,`))},
		{"form bad escape", bodyReq("application/x-www-form-urlencoded", "", "a=%zz&b=1", nil)},
		{"form semicolon", bodyReq("application/x-www-form-urlencoded", "", "a=1;b=2", nil)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ref := opaEnvoyInput(c.req)
			if ref.bodyErr == nil {
				t.Fatalf("reference accepted the body; case is not malformed")
			}
			got := Input(c.req)
			if pb := get(got, "parsed_body"); pb != nil {
				t.Errorf("parsed_body: got %v, want undefined", pb)
			}
			if tb := get(got, "truncated_body"); tb == nil || ast.Compare(tb.Value, ast.Boolean(false)) != 0 {
				t.Errorf("truncated_body: got %v, want false", tb)
			}
			assertSameInput(t, got, ref.value(t))
		})
	}
}

// A content-length that is not a number makes opa-envoy-plugin fail the
// request; Input ignores the header, so the body is still parsed.
func TestInputInvalidContentLength(t *testing.T) {
	req := bodyReq("application/json", "abc", `{"a":1}`, nil)
	ref := opaEnvoyInput(req)
	if ref.bodyErr == nil {
		t.Fatal("reference accepted content-length abc")
	}
	got := Input(req)
	if tb := get(got, "truncated_body"); tb == nil || ast.Compare(tb.Value, ast.Boolean(false)) != 0 {
		t.Errorf("truncated_body: got %v, want false", tb)
	}
	t.Logf("parsed_body with content-length abc: %v", get(got, "parsed_body"))
	assertSameInput(t, got, ref.value(t), "parsed_body")
}

func TestInputUnparseablePath(t *testing.T) {
	for _, p := range []string{"/%zz", "/a?b#%", ":no-scheme", "http://[::1/x", "/a b\x7f"} {
		t.Run(p, func(t *testing.T) {
			req := httpReq(&authv3.AttributeContext_HttpRequest{Method: "GET", Path: p})
			ref := opaEnvoyInput(req)
			if ref.pathErr == nil {
				t.Fatalf("url.Parse(%q) succeeded; case is not unparseable", p)
			}
			got := Input(req)
			for _, k := range []string{"parsed_path", "parsed_query"} {
				if v := get(got, k); v != nil {
					t.Errorf("%s: got %v, want undefined", k, v)
				}
			}
			assertSameInput(t, got, ref.value(t))
		})
	}
}

// Input renders a type it cannot resolve (where protojson fails) with its raw
// bytes rather than failing.
func TestInputUnknownAny(t *testing.T) {
	req := withMetadata(&corev3.Metadata{TypedFilterMetadata: map[string]*anypb.Any{
		"x": {TypeUrl: "type.googleapis.com/tollgate.Unknown", Value: []byte{1, 2, 3}},
	}})
	if _, err := protojson.Marshal(req); err == nil {
		t.Fatal("protojson resolved an unknown type")
	}
	got := Input(req)
	v, err := got.Find(ast.MustParseRef(`x.attributes.metadataContext.typedFilterMetadata.x`)[1:])
	if err != nil {
		t.Fatal(err)
	}
	want := ast.MustParseTerm(`{"@type": "type.googleapis.com/tollgate.Unknown", "value": "AQID"}`).Value
	if ast.Compare(v, want) != 0 {
		t.Errorf("got %v, want %v", v, want)
	}
}

func TestInputNil(t *testing.T) {
	got := Input(nil)
	assertSameInput(t, got, referenceInput(t, nil))
}

// TestInputNumberLiterals checks that numbers are written as protojson
// writes them, not just equal by value: the text of a number is visible to
// policies through json.marshal and sprintf.
func TestInputNumberLiterals(t *testing.T) {
	req := withMetadata(&corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"jwt": mustStruct(t, map[string]any{"exp": 1795000000, "ratio": 0.000001, "n": 1.5}),
	}})
	got, want := Input(req), referenceInput(t, req)
	var diffs []string
	numberTextDiffs("input", got, want, &diffs)
	if len(diffs) == 0 {
		return
	}
	t.Errorf("numbers written differently from protojson:\n  %s", strings.Join(diffs, "\n  "))
	q := `x := sprintf("%d", [input.attributes.metadataContext.filterMetadata.jwt.exp])`
	for name, in := range map[string]ast.Value{"Input": got, "reference": want} {
		rs, err := rego.New(rego.Query(q), rego.ParsedInput(in)).Eval(context.Background())
		if err == nil && len(rs) == 1 {
			t.Logf("%s: %s → %v", name, q, rs[0].Bindings["x"])
		}
	}
}

// TestInputConcurrent runs Input and reads its results from many goroutines
// (meaningful under -race: results share interned terms).
func TestInputConcurrent(t *testing.T) {
	var reqs []*authv3.CheckRequest
	for _, f := range loadFixtures(t) {
		reqs = append(reqs, f.req)
	}
	for _, c := range handCases(t) {
		reqs = append(reqs, c.req)
	}
	want := make([]ast.Value, len(reqs))
	for i, r := range reqs {
		want[i] = Input(r)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range reqs {
				r := reqs[(i+g)%len(reqs)]
				v := Input(r)
				_ = v.String()
				_ = v.Hash()
				if ast.Compare(v, want[(i+g)%len(reqs)]) != 0 {
					t.Errorf("concurrent Input differs for request %d", (i+g)%len(reqs))
				}
			}
		}()
	}
	wg.Wait()
}

// ---------------------------------------------------------------------------
// Fuzzing.
// ---------------------------------------------------------------------------

func FuzzInput(f *testing.F) {
	for _, fx := range loadFixtures(f) {
		bs, err := proto.MarshalOptions{Deterministic: true}.Marshal(fx.req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(bs)
	}
	for _, c := range handCases(f) {
		bs, err := proto.MarshalOptions{Deterministic: true}.Marshal(c.req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(bs)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req := &authv3.CheckRequest{}
		if err := proto.Unmarshal(data, req); err != nil {
			t.Skip()
		}
		got := Input(req)
		ref := opaEnvoyInput(req)
		if ref.marshalErr != nil {
			return // opa-envoy-plugin rejects the request; nothing to compare
		}
		var ignore []string
		if ref.bodyErr != nil {
			// Malformed body (or content-length): opa-envoy-plugin fails,
			// Input leaves parsed_body undefined (or, for a bad
			// content-length, parses the body anyway).
			ignore = append(ignore, "parsed_body")
			if tb := get(got, "truncated_body"); tb == nil || ast.Compare(tb.Value, ast.Boolean(false)) != 0 {
				t.Errorf("body error %v: truncated_body %v, want false", ref.bodyErr, tb)
			}
		}
		assertSameInput(t, got, ref.value(t), ignore...)
	})
}

// FuzzInputHTTP fuzzes the parts Input parses itself: the path and the body
// with its content-type and content-length.
func FuzzInputHTTP(f *testing.F) {
	f.Add("/v1/invoices?limit=10&status=open", "", "", "", false)
	f.Add("/v1/chat/completions", `{"model":"small","max_tokens":256}`, "application/json", "34", false)
	f.Add("/submit", "a=1&a=2&b=%20", "application/x-www-form-urlencoded", "", true)
	f.Add("/a%20b/%2F?x=1&x=2;y", `{"a":`, "application/json; charset=utf-8", "1000", false)
	f.Add("", "", "application/json", "", true)
	f.Add("//host/path?q#frag", "[1e400, -0]", "application/json", "-1", true)
	f.Add("/%zz", "a=%zz", "application/x-www-form-urlencoded", "abc", false)
	f.Add("/deep", nested(maxBodyDepth, "1"), "application/json", "", false)
	f.Add("/deep", nested(maxBodyDepth+1, "1"), "application/json", "", true)
	f.Add("/deep", `{"a": "`+strings.Repeat("[", 70)+`\"", "b": [[{}]]}`, "application/json", "", false)
	f.Add("/deep", `["\\", `+nested(maxBodyDepth, "")+`]`, "application/json", "", false)
	attributesOnly := refsOf(f, `p := input.attributes`)
	f.Fuzz(func(t *testing.T, path, body, contentType, contentLength string, raw bool) {
		headers := map[string]string{":path": path}
		if contentType != "" {
			headers["content-type"] = contentType
		}
		if contentLength != "" {
			headers["content-length"] = contentLength
		}
		h := &authv3.AttributeContext_HttpRequest{Method: "POST", Path: path, Headers: headers}
		if raw {
			h.RawBody = []byte(body)
		} else {
			h.Body = body
		}
		req := httpReq(h)
		got := Input(req)

		// For a policy that reads none of the derived members, they are
		// not built and the rest is the same.
		assertSameInput(t, InputFor(req, attributesOnly), without(got, "parsed_path", "parsed_query", "parsed_body"))

		// Path and query, independently of protojson (which rejects
		// invalid UTF-8).
		p, q, perr := refParsePath(path)
		if perr != nil {
			for _, k := range []string{"parsed_path", "parsed_query"} {
				if v := get(got, k); v != nil {
					t.Errorf("url.Parse(%q) fails (%v) but %s = %v", path, perr, k, v)
				}
			}
		} else {
			for k, x := range map[string]any{"parsed_path": p, "parsed_query": q} {
				want, err := ast.InterfaceToValue(x)
				if err != nil {
					t.Fatal(err)
				}
				gt := get(got, k)
				if gt == nil {
					t.Errorf("path %q: %s missing, want %v", path, k, want)
				} else if ast.Compare(gt.Value, want) != 0 {
					t.Errorf("path %q: %s = %v, want %v", path, k, gt, want)
				}
			}
		}

		// Body.
		pb, truncated, berr := refParseBody(headers, h.Body, h.RawBody)
		gotTrunc := get(got, "truncated_body")
		tooDeep := berr == nil && depthOf(pb) > maxBodyDepth
		if tooDeep {
			if v := get(got, "parsed_body"); v != nil {
				t.Errorf("body %.80q nested %d deep: parsed_body = %.80v, want undefined", body, depthOf(pb), v)
			}
			if gotTrunc == nil || ast.Compare(gotTrunc.Value, ast.Boolean(false)) != 0 {
				t.Errorf("body nested %d deep: truncated_body %v, want false", depthOf(pb), gotTrunc)
			}
		} else if berr != nil {
			if gotTrunc == nil || ast.Compare(gotTrunc.Value, ast.Boolean(false)) != 0 {
				t.Errorf("body %q (%v): truncated_body %v, want false", body, berr, gotTrunc)
			}
			if _, clErr := strconv.ParseInt(contentLength, 10, 64); contentLength == "" || clErr == nil {
				// Malformed body proper: parsed_body must be undefined.
				if v := get(got, "parsed_body"); v != nil {
					t.Errorf("malformed body %q (%v): parsed_body = %v, want undefined", body, berr, v)
				}
			}
		} else {
			want, err := ast.InterfaceToValue(map[string]any{"parsed_body": pb, "truncated_body": truncated})
			if err != nil {
				t.Fatal(err)
			}
			assertSameInput(t, without(got, "attributes", "version", "parsed_path", "parsed_query"), want)
		}

		// Everything, when protojson can render the request.
		if utf8.ValidString(path) && (raw || utf8.ValidString(body)) && utf8.ValidString(contentType) && utf8.ValidString(contentLength) {
			ref := opaEnvoyInput(req)
			if ref.marshalErr != nil {
				t.Fatalf("protojson failed on valid UTF-8: %v", ref.marshalErr)
			}
			var ignore []string
			if ref.bodyErr != nil || tooDeep {
				ignore = append(ignore, "parsed_body")
			}
			assertSameInput(t, got, ref.value(t), ignore...)
		}
	})
}

// depthOf is how deeply a decoded JSON value nests arrays and objects.
func depthOf(x any) int {
	d := 0
	switch x := x.(type) {
	case []any:
		for _, v := range x {
			d = max(d, depthOf(v))
		}
	case map[string]any:
		for _, v := range x {
			d = max(d, depthOf(v))
		}
	default:
		return 0
	}
	return d + 1
}

// ---------------------------------------------------------------------------
// Benchmarks.
// ---------------------------------------------------------------------------

func BenchmarkInput(b *testing.B) {
	req := loadFixture(b, "check-get-apikey")
	b.ReportAllocs()
	for b.Loop() {
		_ = Input(req)
	}
}

func BenchmarkInputJSONRoundTrip(b *testing.B) {
	req := loadFixture(b, "check-get-apikey")
	b.ReportAllocs()
	for b.Loop() {
		_ = referenceInput(b, req)
	}
}
