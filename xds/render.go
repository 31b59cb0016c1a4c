package xds

import (
	"bytes"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
)

// Render returns the resources as indented JSON, for people and golden
// files: {"version": ..., "resources": [...]}. Each resource is protojson
// with Envoy's field names (as in its config_dump) and its "@type"; the
// resources are sorted by type URL and name, object keys are sorted. The
// same resources always render the same bytes.
func Render(r *Resources) ([]byte, error) {
	version, err := r.Version()
	if err != nil {
		return nil, err
	}
	doc := struct {
		Version   string `json:"version"`
		Resources []any  `json:"resources"`
	}{Version: version, Resources: []any{}}
	for _, t := range r.all() {
		a, err := anypb.New(t.msg)
		if err != nil {
			return nil, fmt.Errorf("render %s %q: %w", t.typeURL, t.name, err)
		}
		// protojson's spacing is deliberately unstable; re-encode it.
		js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(a)
		if err != nil {
			return nil, fmt.Errorf("render %s %q: %w", t.typeURL, t.name, err)
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("render %s %q: %w", t.typeURL, t.name, err)
		}
		doc.Resources = append(doc.Resources, v)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("render: %w", err)
	}
	return buf.Bytes(), nil
}
