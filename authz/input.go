package authz

import (
	"encoding/base64"
	"math"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Input builds the policy input for a CheckRequest: the same document
// opa-envoy-plugin gives its policies (the request in protojson form, plus
// parsed_path, parsed_query, parsed_body, truncated_body and version), built
// directly as an AST value — no JSON round trip. It never fails: parts that
// cannot be parsed (a malformed body or path) are left undefined.
func Input(req *authv3.CheckRequest) ast.Value {
	obj := messageValue(req.ProtoReflect()).(ast.Object)
	obj.Insert(termVersion, versionValue)

	h := req.GetAttributes().GetRequest().GetHttp()
	if p, q, ok := parsePath(h.GetPath()); ok {
		obj.Insert(termParsedPath, ast.NewTerm(p))
		obj.Insert(termParsedQuery, ast.NewTerm(q))
	}
	body, truncated, ok := parseBody(h.GetHeaders(), h.GetBody(), h.GetRawBody())
	if ok {
		obj.Insert(termParsedBody, ast.NewTerm(body))
	}
	obj.Insert(termTruncatedBody, ast.InternedTerm(truncated))
	return obj
}

var (
	termVersion       = ast.StringTerm("version")
	termParsedPath    = ast.StringTerm("parsed_path")
	termParsedQuery   = ast.StringTerm("parsed_query")
	termParsedBody    = ast.StringTerm("parsed_body")
	termTruncatedBody = ast.StringTerm("truncated_body")
	versionValue      = ast.ObjectTerm(
		ast.Item(ast.StringTerm("ext_authz"), ast.StringTerm("v3")),
		ast.Item(ast.StringTerm("encoding"), ast.StringTerm("protojson")),
	)
)

// parsePath splits Envoy's :path (which carries the query string) the way
// opa-envoy-plugin does: parsed_path is the path's segments without the
// leading slash, parsed_query maps each parameter to its list of values.
func parsePath(p string) (ast.Value, ast.Value, bool) {
	u, err := url.Parse(p)
	if err != nil {
		return nil, nil, false
	}
	segs := strings.Split(strings.TrimLeft(u.Path, "/"), "/")
	path := make([]*ast.Term, len(segs))
	for i, s := range segs {
		path[i] = ast.StringTerm(s)
	}
	q := ast.NewObject()
	if u.RawQuery != "" {
		for k, vs := range u.Query() {
			arr := make([]*ast.Term, len(vs))
			for i, v := range vs {
				arr[i] = ast.StringTerm(v)
			}
			q.Insert(ast.StringTerm(k), ast.ArrayTerm(arr...))
		}
	}
	return ast.NewArray(path...), q, true
}

// parseBody parses JSON and form bodies. It reports truncated when the
// content-length says more was sent than Envoy buffered; then, and when
// there is no parseable body, the value is null (as in opa-envoy-plugin).
// A malformed body gives ok == false: parsed_body stays undefined.
func parseBody(headers map[string]string, body string, raw []byte) (v ast.Value, truncated, ok bool) {
	ct := headers["content-type"]
	isJSON := strings.Contains(ct, "application/json")
	isForm := strings.Contains(ct, "application/x-www-form-urlencoded")
	if !isJSON && !isForm {
		return ast.NullValue, false, true
	}
	if body == "" {
		if len(raw) == 0 {
			return ast.NullValue, false, true
		}
		body = string(raw)
	}
	if cl, found := headers["content-length"]; found {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err == nil && n > int64(len(body)) {
			return ast.NullValue, true, true
		}
	}
	if isJSON {
		var x any
		if err := util.UnmarshalJSON([]byte(body), &x); err != nil {
			return nil, false, false
		}
		val, err := ast.InterfaceToValue(x)
		if err != nil {
			return nil, false, false
		}
		return val, false, true
	}
	form, err := url.ParseQuery(body)
	if err != nil {
		return nil, false, false
	}
	obj := ast.NewObject()
	for k, vs := range form {
		arr := make([]*ast.Term, len(vs))
		for i, s := range vs {
			arr[i] = ast.StringTerm(s)
		}
		obj.Insert(ast.StringTerm(k), ast.ArrayTerm(arr...))
	}
	return obj, false, true
}

// keyTerms caches the JSON name of each field as a shared term: field names
// are the same on every request.
var keyTerms sync.Map // protoreflect.FieldDescriptor -> *ast.Term

func keyTerm(fd protoreflect.FieldDescriptor) *ast.Term {
	if t, ok := keyTerms.Load(fd); ok {
		return t.(*ast.Term)
	}
	t, _ := keyTerms.LoadOrStore(fd, ast.StringTerm(fd.JSONName()))
	return t.(*ast.Term)
}

// messageValue converts a message to the AST value of its protojson form
// (default options: lowerCamelCase names, unpopulated fields omitted, 64-bit
// integers as strings, enums by name, well-known types in their JSON form).
func messageValue(m protoreflect.Message) ast.Value {
	if v, ok := wellKnown(m); ok {
		return v
	}
	kvs := make([][2]*ast.Term, 0, 8)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		var val ast.Value
		switch {
		case fd.IsList():
			l := v.List()
			arr := make([]*ast.Term, l.Len())
			for i := range arr {
				arr[i] = ast.NewTerm(singular(fd, l.Get(i)))
			}
			val = ast.NewArray(arr...)
		case fd.IsMap():
			obj := ast.NewObject()
			vd := fd.MapValue()
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				obj.Insert(ast.StringTerm(k.String()), ast.NewTerm(singular(vd, mv)))
				return true
			})
			val = obj
		default:
			val = singular(fd, v)
		}
		kvs = append(kvs, [2]*ast.Term{keyTerm(fd), ast.NewTerm(val)})
		return true
	})
	return ast.NewObject(kvs...)
}

