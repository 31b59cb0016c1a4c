// Package envoy holds Envoy bootstrap configurations for Tollgate; its test validates them against Envoy's own schema.
package envoy
