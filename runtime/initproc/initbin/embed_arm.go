//go:build tender_small_init && arm

package initbin

import _ "embed"

//go:embed blob/init-arm.gz
var blob []byte

//go:embed blob/init-arm.sha256
var sum string
