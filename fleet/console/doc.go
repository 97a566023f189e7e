// Package console is the fleet's web console (issue 12): server-rendered
// pages (html/template) over the api.Controller the API serves, mounted by
// fleet/api at /ui/ on the same port, with the same API tokens.
//
// # Sign-in and sessions
//
//	GET /ui/...  ──► session cookie? ── no ──► 401 + the sign-in form (nothing of the fleet)
//	                     │ yes
//	                     ▼
//	   session known, not expired, its token still valid (api.LookupToken,
//	   at every request: a revoked token ends the session there)
//	                     │ ── no ──► session dropped, 401 + sign-in form
//	                     ▼
//	   page, rendered with the token's role: a read-only token sees
//	   everything and no control that changes the fleet
//
// Signing in posts an API token (admin or read-only); the console keeps a
// server-side session: a random id in a __Host- cookie (HttpOnly, Secure,
// SameSite=Strict), and in the fleet store (store.Sessions) the id's
// sha256, the token's hash and an expiry. The token and the id are kept
// nowhere; the CSRF token is another hash of the id. So every controller
// on one store (etcd, behind a load balancer) takes a session begun at
// any of them, and a sign-out at one (the record deleted) ends it at all
// from their next request. While the store does not answer (no quorum), a
// session the store confirmed at this controller within SessionCacheTTL
// (30 s, tender serve's --token-cache-ttl) is still taken, as API tokens
// are (api.TokenCache); sign-in and sign-out need the store.
//
// # Requests that change something
//
// Every POST (sign-in and sign-out included) carries a CSRF token in the
// form: the session's, or, for sign-in, a random value that must equal a
// short-lived cookie of its own. A POST without it, with a wrong one, or
// from another site (Origin, Sec-Fetch-Site) is refused with 403 before
// anything else happens; writes need an admin token (403 otherwise),
// whatever the page showed. Actions that change the fleet (rollout pause,
// resume, abort, undo, applying an older revision, restarting an app) go
// through a confirmation page that says what will happen; changes reach
// the audit log through the controller with the token's name and the
// client's address.
//
// # What the browser may run
//
// Every answer carries a Content-Security-Policy that allows scripts,
// styles, images and fetches from the console itself only (no inline
// script or style: bars are <meter> elements and width classes), forbids
// framing (frame-ancestors 'none', X-Frame-Options DENY) and sends the
// referrer to the console only. Device-supplied strings (versions, labels, messages, log
// lines) are escaped by html/template and have their control characters
// shown as escapes (internal/termsafe), so a `<script>` or a terminal
// escape reads as text.
//
// # Live updates and large fleets
//
// console.js polls a fragment of the page (an element's data-live URL)
// every few seconds while the tab is visible and swaps it in; without
// JavaScript the pages work and show the state as of their load. The
// overview reads the whole fleet once per snapshot (at most every
// SnapshotTTL, shared by all requests), aggregates on the server
// (online/offline and health per label value, versions per app) and
// sends one page of devices (PageSize) at a time.
package console
