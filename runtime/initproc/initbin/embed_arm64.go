//go:build tender_small_init && arm64

package initbin

import _ "embed"

//go:embed blob/init-arm64.gz
var blob []byte

//go:embed blob/init-arm64.sha256
var sum string
