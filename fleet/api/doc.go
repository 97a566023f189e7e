// Package api is the fleet controller's HTTP API: JSON under /v1 over
// HTTPS, bearer tokens (admin and read-only, stored hashed), Prometheus
// metrics at /metrics, /healthz, and its OpenAPI description at
// /v1/openapi.json. It reaches the controller through the Controller
// interface it defines; the types it speaks (DeviceView, AppView, ...)
// are the CLI's and the console's too.
package api
