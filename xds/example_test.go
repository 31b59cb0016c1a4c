package xds_test

import (
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/tollgate-dev/tollgate/xds"
)

func ExampleBuild() {
	f, err := xds.Parse("routes.yaml", []byte(`
listeners:
  - name: public
    address: 0.0.0.0:8080
    virtual_hosts:
      - name: api
        domains: ["api.example.com"]
        routes:
          - name: invoices
            match: {prefix: /v1/invoices}
            cluster: invoices
            tollgate:
              context_extensions: {price: "2"}
              rate_limits:
                - [{request_headers: {header: x-tollgate-consumer, key: consumer}}]
clusters:
  - name: invoices
    endpoints: ["10.0.0.5:8080"]
grpc_services:
  - name: payments.example
    cluster: invoices
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	r, err := xds.Build(f, "tollgate")
	if err != nil {
		fmt.Println(err)
		return
	}
	snap, err := r.Snapshot()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, typ := range []resource.Type{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
		names := []string{}
		for _, l := range []string{"public", "payments.example", "invoices", "tollgate"} {
			if _, ok := snap.GetResources(typ)[l]; ok {
				names = append(names, l)
			}
		}
		fmt.Println(typ[len(resource.APITypePrefix):], names)
	}
	// Output:
	// envoy.config.listener.v3.Listener [public payments.example]
	// envoy.config.route.v3.RouteConfiguration [public]
	// envoy.config.cluster.v3.Cluster [invoices tollgate]
	// envoy.config.endpoint.v3.ClusterLoadAssignment [invoices]
}

func ExampleParse_errors() {
	_, err := xds.Parse("routes.yaml", []byte(`listeners:
  - name: public
    address: 0.0.0.0:8080
    virtual_hosts:
      - name: api
        domains: ["api.example.com"]
        routes:
          - match: {prefix: /v1/invoices}
            cluster: invoice
            timeout: 15
clusters:
  - name: invoices
    endpoints: ["10.0.0.5:8080", "invoices.internal:8080"]
`))
	fmt.Println(err)
	// Output:
	// routes.yaml:9: listener "public": virtual host "api": route at line 8: cluster "invoice" is not defined (defined: invoices); did you mean "invoices"?
	// routes.yaml:10: timeout "15" is not a duration (allowed: a duration such as 200ms, 15s or 1m, or 0s for none)
	// routes.yaml:13: cluster "invoices": endpoint "invoices.internal:8080" mixes IP addresses (line 13) and DNS names (line 13) (allowed: a list of host:port, all IP addresses (served over EDS) or all DNS names (STRICT_DNS); split them into two clusters)
}
