package wire

// The reservation a Check made for a charge settled on delivery travels
// from ext_authz to the access log in Envoy's dynamic metadata:
// CheckResponse.dynamic_metadata, which Envoy stores under
// MetadataNamespace and copies into each access log entry
// (common_properties.metadata.filter_metadata).
const (
	// MetadataNamespace is where Envoy keeps ext_authz's dynamic metadata.
	MetadataNamespace = "envoy.filters.http.ext_authz"
	// MetadataKey holds {"account", "reservation", "settle"}.
	MetadataKey = "tollgate"
	// The fields of MetadataKey's object.
	MetadataAccount     = "account"
	MetadataReservation = "reservation"
	MetadataSettle      = "settle"
)
