#!/usr/bin/env bash
# Static dpdk-reconciler and dpdk-node-agent for the images (deploy/docker/*.Dockerfile):
# glibc with +crt-static (no musl target is needed); libgit2 and libssh2 are built from the
# sources their -sys crates vendor, OpenSSL and zlib link from Debian's static archives
# (libssl-dev, zlib1g-dev). Used by `dpdk-testenv images` and .github/workflows/release.yml.
#   usage: static-build.sh <cargo profile: release|dev> <out dir> [target triple]
# --target keeps build scripts and proc macros dynamic (they run on the build host).
set -euo pipefail
profile="$1"
out="$2"
target="${3:-$(rustc -vV | sed -n 's/^host: //p')}"
cd "$(dirname "$0")/../.."
export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
export OPENSSL_STATIC=1
cargo build --locked --profile "$profile" --target "$target" \
  -p dpdk-reconciler --bin dpdk-reconciler -p dpdk-node-agent --bin dpdk-node-agent
dir="$profile"
[ "$profile" = dev ] && dir=debug
mkdir -p "$out"
for bin in dpdk-reconciler dpdk-node-agent; do
  cp "${CARGO_TARGET_DIR:-target}/${target}/${dir}/${bin}" "$out/${bin}"
done
