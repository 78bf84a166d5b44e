#!/usr/bin/env bash
# Builds the image helios:local (or $1) FROM scratch around a statically linked helios binary
# built on the host; no base image is pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-helios:local}"
target=x86_64-unknown-linux-gnu
# Symbols stripped: the image carries the binary only (about a sixth of the unstripped size).
RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols" cargo build --release -p helios --target "$target"
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "target/$target/release/helios" docker/Dockerfile "$context/"
docker build --quiet -t "$image" "$context"
echo "built $image"
