#!/usr/bin/env bash
# Builds the QEMU guest for the real-kernel test: a Debian kernel (from apt, cached) and
# an initramfs with busybox-static, the NIC and DPDK kernel modules, the statically
# linked agent and the test's /init.
#
#   build-guest.sh <agent-binary> <init-script> <out-dir> [<guest-kubelet-binary>]
#
# With a guest kubelet (tests/qemu_dpdk.rs, examples/guest_kubelet.rs) the guest is a DPDK
# node: it also gets the kubelet, Debian's dpdk-testpmd (package dpdk-dev) with the shared
# libraries it needs and the PMDs net_e1000, bus_pci and mempool_ring, and a vfio.ko rebuilt
# with CONFIG_VFIO_NOIOMMU at /opt/noiommu/vfio.ko (build-vfio-noiommu.sh, cached).
#
# Writes <out-dir>/vmlinuz and <out-dir>/initrd.img, and prints the kernel release.
# Cache: ${DPDK_QEMU_CACHE:-~/.cache/dpdk-gitops/qemu}/<kernel package>/ (the .deb is
# downloaded once; later runs work offline). DPDK_QEMU_KERNEL_PKG picks the package
# (default: what linux-image-amd64 depends on; else the newest one in the cache).
set -euo pipefail

agent=${1:?agent binary}
init_script=${2:?init script}
out=${3:?out dir}
kubelet=${4:-}
cache=${DPDK_QEMU_CACHE:-$HOME/.cache/dpdk-gitops/qemu}
mkdir -p "$cache" "$out"

die() { echo "build-guest.sh: $*" >&2; exit 1; }
for tool in busybox dpkg-deb; do
  command -v "$tool" >/dev/null || die "missing $tool (apt packages: busybox-static, dpkg)"
done
busybox_bin=$(command -v busybox)
file -L "$busybox_bin" 2>/dev/null | grep -q 'dynamically linked' && die "$busybox_bin is dynamically linked: install busybox-static"

pkg=${DPDK_QEMU_KERNEL_PKG:-}
if [ -z "$pkg" ]; then
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}' || true)
fi
if [ -z "$pkg" ] || { [ ! -f "$cache/$pkg/.done" ] && ! apt-cache show "$pkg" >/dev/null 2>&1; }; then
  # No apt metadata (offline, or no `apt-get update` yet): use the newest cached kernel.
  pkg=$(ls -1 "$cache" 2>/dev/null | grep '^linux-image-' | sort -V | tail -n1 || true)
  [ -n "$pkg" ] || die "cannot resolve a Debian kernel package (run apt-get update) and none is cached in $cache"
fi

