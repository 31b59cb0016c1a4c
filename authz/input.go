package authz

import (
	"bytes"
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

	"github.com/tollgate-dev/tollgate/internal/directory"
	"github.com/tollgate-dev/tollgate/policies"
)

// Input builds the policy input for a CheckRequest: the same document
// opa-envoy-plugin gives its policies (the request in protojson form, plus
// parsed_path, parsed_query, parsed_body, truncated_body and version), built
// directly as an AST value — no JSON round trip. It never fails: parts that
// cannot be parsed (a malformed body or path, or a JSON body nested deeper
// than 64 arrays and objects) are left undefined. When Envoy sends
// header_map (encode_raw_headers: true) and no headers, the input has
// headers too, read from header_map as Envoy writes headers.
func Input(req *authv3.CheckRequest) ast.Value { return InputFor(req, nil) }

// InputFor is Input with only the derived members a policy can read:
// parsed_path and parsed_query (built together) and parsed_body are left
// out unless refs needs them. attributes, version and truncated_body are
// always there. Nil refs: every member.
func InputFor(req *authv3.CheckRequest, refs *policies.InputRefs) ast.Value {
	return InputWith(req, refs, nil)
}

// InputWith is InputFor with input.tollgate.consumer, the consumer and key
// the request's credential resolved to (see Options.Resolver); nil leaves
// input.tollgate undefined.
func InputWith(req *authv3.CheckRequest, refs *policies.InputRefs, consumer *directory.Resolved) ast.Value {
	req = withHeaderMap(req)
	b := &builder{}
	start := b.fields(req.ProtoReflect())
	b.push(termVersion, versionValue)

	h := req.GetAttributes().GetRequest().GetHttp()
	if refs.Needs("parsed_path") || refs.Needs("parsed_query") {
		if p, q, ok := b.parsePath(h.GetPath()); ok {
			b.push(termParsedPath, b.term(p))
			b.push(termParsedQuery, b.term(q))
		}
	}
	body := requestBody(h.GetHeaders(), h.GetBody(), h.GetRawBody())
	if refs.Needs("parsed_body") {
		if v, ok := body.parse(); ok {
			b.push(termParsedBody, b.term(v))
		}
	}
	b.push(termTruncatedBody, ast.InternedTerm(body.truncated))
	if consumer != nil {
		b.pushTollgate(consumer)
	}
	return b.object(start)
}

// builder hands out terms from slabs (one allocation per 32 terms instead
// of one per term) and collects object members on one stack that every
// object of the input shares, since ast.NewObject copies them.
type builder struct {
	slab  []ast.Term
	stack [][2]*ast.Term
}

func (b *builder) term(v ast.Value) *ast.Term {
	if len(b.slab) == 0 {
		b.slab = make([]ast.Term, 32)
	}
	t := &b.slab[0]
	b.slab = b.slab[1:]
	t.Value = v
	return t
}

func (b *builder) push(k, v *ast.Term) { b.stack = append(b.stack, [2]*ast.Term{k, v}) }

// object pops the members pushed since start into a new object.
func (b *builder) object(start int) ast.Object {
	obj := ast.NewObject(b.stack[start:]...)
	clear(b.stack[start:])
	b.stack = b.stack[:start]
	return obj
}

func (b *builder) str(s string) *ast.Term { return b.term(ast.String(s)) }

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
func (b *builder) parsePath(p string) (ast.Value, ast.Value, bool) {
	u, err := url.Parse(p)
	if err != nil {
		return nil, nil, false
	}
	rest := strings.TrimLeft(u.Path, "/")
	path := make([]*ast.Term, 0, strings.Count(rest, "/")+1)
	for {
		seg, tail, more := strings.Cut(rest, "/")
		path = append(path, b.str(seg))
		if !more {
			break
		}
		rest = tail
	}
	if u.RawQuery == "" {
		return ast.NewArray(path...), ast.NewObject(), true
	}
	start := len(b.stack)
	for k, vs := range u.Query() {
		arr := make([]*ast.Term, len(vs))
		for i, v := range vs {
			arr[i] = b.str(v)
		}
		b.push(b.str(k), b.term(ast.NewArray(arr...)))
	}
	return ast.NewArray(path...), b.object(start), true
}

