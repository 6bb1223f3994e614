#!/usr/bin/env bash
# Builds a Debian package of lxmetrics from a compiled binary, with dpkg-deb only.
#
#   packaging/build-deb.sh [BINARY] [OUTPUT_DIR]
#
# BINARY defaults to target/release/lxmetrics (build it with
# `cargo build --release --bin lxmetrics`). The package installs the binary, the systemd
# unit (enabled on install, not started), a commented /etc/lxmetrics/config.toml, and the
# docs. Configuration: the daemon reads /etc/lxmetrics/config.toml unless
# /var/lib/lxmetrics/config.toml exists or --config names another file.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
binary=${1:-$top/target/release/lxmetrics}
out=${2:-$top/target/debian}
[ -x "$binary" ] || { echo "build-deb: $binary is not an executable (cargo build --release --bin lxmetrics)" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/Cargo.toml" | head -n1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

install -D -s -m 0755 "$binary" "$stage/usr/bin/lxmetrics"
install -D -m 0644 "$top/packaging/lxmetrics.service" "$stage/lib/systemd/system/lxmetrics.service"
install -D -m 0644 "$top/examples/config.toml" "$stage/etc/lxmetrics/config.toml"
for doc in "$top"/README.md "$top"/docs/*.md "$top"/examples/prometheus.yml "$top"/examples/grafana-dashboard.json "$top"/examples/prometheus-rules/lxmetrics.rules.yml; do
  install -D -m 0644 "$doc" "$stage/usr/share/doc/lxmetrics/$(basename "$doc")"
done
mkdir -p "$stage/DEBIAN"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: lxmetrics
Version: $version
Section: admin
Priority: optional
Architecture: $arch
Maintainer: lxmetrics developers <lxmetrics@example.invalid>
Depends: libc6
Description: LXD-compatible per-instance metrics for Prometheus
 Serves CPU, memory, network, disk, filesystem and process metrics of every
 container and VM on the host on /1.0/metrics, behind mutual TLS with
 client and metrics certificate types.
CONTROL
echo "/etc/lxmetrics/config.toml" > "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = "configure" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
  systemctl enable lxmetrics.service || true
fi
POSTINST
cat > "$stage/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ "$1" = "remove" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now lxmetrics.service || true
fi
PRERM
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm"
mkdir -p "$out"
deb="$out/lxmetrics_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
echo "$deb"
