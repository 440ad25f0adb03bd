#!/usr/bin/env bash
# The README's test command: installs what a fresh machine lacks, builds the local
# control plane from Go modules (cached under ~/.cache/dpdk-gitops), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# CI builds once from scratch: incremental caches only cost time and disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
started=$(date +%s)
say() { printf '\n==> [%4ss] %s\n' "$(( $(date +%s) - started ))" "$*"; }

say "checking Debian packages (.ci/apt-packages.txt)"
missing=()
while read -r pkg; do
  pkg="${pkg%%#*}"; pkg="${pkg// /}"
  [ -z "$pkg" ] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < .ci/apt-packages.txt
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  say "installing: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ -x testenv/setup-extra.sh ]; then
  say "extra setup (testenv/setup-extra.sh)"
  testenv/setup-extra.sh
fi

for tool in cargo go git; do
  command -v "$tool" >/dev/null || { echo "missing required tool: $tool" >&2; exit 2; }
done

say "checking formatting (cargo fmt --all --check; rustfmt.toml)"
cargo fmt --all --check

say "building the local control plane (kube-apiserver, kubectl, etcd), helm, actionlint and Flux (source-controller, kustomize-controller) from Go modules; cached after the first run"
cargo run -q -p dpdk-testenv -- build

say "linting (cargo clippy --workspace --all-targets -- -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

say "building the images from deploy/docker (static dev-profile binaries, buildah; nothing pulled)"
cargo run -q -p dpdk-testenv -- images

say "building the workspace and its tests (debug)"
cargo test --workspace --no-run

say "running the tests"
cargo test --workspace --no-fail-fast "$@"
say "done"