kdir=$cache/$pkg
if [ ! -f "$kdir/.done" ]; then
  echo "build-guest.sh: downloading $pkg (once; cached in $kdir)" >&2
  rm -rf "$kdir" && mkdir -p "$kdir/dl"
  # apt-get download runs as _apt when it can; a world-writable temp dir keeps it quiet.
  chmod 0777 "$kdir/dl"
  (cd "$kdir/dl" && apt-get download -q "$pkg" >&2) || die "apt-get download $pkg failed"
  deb=$(ls "$kdir"/dl/*.deb | head -n1)
  dpkg-deb -x "$deb" "$kdir/root"
  dpkg-deb -f "$deb" Version > "$kdir/version"
  rm -f "$deb"
  touch "$kdir/.done"
fi
# Caches from before the version was recorded: ask apt.
[ -s "$kdir/version" ] || apt-cache show "$pkg" 2>/dev/null | awk '/^Version:/ {print $2; exit}' > "$kdir/version" || true
release=$(ls -1 "$kdir/root/lib/modules" | head -n1)
[ -n "$release" ] || die "no lib/modules in $kdir/root"
mods=$kdir/root/lib/modules/$release
cp -f "$kdir/root/boot/vmlinuz-$release" "$out/vmlinuz"

# The initramfs tree.
root=$out/initramfs
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,run,tmp,etc,var/lib/dpdk,lib/modules/"$release"}
cp "$busybox_bin" "$root/bin/busybox"
# busybox applets as links to bin/busybox (never bin/busybox -> busybox: ELOOP at /init).
for applet in $("$busybox_bin" --list); do
  [ "$applet" = busybox ] && continue
  ln -sf busybox "$root/bin/$applet"
done
for applet in modprobe insmod rmmod depmod poweroff reboot; do ln -sf ../bin/busybox "$root/sbin/$applet"; done
cp "$agent" "$root/bin/dpdk-node-agent"
chmod 0755 "$root/bin/dpdk-node-agent"
# The initramfs lives in the guest's RAM: drop symbols and debug info when binutils is here.
if command -v strip >/dev/null; then strip "$root/bin/dpdk-node-agent"; fi
cp "$init_script" "$root/init"
chmod 0755 "$root/init"

# Only the modules the test needs: NICs (e1000e, virtio-net), vfio, vfio-pci, uio.
kmods="$root/lib/modules/$release"
for rel in kernel/drivers/vfio kernel/drivers/uio kernel/drivers/virtio kernel/drivers/net/ethernet/intel/e1000e \
           kernel/drivers/net/virtio_net.ko kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko \
           kernel/virt/lib/irqbypass.ko; do
  [ -e "$mods/$rel" ] || continue
  mkdir -p "$kmods/$(dirname "$rel")"
  cp -r "$mods/$rel" "$kmods/$(dirname "$rel")/"
done
# Newer Debian kernels ship compressed modules: keep them as the kernel's loader expects
# plain .ko from busybox insmod.
find "$kmods" -name '*.ko.xz' -exec xz -d {} +
cp "$mods"/modules.builtin "$mods"/modules.order "$kmods/" 2>/dev/null || true
[ -f "$mods/modules.builtin.modinfo" ] && cp "$mods/modules.builtin.modinfo" "$kmods/"
# modules.dep for the subset (depmod from kmod when present, else busybox's).
if command -v depmod >/dev/null; then
  depmod -b "$root" "$release"
else
  (cd "$root" && "$busybox_bin" depmod -b "$root" "$release")
fi
[ -s "$kmods/modules.dep" ] || die "depmod produced no modules.dep in $kmods"
mkdir -p "$root/boot" && cp "$kdir/root/boot/config-$release" "$root/boot/"

# Copies a dynamically linked file and every library ldd lists for it to the same paths.
copy_with_libs() {
  local f lib
  for f in "$@"; do
    mkdir -p "$root$(dirname "$f")"
    cp -L "$f" "$root$f"
    for lib in $(ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
      [ -e "$root$lib" ] && continue
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  done
}

if [ -n "$kubelet" ]; then
  cp "$kubelet" "$root/bin/guest-kubelet" && chmod 0755 "$root/bin/guest-kubelet"
  cp "$(dirname "$init_script")/pod.sh" "$root/bin/pod.sh" && chmod 0755 "$root/bin/pod.sh"
  command -v strip >/dev/null && strip "$root/bin/guest-kubelet"
  testpmd=$(command -v dpdk-testpmd) || die "missing dpdk-testpmd (apt packages: dpdk-dev, librte-net-e1000-23)"
  pmds=$(ls -d /usr/lib/x86_64-linux-gnu/dpdk/pmds-* 2>/dev/null | head -n1)
  [ -n "$pmds" ] || die "no DPDK PMD directory /usr/lib/x86_64-linux-gnu/dpdk/pmds-* (apt package: dpdk-dev)"
  # EAL loads the *.so and *.so.<major.minor> files of its PMD directory as plugins: these
  # three, as their real files (.so.23.0) with soname links (.so.23) for the loader, so a PMD
  # testpmd also links (bus_pci) is the same file both ways and registers once.
  plugins=()
  for p in librte_bus_pci librte_mempool_ring librte_net_e1000; do
    so=$(ls "$pmds/$p.so."[0-9]* 2>/dev/null | grep -E '\.so\.[0-9]+$' | head -n1)
    [ -n "$so" ] || die "missing $pmds/$p.so.* (apt package: librte-net-e1000-23 for net_e1000)"
    plugins+=("$so")
  done
  copy_with_libs "$testpmd" "${plugins[@]}"
  for so in "${plugins[@]}"; do
    real=$(readlink -f "$so")
    rm -f "$root$so" && cp "$real" "$root$(dirname "$so")/$(basename "$real")"
    ln -s "$(basename "$real")" "$root$so"
  done
  # Some libraries resolve into the PMD directory (librte_bus_pci): the guest's loader finds
  # them through an ld.so.cache made for the initramfs tree.
  printf '%s\n' /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu "$pmds" > "$root/etc/ld.so.conf"
  ldconfig -r "$root"
  version=$(cat "$kdir/version")
  [ -n "$version" ] || die "unknown package version of $pkg (run apt-get update)"
  mkdir -p "$root/opt/noiommu"
  bash "$(dirname "$0")/build-vfio-noiommu.sh" "$release" "$version" "$root/opt/noiommu/vfio.ko"
fi

(cd "$root" && find . | "$busybox_bin" cpio -o -H newc 2>/dev/null | gzip -1 > "$out/initrd.img")
echo "$release"