func singular(fd protoreflect.FieldDescriptor, v protoreflect.Value) ast.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return ast.Boolean(v.Bool())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return ast.InternedTerm(int(v.Int())).Value
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return ast.InternedTerm(int(v.Uint())).Value
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return ast.String(strconv.FormatInt(v.Int(), 10))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return ast.String(strconv.FormatUint(v.Uint(), 10))
	case protoreflect.FloatKind:
		return floatValue(v.Float(), 32)
	case protoreflect.DoubleKind:
		return floatValue(v.Float(), 64)
	case protoreflect.StringKind:
		return ast.String(v.String())
	case protoreflect.BytesKind:
		return ast.String(base64.StdEncoding.EncodeToString(v.Bytes()))
	case protoreflect.EnumKind:
		if fd.Enum().FullName() == "google.protobuf.NullValue" {
			return ast.NullValue
		}
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return ast.String(ev.Name())
		}
		return ast.InternedTerm(int(v.Enum())).Value
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return messageValue(v.Message())
	}
	return ast.NullValue
}

func floatValue(f float64, bits int) ast.Value {
	switch {
	case math.IsNaN(f):
		return ast.String("NaN")
	case math.IsInf(f, 1):
		return ast.String("Infinity")
	case math.IsInf(f, -1):
		return ast.String("-Infinity")
	}
	return ast.Number(strconv.FormatFloat(f, 'g', -1, bits))
}

