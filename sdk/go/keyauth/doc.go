// Package keyauth lets a Go product authenticate the API keys its callers
// present (Authorization: Bearer bp_…) through tenant-registry, in one
// call, with an in-process cache that stays coherent with the registry.
//
// A Verifier asks the registry's VerifyApiKey about each key it has not
// seen, and caches the answer. Verifier.Run watches the registry's change
// stream (ChangeService.WatchChanges) and drops cached answers as keys are
// revoked or rotated, tenants frozen or activated, entitlements granted or
// revoked. The cache answers only while the stream's heartbeats vouch that
// what it knows is at most Config.MaxStaleness old (750 ms by default, at
// most 1 s): while the stream is down or silent every request asks the
// registry, and when the registry cannot answer either the request is
// refused with 503, never let in on a stale answer. So a key revoked at
// time T is refused here from T + 1 s at the latest.
//
// Middleware (net/http) and Interceptor (connect-go handlers) answer like
// this: 401 for a missing or bad key, 403 for a good key without the
// required scopes or product, 503 when the registry cannot be asked; the
// caller's Identity is in the request's context (FromContext).
//
// The package depends on connect, protobuf and the registry's generated
// code only.
package keyauth
