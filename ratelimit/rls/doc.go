// Package rls is Tollgate's rate limit service
// (envoy.service.ratelimit.v3.RateLimitService), an adapter over the limit
// engine: a drop-in for envoyproxy/ratelimit. Server answers
// ShouldRateLimit; NewFiles loads envoyproxy/ratelimit configuration files
// (package rlsconfig) into it and reloads them; RegoSource adds plan-aware
// limits per descriptor from a Rego decision in the decision contract's
// vocabulary (policies/decision).
package rls