// wellKnown renders the well-known types the way protojson does.
func wellKnown(m protoreflect.Message) (ast.Value, bool) {
	d := m.Descriptor()
	if d.FullName().Parent() != "google.protobuf" {
		return nil, false
	}
	fields := d.Fields()
	switch d.Name() {
	case "Timestamp":
		secs, nanos := m.Get(fields.ByNumber(1)).Int(), m.Get(fields.ByNumber(2)).Int()
		return ast.String(formatTimestamp(secs, nanos)), true
	case "Duration":
		secs, nanos := m.Get(fields.ByNumber(1)).Int(), m.Get(fields.ByNumber(2)).Int()
		return ast.String(formatDuration(secs, nanos)), true
	case "Struct":
		obj := ast.NewObject()
		m.Get(fields.ByNumber(1)).Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
			obj.Insert(ast.StringTerm(k.String()), ast.NewTerm(messageValue(v.Message())))
			return true
		})
		return obj, true
	case "ListValue":
		l := m.Get(fields.ByNumber(1)).List()
		arr := make([]*ast.Term, l.Len())
		for i := range arr {
			arr[i] = ast.NewTerm(messageValue(l.Get(i).Message()))
		}
		return ast.NewArray(arr...), true
	case "Value":
		od := m.WhichOneof(d.Oneofs().ByName("kind"))
		if od == nil {
			return ast.NullValue, true
		}
		return singular(od, m.Get(od)), true
	case "BoolValue", "Int32Value", "UInt32Value", "Int64Value", "UInt64Value",
		"FloatValue", "DoubleValue", "StringValue", "BytesValue":
		fd := fields.ByNumber(1)
		return singular(fd, m.Get(fd)), true
	case "Empty":
		return ast.NewObject(), true
	case "FieldMask":
		l := m.Get(fields.ByNumber(1)).List()
		paths := make([]string, l.Len())
		for i := range paths {
			paths[i] = camel(l.Get(i).String())
		}
		return ast.String(strings.Join(paths, ",")), true
	case "Any":
		return anyValue(m), true
	}
	return nil, false
}

// anyValue renders google.protobuf.Any as protojson does ({"@type": ...,
// fields...}); a type this binary does not know is rendered with its raw
// bytes under "value" rather than failing the request.
func anyValue(m protoreflect.Message) ast.Value {
	fields := m.Descriptor().Fields()
	typeURL := m.Get(fields.ByNumber(1)).String()
	raw := m.Get(fields.ByNumber(2)).Bytes()
	atType := ast.Item(ast.StringTerm("@type"), ast.StringTerm(typeURL))
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(typeURL)
	if err != nil {
		return ast.NewObject(atType, ast.Item(ast.StringTerm("value"), ast.StringTerm(base64.StdEncoding.EncodeToString(raw))))
	}
	inner := mt.New()
	if err := proto.Unmarshal(raw, inner.Interface()); err != nil {
		return ast.NewObject(atType, ast.Item(ast.StringTerm("value"), ast.StringTerm(base64.StdEncoding.EncodeToString(raw))))
	}
	v := messageValue(inner)
	if obj, ok := v.(ast.Object); ok {
		if _, isWKT := wellKnown(inner); !isWKT {
			obj.Insert(atType[0], atType[1])
			return obj
		}
	}
	return ast.NewObject(atType, ast.Item(ast.StringTerm("value"), ast.NewTerm(v)))
}

func formatTimestamp(secs, nanos int64) string {
	t := time.Unix(secs, nanos).UTC()
	s := t.Format("2006-01-02T15:04:05.000000000")
	s = strings.TrimSuffix(s, "000")
	s = strings.TrimSuffix(s, "000")
	s = strings.TrimSuffix(s, ".000")
	return s + "Z"
}

func formatDuration(secs, nanos int64) string {
	sign := ""
	if secs < 0 || nanos < 0 {
		sign = "-"
		secs, nanos = -secs, -nanos
	}
	s := strconv.FormatInt(secs, 10)
	if nanos != 0 {
		f := strconv.FormatInt(nanos+1e9, 10)[1:] // 9 digits, zero-padded
		f = strings.TrimSuffix(f, "000")
		f = strings.TrimSuffix(f, "000")
		s += "." + f
	}
	return sign + s + "s"
}

func camel(s string) string {
	var b strings.Builder
	up := false
	for _, r := range s {
		if r == '_' {
			up = true
			continue
		}
		if up && r >= 'a' && r <= 'z' {
			r -= 'a' - 'A'
		}
		up = false
		b.WriteRune(r)
	}
	return b.String()
}