// maxBodyDepth is how deeply a JSON body may nest arrays and objects and
// still become parsed_body. Decoding costs grow with depth (a few KiB of
// "[[[[..." took milliseconds), and no API body needs more.
const maxBodyDepth = 64

// body is the request body as Envoy sent it, before parsing.
type body struct {
	json, form bool
	text       string // the body, or
	raw        []byte // raw_body when the body is empty
	truncated  bool
}

// requestBody finds the body and its content type. The body is truncated
// when the content-length says more was sent than Envoy buffered; as in
// opa-envoy-plugin, only JSON and form bodies are looked at.
func requestBody(headers map[string]string, text string, raw []byte) body {
	ct := headers["content-type"]
	b := body{
		json: strings.Contains(ct, "application/json"),
		form: strings.Contains(ct, "application/x-www-form-urlencoded"),
		text: text,
	}
	if !b.json && !b.form {
		return body{}
	}
	n := len(text)
	if text == "" {
		b.raw, n = raw, len(raw)
	}
	if n == 0 {
		return body{}
	}
	if cl, found := headers["content-length"]; found {
		l, err := strconv.ParseInt(cl, 10, 64)
		if err == nil && l > int64(n) {
			return body{truncated: true}
		}
	}
	return b
}

// parse parses JSON and form bodies. A truncated body, no body, or one of
// another type is null (as in opa-envoy-plugin). A malformed body, or JSON
// nested deeper than maxBodyDepth, gives ok == false: parsed_body stays
// undefined.
func (b body) parse() (v ast.Value, ok bool) {
	if !b.json && !b.form {
		return ast.NullValue, true
	}
	if b.json {
		data := b.raw
		if b.text != "" {
			data = []byte(b.text)
		}
		if !depthWithin(data, maxBodyDepth) {
			return nil, false
		}
		var x any
		if err := util.UnmarshalJSON(data, &x); err != nil {
			return nil, false
		}
		val, err := ast.InterfaceToValue(x)
		if err != nil {
			return nil, false
		}
		return val, true
	}
	text := b.text
	if text == "" {
		text = string(b.raw)
	}
	form, err := url.ParseQuery(text)
	if err != nil {
		return nil, false
	}
	obj := ast.NewObject()
	for k, vs := range form {
		arr := make([]*ast.Term, len(vs))
		for i, s := range vs {
			arr[i] = ast.StringTerm(s)
		}
		obj.Insert(ast.StringTerm(k), ast.ArrayTerm(arr...))
	}
	return obj, true
}

// depthWithin tells whether the JSON text nests arrays and objects at most
// max deep, counting brackets outside strings. It reads each byte once and
// stops at the first one too deep; it does not validate the JSON (the
// decoder does that, once the depth is known to be safe).
func depthWithin(data []byte, max int) bool {
	depth := 0
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '"':
			// Skip the string: to the next quote not escaped by an odd
			// number of backslashes.
			for {
				j := bytes.IndexByte(data[i+1:], '"')
				if j < 0 {
					return true // unterminated: the decoder refuses it
				}
				i += 1 + j
				k := i - 1
				for data[k] == '\\' {
					k--
				}
				if (i-1-k)%2 == 0 {
					break
				}
			}
		case '[', '{':
			if depth++; depth > max {
				return false
			}
		case ']', '}':
			depth--
		}
	}
	return true
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
func (b *builder) messageValue(m protoreflect.Message) ast.Value {
	if v, ok := b.wellKnown(m); ok {
		return v
	}
	return b.object(b.fields(m))
}

// fields pushes the populated fields of m and returns where they start.
// Members of nested messages are pushed and popped before the field that
// holds them is pushed, so the stack stays in order.
func (b *builder) fields(m protoreflect.Message) int {
	start := len(b.stack)
	fds := m.Descriptor().Fields()
	for i := range fds.Len() {
		fd := fds.Get(i)
		if !m.Has(fd) {
			continue
		}
		b.push(keyTerm(fd), b.term(b.fieldValue(fd, m.Get(fd))))
	}
	if m.Descriptor().ExtensionRanges().Len() > 0 {
		// proto2 extensions (only inside an Any): "[full.name]", as protojson.
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if fd.IsExtension() {
				b.push(b.str("["+string(fd.FullName())+"]"), b.term(b.fieldValue(fd, v)))
			}
			return true
		})
	}
	return start
}

