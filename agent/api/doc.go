// Package api is the agent's local API: HTTP with JSON over a unix socket
// (a path, mode 0600, in a 0700 directory: root only). The CLI uses it
// while the daemon runs, because the daemon holds the image store open.
//
// The server reaches the agent through the Agent and Images interfaces it
// defines. Errors travel as a category (containerd/errdefs) and a message;
// the client turns them back into errors of the same category, so callers
// on either side of the socket branch alike with errdefs.IsX.
package api
