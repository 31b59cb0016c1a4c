package yamlstrict

import (
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Positions maps the path of each value Decode read ("store.redis.addrs",
// "store.redis.addrs[0]", "xds.fleets.edge") to its node, so that checks
// made after decoding can name the line of what they refuse.
type Positions map[string]*yaml.Node

// Of returns the node of path or, when the file does not set it, of its
// nearest ancestor that the file sets; nil when there is none.
func (p Positions) Of(path string) *yaml.Node {
	for {
		if n := p[path]; n != nil {
			return n
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return nil
		}
		path = path[:i]
	}
}

// Decode fills the value that out points to from n: a struct by its
// fields' yaml tags (the allowed keys of its mapping), strings, booleans,
// integers, pointers (null leaves them nil), slices (an empty list leaves
// them nil), maps of strings to strings, and types that implement
// yaml.Unmarshaler (their error is recorded at the node), and Durations.
// It returns where
// each value it read stands.
func (d *Decoder) Decode(n *yaml.Node, out any) Positions {
	pos := Positions{}
	d.decode(n, reflect.ValueOf(out).Elem(), "", pos)
	return pos
}

// DecodeDocument decodes data, one YAML document, into the struct that out
// points to (see Decode); an empty document leaves it as it is.
func (d *Decoder) DecodeDocument(data []byte, out any) Positions {
	keys, _ := structKeys(reflect.TypeOf(out).Elem())
	root := d.Document(data, keys.allowed, true)
	if root == nil {
		return Positions{}
	}
	return d.Decode(root, out)
}

// structKeys returns the keys of a struct type's mapping, from its fields'
// yaml tags, and the index of each key's field.
func structKeys(t reflect.Type) (*Keys, map[string]int) {
	index := map[string]int{}
	var names []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" && t.Field(i).IsExported() {
			index[name] = i
			names = append(names, name)
		}
	}
	return NewKeys(names...), index
}

// Duration is a time.Duration that Decode reads with Decoder.Duration: a
// Go duration such as 10s or 500ms, 0 (or null) for the default.
type Duration time.Duration

var (
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
	durationType    = reflect.TypeFor[Duration]()
)

func (d *Decoder) decode(n *yaml.Node, v reflect.Value, path string, pos Positions) {
	n = deref(n)
	what := path
	if path == "" {
		what = "the file"
	} else {
		pos[path] = n
	}
	if v.Type() == durationType {
		if IsNull(n) {
			return
		}
		if t, ok := d.Duration(n, what, "the default"); ok {
			v.SetInt(int64(t))
		}
		return
	}
	if v.Kind() != reflect.Pointer && v.Addr().Type().Implements(unmarshalerType) {
		if IsNull(n) {
			return
		}
		if err := v.Addr().Interface().(yaml.Unmarshaler).UnmarshalYAML(n); err != nil {
			d.Errorf(n, "%s: %v", what, err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if IsNull(n) {
			v.SetZero()
			return
		}
		p := reflect.New(v.Type().Elem())
		if p.Elem().Type() == durationType { // optional: set, 0s means none
			t, ok := d.Duration(n, what, "none")
			if !ok {
				return
			}
			p.Elem().SetInt(int64(t))
		} else {
			d.decode(n, p.Elem(), path, pos)
		}
		v.Set(p)
	case reflect.Struct:
		keys, index := structKeys(v.Type())
		keys.in = what
		if path == "" {
			keys.in = "the top level"
		}
		d.Mapping(n, what, keys, func(key string, _, val *yaml.Node) {
			d.decode(val, v.Field(index[key]), join(path, key), pos)
		})
	case reflect.String:
		if s, ok := d.String(n, what); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		if b, ok := d.Bool(n, what); ok {
			v.SetBool(b)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		bits := v.Type().Bits()
		if i, ok := d.integer(n, what, int64(-1)<<(bits-1), int64(1)<<(bits-1)-1); ok {
			v.SetInt(i)
		}
	case reflect.Float32, reflect.Float64:
		if f, ok := d.Float(n, what); ok {
			v.SetFloat(f)
		}
	case reflect.Slice:
		allowed := "a list"
		if v.Type().Elem().Kind() == reflect.String {
			allowed = "a list of strings"
		}
		items := d.List(n, what, allowed)
		if len(items) == 0 {
			v.SetZero()
			return
		}
		s := reflect.MakeSlice(v.Type(), len(items), len(items))
		for i, item := range items {
			d.decode(item, s.Index(i), path+"["+strconv.Itoa(i)+"]", pos)
		}
		v.Set(s)
	case reflect.Map:
		t := v.Type()
		if t.Key().Kind() != reflect.String || t.Elem().Kind() != reflect.String {
			d.Errorf(n, "%s: cannot decode into %s", what, t)
			return
		}
		v.SetZero()
		d.StringMap(n, what, "a mapping of names to strings", func(k *yaml.Node, key, val string) {
			if v.IsNil() {
				v.Set(reflect.MakeMap(t))
			}
			v.SetMapIndex(reflect.ValueOf(key).Convert(t.Key()), reflect.ValueOf(val).Convert(t.Elem()))
			pos[path+"."+key] = k
		})
	default:
		d.Errorf(n, "%s: cannot decode into %s", what, v.Type())
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// wholeNumber describes the range lo to hi for messages.
func wholeNumber(lo, hi int64) string {
	if lo == math.MinInt64 && hi == math.MaxInt64 {
		return "a whole number"
	}
	return "a whole number from " + strconv.FormatInt(lo, 10) + " to " + strconv.FormatInt(hi, 10)
}
