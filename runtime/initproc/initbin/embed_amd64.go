//go:build tender_small_init && amd64

package initbin

import _ "embed"

//go:embed blob/init-amd64.gz
var blob []byte

//go:embed blob/init-amd64.sha256
var sum string