func (b *builder) fieldValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) ast.Value {
	switch {
	case fd.IsList():
		l := v.List()
		arr := make([]*ast.Term, l.Len())
		for i := range arr {
			arr[i] = b.term(b.singular(fd, l.Get(i)))
		}
		return ast.NewArray(arr...)
	case fd.IsMap():
		return b.mapValue(fd.MapValue(), v.Map())
	}
	return b.singular(fd, v)
}

func (b *builder) mapValue(vd protoreflect.FieldDescriptor, m protoreflect.Map) ast.Value {
	start := len(b.stack)
	m.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
		b.push(b.str(k.String()), b.term(b.singular(vd, mv)))
		return true
	})
	return b.object(start)
}

func (b *builder) singular(fd protoreflect.FieldDescriptor, v protoreflect.Value) ast.Value {
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
		return b.messageValue(v.Message())
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
	// protojson writes numbers as encoding/json does: plain decimals, and
	// exponents only for very small or very large magnitudes (so a JWT's
	// "exp" stays an integer a policy can compare or format with %d).
	format := byte('f')
	if abs := math.Abs(f); abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	s := strconv.FormatFloat(f, format, -1, bits)
	if format == 'e' {
		// "1e-07" → "1e-7", as encoding/json writes it.
		if n := len(s); n >= 4 && s[n-4] == 'e' && s[n-3] == '-' && s[n-2] == '0' {
			s = s[:n-2] + s[n-1:]
		}
	}
	return ast.Number(s)
}

// wellKnown renders the well-known types the way protojson does.
func (b *builder) wellKnown(m protoreflect.Message) (ast.Value, bool) {
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
		return b.mapValue(fields.ByNumber(1).MapValue(), m.Get(fields.ByNumber(1)).Map()), true
	case "ListValue":
		l := m.Get(fields.ByNumber(1)).List()
		arr := make([]*ast.Term, l.Len())
		for i := range arr {
			arr[i] = b.term(b.messageValue(l.Get(i).Message()))
		}
		return ast.NewArray(arr...), true
	case "Value":
		od := m.WhichOneof(d.Oneofs().ByName("kind"))
		if od == nil {
			return ast.NullValue, true
		}
		return b.singular(od, m.Get(od)), true
	case "BoolValue", "Int32Value", "UInt32Value", "Int64Value", "UInt64Value",
		"FloatValue", "DoubleValue", "StringValue", "BytesValue":
		fd := fields.ByNumber(1)
		return b.singular(fd, m.Get(fd)), true
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
		return b.anyValue(m), true
	}
	return nil, false
}

// anyValue renders google.protobuf.Any as protojson does ({"@type": ...,
// fields...}, or {"@type": ..., "value": ...} for a well-known type other
// than Empty). A type this binary does not know, which protojson cannot
// render at all, is given with its raw bytes under "value" rather than
// failing the request.
func (b *builder) anyValue(m protoreflect.Message) ast.Value {
	fields := m.Descriptor().Fields()
	typeURL := m.Get(fields.ByNumber(1)).String()
	raw := m.Get(fields.ByNumber(2)).Bytes()
	if typeURL == "" && len(raw) == 0 {
		return ast.NewObject()
	}
	atType := ast.Item(ast.InternedTerm("@type"), b.str(typeURL))
	opaque := func() ast.Value {
		return ast.NewObject(atType, ast.Item(ast.InternedTerm("value"), b.str(base64.StdEncoding.EncodeToString(raw))))
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(typeURL)
	if err != nil {
		return opaque()
	}
	inner := mt.New()
	if err := (proto.UnmarshalOptions{AllowPartial: true}).Unmarshal(raw, inner.Interface()); err != nil {
		return opaque()
	}
	if v, ok := b.wellKnown(inner); ok && inner.Descriptor().FullName() != "google.protobuf.Empty" {
		return ast.NewObject(atType, ast.Item(ast.InternedTerm("value"), b.term(v)))
	}
	start := b.fields(inner)
	b.push(atType[0], atType[1])
	return b.object(start)
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
