#!/usr/bin/env bash
# Rebuilds only vfio.ko of a Debian kernel with CONFIG_VFIO_NOIOMMU, for the QEMU guest
# without an IOMMU (Debian's kernels are built without it; EC2's Amazon Linux kernels have it).
#
#   build-vfio-noiommu.sh <kernel release> <kernel package version> <out vfio.ko>
#   e.g. build-vfio-noiommu.sh 6.1.0-57-amd64 6.1.192-3 /tmp/guest/vfio-noiommu.ko
#
# Downloads (apt-get download, exactly that version): linux-source-<major.minor> (for
# drivers/vfio), linux-headers-<release>, linux-headers-<abi>-common and
# linux-kbuild-<major.minor>. Builds vfio.o from vfio_main.c, iova_bitmap.c and container.c
# with -DCONFIG_VFIO_NOIOMMU=1 against those headers (the noiommu #ifdefs are only in
# drivers/vfio/vfio.h and container.c, so the module's exports and ABI are unchanged), and
# strips its debug info. The result loads unsigned (Debian does not force module signatures
# without Secure Boot; the kernel logs a taint).
#
# Cache: ${DPDK_QEMU_CACHE:-~/.cache/dpdk-gitops/qemu}/vfio-noiommu/<release>_<version>/vfio.ko;
# the downloads are deleted once it is built. Progress goes to stderr.
set -euo pipefail

release=${1:?kernel release, e.g. 6.1.0-57-amd64}
version=${2:?kernel package version, e.g. 6.1.192-3}
out=${3:?output vfio.ko}
cache=${DPDK_QEMU_CACHE:-$HOME/.cache/dpdk-gitops/qemu}/vfio-noiommu/${release}_${version}

die() { echo "build-vfio-noiommu.sh: $*" >&2; exit 1; }
say() { echo "build-vfio-noiommu.sh: $*" >&2; }

if [ -f "$cache/vfio.ko" ]; then
  cp -f "$cache/vfio.ko" "$out"
  exit 0
fi
for tool in apt-get dpkg-deb make gcc tar xz; do
  command -v "$tool" >/dev/null || die "missing $tool (apt packages: build-essential, xz-utils)"
done

started=$(date +%s)
series=$(echo "$version" | cut -d. -f1,2)           # 6.1
abi=${release%-*}                                  # 6.1.0-57
flavour=${release##*-}                             # amd64
pkgs=("linux-source-$series=$version" "linux-headers-$release=$version"
      "linux-headers-$abi-common=$version" "linux-kbuild-$series=$version")
work=$cache/work
rm -rf "$work" && mkdir -p "$work/dl" "$work/root" "$work/src"
# apt-get download runs as _apt when it can; a world-writable dir keeps it quiet.
chmod 0777 "$work/dl"
say "downloading ${pkgs[*]} (once; cached in $cache)"
(cd "$work/dl" && apt-get download -q "${pkgs[@]}" >&2) || die "apt-get download ${pkgs[*]} failed (run apt-get update?)"
for deb in "$work"/dl/*.deb; do
  say "unpacking $(basename "$deb")"
  dpkg-deb -x "$deb" "$work/root"
done
headers=$work/root/usr/src/linux-headers-$release
[ -d "$headers" ] || die "no $headers in linux-headers-$release"
# The flavour's Makefile includes the common headers by their installed path.
sed -i "s|include /usr/src/|include $work/root/usr/src/|" "$headers/Makefile"
tarball=$work/root/usr/src/linux-source-$series.tar.xz
[ -f "$tarball" ] || die "no $tarball in linux-source-$series"
say "extracting drivers/vfio from $(basename "$tarball")"
tar -xJf "$tarball" -C "$work/src" --wildcards "linux-source-$series/drivers/vfio/*"
vsrc=$work/src/linux-source-$series/drivers/vfio
build=$work/build
mkdir -p "$build"
cp "$vsrc"/vfio_main.c "$vsrc"/iova_bitmap.c "$vsrc"/container.c "$vsrc"/vfio.h "$build/"
cat > "$build/Kbuild" <<'EOF'
obj-m := vfio.o
vfio-y := vfio_main.o iova_bitmap.o container.o
ccflags-y := -DCONFIG_VFIO_NOIOMMU=1
EOF
say "compiling vfio.ko for $release with CONFIG_VFIO_NOIOMMU"
# The headers' scripts/ links to the kbuild package's tools (modpost, fixdep) relatively.
make -s -C "$headers" M="$build" modules >&2 || die "building vfio.ko failed"
strip --strip-debug "$build/vfio.ko"
grep -qa "enable_unsafe_noiommu_mode" "$build/vfio.ko" || die "the rebuilt vfio.ko has no enable_unsafe_noiommu_mode parameter"
cp "$build/vfio.ko" "$cache/vfio.ko.tmp" && mv "$cache/vfio.ko.tmp" "$cache/vfio.ko"
rm -rf "$work"
say "built $cache/vfio.ko in $(( $(date +%s) - started ))s"
cp -f "$cache/vfio.ko" "$out"
