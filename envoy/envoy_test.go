package envoy_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"

	// Every typed_config / typed_*_config "@type" in the YAML files must be
	// registered with the protobuf registry to be resolvable. Add an import
	// here when a configuration starts using a new extension.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// TestBootstraps checks every top-level *.yaml file in this folder against
// Envoy's schema: exact field names, resolvable @type URLs, protoc-gen-validate
// rules (also inside google.protobuf.Any), and no deprecated fields or enum
// values.
func TestBootstraps(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no *.yaml files found in envoy/")
	}
	for _, file := range files {
		t.Run(file, func(t *testing.T) {
			if _, err := loadBootstrap(file); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestInvalidBootstraps proves that the validation catches mistakes: each
// file in testdata/invalid must be rejected with an error that contains the
// substring on its first line, "# want: <substring>".
func TestInvalidBootstraps(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "invalid", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/invalid/*.yaml files found")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			want, err := wantedError(file)
			if err != nil {
				t.Fatal(err)
			}
			_, err = loadBootstrap(file)
			if err == nil {
				t.Fatalf("loadBootstrap(%s) succeeded, want an error containing %q", file, want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("loadBootstrap(%s) error:\n%v\nwant it to contain %q", file, err, want)
			}
		})
	}
}

// TestBootstrapValidateAllSkipsAny documents why checkAnys exists:
// Bootstrap.ValidateAll does not look inside google.protobuf.Any, so a
// typed_config that breaks its own message's rules passes it.
func TestBootstrapValidateAllSkipsAny(t *testing.T) {
	const file = "testdata/invalid/hcm-missing-stat-prefix.yaml"
	b, err := parseBootstrap(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("Bootstrap.ValidateAll() = %v; it now descends into Any, so checkAnys may be redundant", err)
	}
	if err := checkAnys(b.ProtoReflect(), "bootstrap"); err == nil {
		t.Fatal("checkAnys found no error in the typed_config without stat_prefix")
	}
}

// loadBootstrap parses file and runs every check on it.
func loadBootstrap(file string) (*bootstrapv3.Bootstrap, error) {
	b, err := parseBootstrap(file)
	if err != nil {
		return nil, err
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if err := checkAnys(b.ProtoReflect(), "bootstrap"); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if err := checkDeprecated(b.ProtoReflect(), "bootstrap"); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return b, nil
}

// parseBootstrap converts the YAML file to JSON and decodes it strictly into
// a Bootstrap: unknown fields and unresolvable @type URLs are errors.
func parseBootstrap(file string) (*bootstrapv3.Bootstrap, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	js, err := yamlToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	b := &bootstrapv3.Bootstrap{}
	opts := protojson.UnmarshalOptions{DiscardUnknown: false}
	if err := opts.Unmarshal(js, b); err != nil {
		if strings.Contains(err.Error(), "unable to resolve") {
			// Either a misspelled @type, or an extension whose Go package
			// is not imported by this test yet.
			return nil, fmt.Errorf("%s: %w (if the @type is right, blank-import its package in envoy_test.go)", file, err)
		}
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return b, nil
}

// yamlToJSON decodes a single YAML document and re-encodes it as JSON.
func yamlToJSON(data []byte) ([]byte, error) {
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); err == nil {
		return nil, errors.New("yaml: more than one document; Envoy reads only one")
	}
	v, err := jsonable(v)
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// jsonable turns the maps yaml.v3 produces into map[string]any, which
// encoding/json can marshal.
func jsonable(v any) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			c, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("yaml: map key %v (%T) is not a string", k, k)
			}
			c, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			out[ks] = c
		}
		return out, nil
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			c, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	default:
		return v, nil
	}
}

// validator is implemented by messages generated by protoc-gen-validate.
type validator interface{ ValidateAll() error }

// checkAnys walks m and, for every google.protobuf.Any in it (at any depth,
// including Anys nested in Anys), checks that its content unmarshals into a
// registered type and passes that type's ValidateAll.
func checkAnys(m protoreflect.Message, path string) error {
	if m.Descriptor().FullName() == "google.protobuf.Any" {
		a, ok := m.Interface().(*anypb.Any)
		if !ok {
			return fmt.Errorf("%s: google.protobuf.Any of unexpected Go type %T", path, m.Interface())
		}
		inner, err := anypb.UnmarshalNew(a, proto.UnmarshalOptions{})
		if err != nil {
			return fmt.Errorf("%s (%s): %w", path, a.GetTypeUrl(), err)
		}
		if v, ok := inner.(validator); ok {
			if err := v.ValidateAll(); err != nil {
				return fmt.Errorf("%s (%s): %w", path, a.GetTypeUrl(), err)
			}
		}
		return checkAnys(inner.ProtoReflect(), path+"<"+string(inner.ProtoReflect().Descriptor().FullName())+">")
	}
	return walk(m, path, checkAnys)
}

// checkDeprecated fails on any set field or enum value that Envoy's protos
// mark deprecated (Envoy warns about them, and rejects some by default, e.g.
// transport_api_version: V2). It looks inside Anys too.
func checkDeprecated(m protoreflect.Message, path string) error {
	if m.Descriptor().FullName() == "google.protobuf.Any" {
		a, ok := m.Interface().(*anypb.Any)
		if !ok {
			return nil
		}
		inner, err := anypb.UnmarshalNew(a, proto.UnmarshalOptions{})
		if err != nil {
			return fmt.Errorf("%s (%s): %w", path, a.GetTypeUrl(), err)
		}
		return checkDeprecated(inner.ProtoReflect(), path+"<"+string(inner.ProtoReflect().Descriptor().FullName())+">")
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := path + "." + string(fd.Name())
		if opts, ok := fd.Options().(*descriptorpb.FieldOptions); ok && opts.GetDeprecated() {
			err = fmt.Errorf("%s: field is deprecated", p)
			return false
		}
		if fd.Kind() == protoreflect.EnumKind {
			err = checkDeprecatedEnum(fd, v, p)
		}
		return err == nil
	})
	if err != nil {
		return err
	}
	return walk(m, path, checkDeprecated)
}

// checkDeprecatedEnum checks the enum value(s) of field fd, whose value is v.
func checkDeprecatedEnum(fd protoreflect.FieldDescriptor, v protoreflect.Value, path string) error {
	var nums []protoreflect.EnumNumber
	switch {
	case fd.IsList():
		for i := 0; i < v.List().Len(); i++ {
			nums = append(nums, v.List().Get(i).Enum())
		}
	case fd.IsMap():
		return nil // Map values that are enums do not occur in Envoy's API.
	default:
		nums = append(nums, v.Enum())
	}
	for _, n := range nums {
		ev := fd.Enum().Values().ByNumber(n)
		if ev == nil {
			continue
		}
		if opts, ok := ev.Options().(*descriptorpb.EnumValueOptions); ok && opts.GetDeprecated() {
			return fmt.Errorf("%s: enum value %s is deprecated", path, ev.Name())
		}
	}
	return nil
}

// walk calls fn on every message directly inside m: singular message fields,
// elements of repeated message fields and values of maps of messages.
func walk(m protoreflect.Message, path string, fn func(protoreflect.Message, string) error) error {
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := path + "." + string(fd.Name())
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				return true
			}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				err = fn(mv.Message(), fmt.Sprintf("%s[%q]", p, k.String()))
				return err == nil
			})
		case fd.IsList():
			if fd.Message() == nil {
				return true
			}
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				err = fn(l.Get(i).Message(), fmt.Sprintf("%s[%d]", p, i))
			}
		case fd.Message() != nil:
			err = fn(v.Message(), p)
		}
		return err == nil
	})
	return err
}

// wantedError reads the "# want: <substring>" comment on the first line of
// file.
func wantedError(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	if !s.Scan() {
		return "", fmt.Errorf("%s: empty file; want a first line \"# want: <substring>\"", file)
	}
	want, ok := strings.CutPrefix(s.Text(), "# want:")
	want = strings.TrimSpace(want)
	if !ok || want == "" {
		return "", fmt.Errorf("%s: first line is %q; want \"# want: <substring>\"", file, s.Text())
	}
	return want, nil
}
