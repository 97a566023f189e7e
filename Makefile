# Tender — build, test and run. Everything builds with CGO_ENABLED=0.
GO       ?= go
BUILD    := build
VERSION  := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
GOFLAGS_ := -trimpath -ldflags "$(LDFLAGS)"
SMALLINIT_TAG := tender_small_init
# The agent's own flags (issue 15: its size). nethttpomithttp2: net/http
# without HTTP/2 (-0.53 MB): the agent's HTTP peers (registries, the
# controller's enrollment) all speak HTTP/1.1, and MQTT is not HTTP.
AGENT_TAGS := nethttpomithttp2,$(SMALLINIT_TAG)
# No inlining (-l) outside the packages a start or a pull spends its time
# in (-1.22 MB, 8.7 %): the runtime, byte and string primitives,
# decompression, tar and hashing keep it. Measured on this VM: `version`
# starts alike, `run --rm` costs 0-5 % more CPU (within the noise), a
# 31 MB load 1 % more; -l on the runtime as well would cost 8-16 %.
AGENT_INLINED := runtime internal/bytealg bytes strings bufio io compress/... archive/tar \
	hash/... crypto/sha256 crypto/internal/fips140/sha256
AGENT_GCFLAGS := -gcflags=all=-l $(foreach p,$(AGENT_INLINED),-gcflags=$(p)=)
AGENT_FLAGS := $(GOFLAGS_) -tags $(AGENT_TAGS) $(AGENT_GCFLAGS)
SOURCES  := $(shell find . -name '*.go' -not -path './build/*') go.mod go.sum
RUN_ROOT ?= /var/lib/tender
export CGO_ENABLED := 0
# The agent embeds the container's small init (cmd/tender-init, issue 15):
# MKINIT builds it for the GOARCHes given into runtime/initproc/initbin/blob/
# (gitignored), and SMALLINIT_TAG (in AGENT_TAGS) makes the agent embed it. Every build of the
# agent below runs MKINIT for its architecture first, so that a stale init
# cannot ship; a plain `go build` without the tag re-executes the agent
# itself as the init.
MKINIT     := GO=$(GO) ./runtime/initproc/initbin/mkblob.sh

.PHONY: all build initblob cross release packages sums testimage test vet fmt-check run demo-agent bench bench-fleet bench-console size deps clean \
	vm-deps vmtest vmtest-initramfs vmtest-powercut

all: build

build: $(BUILD)/tender-agent $(BUILD)/tender

$(BUILD)/tender-agent: $(SOURCES)
	@mkdir -p $(BUILD)
	$(MKINIT) $$($(GO) env GOARCH)
	$(GO) build $(AGENT_FLAGS) -o $@ ./cmd/tender-agent

# The small init for this machine's architecture (what go vet and go test
# with the small init's tag need).
initblob:
	$(MKINIT) $$($(GO) env GOARCH)

# The fleet controller and its CLI: a binary of its own, so the agent stays small.
$(BUILD)/tender: $(SOURCES)
	@mkdir -p $(BUILD)
	$(GO) build $(GOFLAGS_) -o $@ ./cmd/tender

# Static agents for the gateways' architectures: build/tender-agent-linux-ARCH.
CROSS := amd64 arm64 arm riscv64
cross:
	@mkdir -p $(BUILD)
	for a in $(CROSS); do $(MKINIT) $$a && GOARCH=$$a GOARM=7 $(GO) build $(AGENT_FLAGS) -o $(BUILD)/tender-agent-linux-$$a ./cmd/tender-agent || exit 1; done
	@ls -l $(BUILD)/tender-agent-linux-*

# A release: stripped static binaries of both programs for every
# architecture, build/release/PROG-linux-ARCH (PROG tender-agent or tender,
# ARCH amd64, arm64, armv7 or riscv64), with what packaging/install.sh
# installs beside them, and build/release/SHA256SUMS over all of it.
RELEASE        := $(BUILD)/release
RELEASE_ARCHES := amd64 arm64 armv7 riscv64
RELEASE_FILES  := packaging/install.sh packaging/systemd/tender-agent.service \
	packaging/systemd/tender-controller.service packaging/openwrt/tender-agent.init \
	packaging/openwrt/tender-agent.uci packaging/etc/agent.yaml configs/policy.yaml
