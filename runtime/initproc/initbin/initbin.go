// Package initbin holds the container's small init, cmd/tender-init,
// compressed, for the runtime to exec instead of re-executing the whole
// agent (issue 15): a 2.5 MiB static program starts in a third of the time
// the agent takes.
//
// It is embedded only in binaries built with the tender_small_init tag, from
// blob/init-GOARCH.gz and blob/init-GOARCH.sha256, which mkblob.sh writes
// (the Makefile runs it before every build of the agent, so that a stale
// init cannot ship). Without the tag, Blob is nil and the runtime re-executes
// its own binary as the init, as before; a plain `go build` or `go test`
// works on a fresh checkout where the blob has never been built.
package initbin

import (
	"encoding/binary"
	"encoding/hex"
	"strings"
)

// Blob is the gzip-compressed init for this binary's architecture, or nil.
func Blob() []byte { return blob }

// Sum is the sha256 of the uncompressed init: 64 hex digits, or "" when
// there is no blob or its checksum file is malformed.
func Sum() string {
	s := strings.TrimSpace(sum)
	if len(s) != 64 {
		return ""
	}
	if _, err := hex.DecodeString(s); err != nil {
		return ""
	}
	return s
}

// Size is the uncompressed init's size from the gzip trailer (ISIZE, the
// size modulo 2^32: an init is far smaller), or 0 without a blob.
func Size() int64 {
	if len(blob) < 18 {
		return 0
	}
	return int64(binary.LittleEndian.Uint32(blob[len(blob)-4:]))
}
