//go:build tender_small_init && !(amd64 || arm64 || arm || riscv64)

package initbin

// The small init is built for amd64, arm64, arm and riscv64 only: build
// without the tender_small_init tag for other architectures (the runtime
// then re-executes its own binary).
var blob, sum = tender_small_init_is_not_built_for_this_architecture, ""
