// Package api is the fleet controller's HTTP API: JSON under /v1 over
// HTTPS, bearer tokens (admin and read-only, stored hashed), Prometheus
// metrics at /metrics, /healthz, and its OpenAPI description at
// /v1/openapi.json. It reaches the controller through the Controller
// interface it defines; the types it speaks (DeviceView, AppView, ...)
// are the CLI's and the console's too. Client is its Go client, which
// the tender CLI uses.
//
// Routes (openapi.json describes them; a test keeps the two equal):
//
//	GET    /healthz                           no token
//	GET    /v1/openapi.json                   no token
//	POST   /v1/enroll                         no token: the join token (Config.Enroll)
//	GET    /metrics                           any token (none with Config.MetricsOpen)
//	GET    /v1/devices?selector=k=v,k2=v2     read
//	GET    /v1/devices/{id}                   read
//	PATCH  /v1/devices/{id}                   admin  LabelRequest
//	DELETE /v1/devices/{id}                   admin
//	POST   /v1/devices/{id}/logs              read   LogsRequest (a command to the device)
//	POST   /v1/devices/{id}/restart           admin  RestartRequest
//	POST   /v1/tokens                         admin  JoinTokenRequest → 201
//	POST   /v1/api-tokens                     admin  APITokenRequest → 201, the value once
//	GET    /v1/api-tokens                     read   names, roles, dates: no value, no hash
//	DELETE /v1/api-tokens/{name}              admin  not the last admin token (412)
//	POST   /v1/apps                           admin  the spec, YAML or JSON, ≤ 1 MiB
//	GET    /v1/apps                           read
//	GET    /v1/apps/{app}                     read
//	DELETE /v1/apps/{app}                     admin
//	GET    /v1/apps/{app}/history             read
//	GET    /v1/apps/{app}/explain?device=     read
//	GET    /v1/apps/{app}/rollout             read
//	POST   /v1/apps/{app}/rollout/{command}   admin  pause, resume, abort, undo
//	GET    /v1/events?device=&app=&kind=&after=&limit=   read
//	GET    /v1/audit?after=&limit=            read
//	GET    /v1/status                         read
//
// Authentication (SECURITY.md F-01..F-03): the bearer token's hex sha256
// is looked up in store.APITokens. A missing, unknown or revoked token is
// answered 401 with one fixed message that says nothing of the fleet and
// which of the three it was, and counted in
// tender_api_auth_failures_total{reason}; a read-only token on an admin
// route is answered 403 before the controller is asked. Token values are
// never logged. Every route hands the controller the Caller (the token's
// name and role, the remote address) for the audit log.
//
// Errors are {"kind","error"}: the errdefs category, mapped to the HTTP
// status by the one table in errors.go, and the message. Client turns
// them back into the categories, and a controller that does not answer
// into ErrUnreachable. Bodies are capped (MaxSpecBytes for a spec,
// MaxBodyBytes otherwise: 413); JSON bodies refuse unknown fields.
//
// Reads without a quorum: every GET is made with store.WithStaleReads,
// after the token was checked (token lookups never read stale). A store
// that answered it without its quorum (etcd: a serializable read of a
// member still up; or the controller's last view) marks it, and the
// answer carries StaleHeader ("Tender-Stale: no quorum; as of revision
// N") and, in status, a device and a rollout, the same text in "stale";
// Client hands it to ClientConfig.OnStale. Writes carry no such mark and
// fail as unavailable (503).
//
// Metrics: the API counts requests by route and code and refused tokens;
// Server.Metrics gives the controller the gauges, counters and histogram
// it feeds (devices online, rollouts by phase, reports and events
// ingested, publish latency).
package api
