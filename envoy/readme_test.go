package envoy_test

import (
	"os"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tollgate-dev/tollgate/internal/envoyschema"
)

// TestREADMEMutualTLSCluster: the README's cluster for a Tollgate serving
// mutual TLS decodes strictly into Envoy's Cluster, passes its validation
// and presents a client certificate.
func TestREADMEMutualTLSCluster(t *testing.T) {
	doc, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(doc), "<!-- envoy-mtls-cluster -->\n```yaml\n")
	block, _, closed := strings.Cut(after, "```")
	if !ok || !closed {
		t.Fatal("README.md has no ```yaml block after <!-- envoy-mtls-cluster -->")
	}
	js, err := yamlToJSON([]byte(block))
	if err != nil {
		t.Fatal(err)
	}
	c := &clusterv3.Cluster{}
	if err := protojson.Unmarshal(js, c); err != nil {
		t.Fatalf("README cluster: %v (if the @type is right, blank-import its package)", err)
	}
	if err := c.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	if err := envoyschema.CheckAnys(c.ProtoReflect(), "cluster"); err != nil {
		t.Fatal(err)
	}
	up := &tlsv3.UpstreamTlsContext{}
	if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(up); err != nil {
		t.Fatalf("transport_socket: %v", err)
	}
	if len(up.GetCommonTlsContext().GetTlsCertificates()) == 0 || up.GetCommonTlsContext().GetValidationContext().GetTrustedCa() == nil {
		t.Error("the README cluster presents no client certificate or trusts no CA")
	}
}
