//go:build tender_small_init && riscv64

package initbin

import _ "embed"

//go:embed blob/init-riscv64.gz
var blob []byte

//go:embed blob/init-riscv64.sha256
var sum string