release:
	@mkdir -p $(RELEASE)
	@for a in $(RELEASE_ARCHES); do \
		ga=$$a; if [ $$a = armv7 ]; then ga=arm; fi; \
		$(MKINIT) $$ga || exit 1; \
		for p in tender-agent tender; do \
			echo "go build $(RELEASE)/$$p-linux-$$a"; \
			if [ $$p = tender-agent ]; then \
				GOOS=linux GOARCH=$$ga GOARM=7 $(GO) build $(AGENT_FLAGS) -o $(RELEASE)/$$p-linux-$$a ./cmd/$$p || exit 1; \
			else \
				GOOS=linux GOARCH=$$ga GOARM=7 $(GO) build $(GOFLAGS_) -o $(RELEASE)/$$p-linux-$$a ./cmd/$$p || exit 1; \
			fi; \
		done; \
	done
	@cp $(RELEASE_FILES) $(RELEASE)/
	@$(MAKE) -s sums

# Packages of the release binaries (packaging/, nfpm): tender-agent as
# .deb .rpm .apk .ipk, tender (the controller) as .deb .rpm .apk, per
# architecture, into build/release/, with SHA256SUMS updated.
packages: release
	@rm -f $(RELEASE)/*.deb $(RELEASE)/*.rpm $(RELEASE)/*.apk $(RELEASE)/*.ipk
	$(GO) run ./packaging/cmd/mkpkg -version $(VERSION) -time $$(git log -1 --format=%ct 2>/dev/null || date +%s) \
		-bin $(RELEASE) -out $(RELEASE)
	@$(MAKE) -s sums

sums:
	@cd $(RELEASE) && ls | grep -v -e '^SHA256SUMS' -e '\.tmp$$' | xargs sha256sum >SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS
	@echo "$(RELEASE)/SHA256SUMS: $$(wc -l <$(RELEASE)/SHA256SUMS) files"

$(BUILD)/workload: $(wildcard test/workload/*.go)
	@mkdir -p $(BUILD)
	$(GO) build -trimpath -ldflags "-s -w" -o $@ ./test/workload

# The test image: an OCI archive of the static workload program; and the
# same for every guest of make vmtest, one multi-arch OCI index of the
# workload built for each arch (an agent loads its own platform's).
testimage: $(BUILD)/testimage.tar $(BUILD)/testimage-multiarch.tar
$(BUILD)/testimage.tar: $(BUILD)/workload $(wildcard test/mkimage/*.go test/ociarchive/*.go)
	$(GO) run ./test/mkimage -bin $(BUILD)/workload -o $@

$(BUILD)/workload-linux-%: $(wildcard test/workload/*.go)
	@mkdir -p $(BUILD)
	GOARCH=$* GOARM=7 $(GO) build -trimpath -ldflags "-s -w" -o $@ ./test/workload

MULTIARCH := amd64 arm64 arm/v7
$(BUILD)/testimage-multiarch.tar: $(foreach a,$(MULTIARCH),$(BUILD)/workload-linux-$(firstword $(subst /, ,$(a)))) \
		$(wildcard test/mkimage/*.go test/ociarchive/*.go)
	$(GO) run ./test/mkimage -o $@ $(foreach a,$(MULTIARCH),-bin $(a)=$(BUILD)/workload-linux-$(firstword $(subst /, ,$(a))))

# A static busybox for the distribution-like image of test/e2e, taken from
# Debian's busybox-static package without installing it (it would replace
# the system's busybox).
$(BUILD)/busybox:
	@mkdir -p $(BUILD)/bbx
	cd $(BUILD)/bbx && (apt-get download busybox-static >/dev/null 2>&1 || (apt-get update -qq && apt-get download busybox-static))
	dpkg-deb -x $(BUILD)/bbx/busybox-static_*.deb $(BUILD)/bbx/root
	cp $(BUILD)/bbx/root/bin/busybox $@
	rm -rf $(BUILD)/bbx

# Debian packages the tests and benchmarks use, installed only when missing
# (rpm, shellcheck and systemd for packaging/: rpm -qip, shellcheck,
# systemd-analyze verify; chromium for the console's browser tests;
# etcd-server for fleet/store/etcdstore: the tests run their own members on
# loopback ports, never a system etcd).
DEB_PKGS := crun runc docker-registry skopeo umoci time curl mosquitto rpm shellcheck systemd chromium etcd-server nftables iproute2
deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

vet: initblob
	$(GO) vet ./...
	$(GO) vet -tags $(SMALLINIT_TAG) ./runtime/... ./cmd/...
	GOARCH=arm64 $(GO) vet ./runtime/... ./cmd/...

fmt-check:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$bad" ]; then echo "gofmt needed on:"; echo "$$bad"; exit 1; fi

# The whole suite, as CI runs it (as root: real containers, real cgroups),
# then the emulated cgroup v2 guests of vmtest. The tests are built with
# the small init as the agent is, and TENDER_REQUIRE_SMALL_INIT=1 makes
# runtime/initproc fail unless containers really run it.
test: deps build testimage $(BUILD)/busybox fmt-check vet
	TENDER_AGENT=$(CURDIR)/$(BUILD)/tender-agent TENDER_BIN=$(CURDIR)/$(BUILD)/tender TENDER_TESTIMAGE=$(CURDIR)/$(BUILD)/testimage.tar \
	TENDER_BUSYBOX=$(CURDIR)/$(BUILD)/busybox TENDER_REQUIRE_SMALL_INIT=1 \
		$(GO) test -tags $(SMALLINIT_TAG) -count=1 -timeout 25m ./...
	$(GO) test -run '^$$' -fuzz=FuzzDecodeDesired -fuzztime=15s ./sync/wire
	$(MAKE) vmtest

# The agent in emulated guests (qemu without KVM, Debian's kernels, cgroup
# v2 only): amd64, arm64 and armv7. Each boots an initramfs of the agent,
# the test image, busybox and the test binaries built for its arch, runs
# tender-agent check and the tests of test/vm/tests.list, and reports over
# its serial console. Kernels and busybox are cached under build/vm/.
VM_GUESTS ?= amd64 arm64 armv7
VM_PKGS := qemu-system-x86 qemu-system-arm cpio e2fsprogs
vm-deps:
	@missing=""; for p in $(VM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

vmtest: vm-deps $(BUILD)/testimage-multiarch.tar
	GO=$(GO) BUILD=$(BUILD) ./test/vm/vmtest.sh $(VM_GUESTS)

# Reboots and power cuts (long; not part of make test): an amd64 guest
# whose agent keeps its state on a virtio disk; a clean reboot, then
# POWERCUT_ROUNDS kills of qemu with SIGKILL at seeded random moments of an
# update; after each the agent must run a version it was told.
POWERCUT_ROUNDS ?= 20
POWERCUT_SEED ?= 20261130
vmtest-powercut: vm-deps $(BUILD)/testimage-multiarch.tar
	GO=$(GO) BUILD=$(BUILD) ./test/vm/powercut.sh $(POWERCUT_ROUNDS) $(POWERCUT_SEED)

# The guests staying on their initramfs root (run-from-RAM devices): the
# runtime must fall back from pivot_root, which rootfs refuses.
vmtest-initramfs: vm-deps $(BUILD)/testimage-multiarch.tar
	GO=$(GO) BUILD=$(BUILD) ./test/vm/vmtest.sh --initramfs-root $(VM_GUESTS)

# The main job: tender serve with its embedded broker and store, a local
# registry with the demo image, a tender-agent daemon enrolled with a join
# token, the demo app applied and a second version rolled out in waves.
# Everything lives under build/run/ and keeps running; build/run/stop.sh
# stops it. `make demo-agent` is the agent alone (containers under limits).
run: deps build testimage
	@./test/demo-fleet.sh

demo-agent: build testimage
	@./test/demo.sh $(BUILD)/tender-agent $(BUILD)/testimage.tar $(RUN_ROOT)

bench: deps build testimage
	./test/bench/start.sh
	./test/bench/pull.sh

# The fleet benchmark (issue 10): tender serve and FLEET_N simulated
# devices (default 10,000) enrolled, connected over mutual TLS and rolled
# out to in waves; FLEET_BROKERS="serve mochi mosquitto"
# for more. Minutes long, not part of `make test`.
FLEET_N ?= 10000
bench-fleet: deps build testimage
	./test/bench/fleet.sh $(FLEET_N)

# The console's overview with CONSOLE_N simulated devices (default 10,000)
# in headless Chromium: load and interactive times from the Performance API,
# in the test log (issue 12). A few minutes, not part of `make test`.
CONSOLE_N ?= 10000
bench-console: deps build
	TENDER_BIN=$(CURDIR)/$(BUILD)/tender TENDER_CONSOLE_DEVICES=$(CONSOLE_N) \
		$(GO) test -count=1 -timeout 30m -run 'TestConsole_Bench' -v ./test/console/

# Stripped size per architecture, what weighs most in it, and whether the
# linker can drop unused methods (a report; it never fails on a size).
size:
	./test/bench/size.sh

clean:
	rm -rf $(BUILD)
