# Kestrel — entry points. `make demo` runs the main job, `make test` the tests.
SHELL := /bin/bash
CARGO ?= cargo
export KESTREL_MODEL_DIR ?= /var/cache/kestrel/models
# one profile for everything: tests, e2e and the demo reuse the same binaries
PROFILE := --release

.PHONY: deps build test lint fmt bench bench-k8s demo e2e e2e-k8s e2e-k8s-api e2e-k8s-node scenarios model vmlinux crds clean fuzz soak images helm-lint

deps:
	@scripts/deps.sh

model:
	@scripts/fetch-model.sh

build: deps
	$(CARGO) build $(PROFILE) --workspace --bins

lint:
	scripts/check-deps.sh
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy $(PROFILE) --workspace --all-targets -- -D warnings

# Unit, property, integration and privileged (BPF, runc) tests, then the
# scenario suite on the same release binaries. Each stage prints its time.
test: deps
	@scripts/stage.sh lint $(MAKE) --no-print-directory lint
	@scripts/stage.sh build $(CARGO) build $(PROFILE) --workspace --bins
	@scripts/stage.sh cargo-test $(CARGO) test $(PROFILE) --workspace --no-fail-fast
	@scripts/stage.sh e2e target/release/kestrel-scenarios
	@scripts/stage.sh e2e-k8s target/release/kestrel-e2e-k8s
	@scripts/stage.sh helm-lint scripts/validate-chart.sh
	@scripts/stage.sh e2e-k8s-node target/release/kestrel-e2e-cluster

# criterion benches of every crate, then the load harnesses (agent: root;
# operator: its real path, learning then detection; transport alone)
bench: deps
	$(CARGO) bench --workspace
	$(CARGO) run $(PROFILE) -p kestrel-node-agent --example agent-load -- 5 2
	$(CARGO) run $(PROFILE) -p kestrel-operator --bin kestrel-loadgen -- --seconds 10
	$(CARGO) run $(PROFILE) -p kestrel-proto --bin kestrel-transport-load -- --agents 50 --seconds 10
	$(MAKE) --no-print-directory soak

# The real agent and operator under a sustained mixed load for
# KESTREL_SOAK_SECS (600), RSS sampled every second into
# docs/benchmarks/soak.csv (root; docs/BENCHMARKS.md).
soak: build
	target/release/kestrel-soak --out docs/benchmarks/soak.csv

demo: build
	$(CARGO) run $(PROFILE) -p kestrel-e2e --bin kestrel-demo

# The attack and benign scenario suite (docs/scenarios.md): real runc
# containers, standalone Kestrel, no LLM; part of `make test`.
# KESTREL_SCENARIO_RUNS=1 for one run per attack, KESTREL_SCENARIO=<name part>
# for one scenario.
e2e: build
	target/release/kestrel-scenarios

scenarios: e2e

# Kestrel on a real Kubernetes (k8s-testenv, installed on first use, then
# cached; docs/kubernetes.md), both parts of `make test`:
# - API side: the CRDs and the operator as a controller on a real API
#   server, a test agent streaming (about 3 minutes);
# - node side: the images built and loaded, the Helm chart installed on a
#   real kubelet, the agent DaemonSet watching real pods, attacks with
#   kubectl exec, restarts, upgrade and uninstall (about 4 minutes).
e2e-k8s: e2e-k8s-api e2e-k8s-node

e2e-k8s-api: build
	target/release/kestrel-e2e-k8s

e2e-k8s-node: build
	target/release/kestrel-e2e-cluster

# The operator and agent images from the release binaries (scripts/images.sh):
# OCI archives in target/images/ (IMAGE_BUILDER=dockerfile: a rootfs and a
# Dockerfile per image for your own builder instead).
IMAGE_BUILDER ?= k8s-testenv
images: build
	scripts/images.sh --builder $(IMAGE_BUILDER)

# The Helm chart: helm lint --strict, renders validated offline for
# Kubernetes 1.20 and current, schema errors, samples against the CRDs.
helm-lint:
	scripts/validate-chart.sh

# 1,000 workloads learning at once against the real API server: the write
# budget in /metrics, SizeLimited, the operator's RSS (docs/BENCHMARKS.md).
# Not part of `make test` (about 5 minutes).
bench-k8s: build
	KESTREL_E2E_LOAD=$${KESTREL_E2E_LOAD:-1000} target/release/kestrel-e2e-k8s

# Coverage-guided fuzzing (cargo-fuzz, libFuzzer, stable with
# --sanitizer none) of the parsers that face untrusted input, FUZZ_SECS per
# target; crashes land in fuzz/artifacts/ (docs/fuzzing.md). `make test`
# runs bounded mutation runs of the same calls instead.
FUZZ_SECS ?= 60
FUZZ_TARGETS := decode_record wire_message profile_yaml alert_yaml rules_yaml config_yaml
fuzz: deps
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  $(CARGO) fuzz run --sanitizer none $$t -- -max_total_time=$(FUZZ_SECS) -rss_limit_mb=2048 || exit 1; \
	done

fmt:
	$(CARGO) fmt --all

# Regenerate deploy/crds/ from the Rust types in crates/api (a test fails
# while the committed YAML is stale).
crds:
	$(CARGO) run $(PROFILE) -p kestrel-api --bin crdgen

# Regenerate the committed vmlinux.h from this machine's kernel BTF.
vmlinux:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/vmlinux.h

clean:
	$(CARGO) clean
