#!/bin/sh
# The container of the QEMU pod modes (init.sh runs it under `unshare -m`): what a container
# runtime makes of the device plugin's Allocate answer, then DPDK's testpmd on the device.
#
#   pod.sh <alloc-dir> <peer-mac> <seconds> <EAL's IOMMU type: No-IOMMU | Type 1> <IOVA mode: PA | VA>
#
# <alloc-dir>/devices holds `<host path> <container path>` per DeviceSpec and <alloc-dir>/env
# the answer's environment (guest_kubelet writes both). As runc does for a DeviceSpec, the
# container's /dev/vfio is a fresh tmpfs and each container path is a mknod with the host
# node's type and major:minor, so only the allocated nodes exist, at their container paths.
# testpmd gets the allow-list from PCIDEVICE_* and transmits to <peer-mac>; its forward
# statistics (TX-packets) come out on `stop`.
export PATH=/bin:/sbin:/usr/bin
alloc=$1; peer=$2; secs=$3; iommu_type=$4; iova=$5
failed=0
say() { echo "DPDKTEST $*"; }
check() { name=$1; detail=$2; shift 2; if "$@"; then say "$name PASS $detail"; else say "$name FAIL $detail"; failed=1; fi; }
ms() { read up _ < /proc/uptime; echo "${up%.*}${up#*.}0"; }

# Phase 1: the host's nodes, read before the container's /dev/vfio hides them.
: > /tmp/pod-nodes
while read -r host ctr; do
  [ -c "$host" ] || { say pod_host_node FAIL "$host is not a character device"; exit 1; }
  echo "$ctr $(stat -c '%t %T' "$host")" >> /tmp/pod-nodes
done < "$alloc/devices"

# Phase 2: the container's /dev/vfio.
mount -t tmpfs -o mode=0755 tmpfs /dev/vfio
while read -r ctr maj min; do
  mkdir -p "$(dirname "$ctr")"
  mknod -m 0666 "$ctr" c $((0x$maj)) $((0x$min))
done < /tmp/pod-nodes
ls -l /dev/vfio | sed 's/^/DPDKTEST-LOG container-dev-vfio /'
want=$(awk '{print $1}' /tmp/pod-nodes | sort | tr '\n' ' ')
have=$(ls -d /dev/vfio/* | sort | tr '\n' ' ')
check container_dev_vfio_only_allocated "have: $have" [ "$have" = "$want" ]

# Phase 3: the environment and the allow-list, as a DPDK app in the pod reads them.
. "$alloc/env"
allow=""
for var in $(sed -n 's/^export \(PCIDEVICE_[A-Z0-9_]*\)=.*/\1/p' "$alloc/env" | grep -v '_INFO$'); do
  eval "bdfs=\$$var"
  for bdf in $(echo "$bdfs" | tr ',' ' '); do allow="$allow -a $bdf"; done
done
check allow_list "$allow" [ -n "$allow" ]

# Phase 4: testpmd. Two lcores on the guest's one CPU: 0 is the main lcore, 1 forwards.
# Interactive, driven through a FIFO: `start tx_first 8` transmits 8 bursts of 512 packets
# to <peer-mac> (a bounded count: QEMU's e1000e hands frames to the hub synchronously and
# QEMU drops what overflows the peer's queue, so an unbounded txonly run loses packets that
# never reach the peer's kernel), `stop` prints the forward statistics <seconds> later.
# `timeout` bounds the whole run.
t0=$(ms)
rm -f /tmp/testpmd.cmd && mkfifo /tmp/testpmd.cmd
timeout -s INT $((secs + 90)) dpdk-testpmd --lcores 0@0,1@0 -n 1 --file-prefix pod --huge-dir /dev/hugepages -m 64 --log-level=lib.eal:debug $allow \
  -- -i --forward-mode=rxonly --eth-peer=0,"$peer" --nb-cores=1 --rxq=1 --txq=1 --rxd=256 --txd=1024 \
     --burst=512 --total-num-mbufs=8192 --no-mlockall < /tmp/testpmd.cmd > /tmp/testpmd.out 2>&1 &
pid=$!
exec 3> /tmp/testpmd.cmd
echo "start tx_first 8" >&3
started=""
while kill -0 $pid 2>/dev/null; do
  if grep -q "packet forwarding - ports=" /tmp/testpmd.out; then started=$(( $(ms) - t0 )); break; fi
  sleep 0.1
done
if [ -n "$started" ]; then sleep "$secs"; echo stop >&3; fi
echo quit >&3
exec 3>&-
wait $pid; rc=$?
cat /tmp/testpmd.out
echo "DPDKTEST-T testpmd_forwarding_ms=${started:-0} testpmd_rc=$rc"
[ -n "$started" ] || failed=1
check testpmd_probed "" grep -q "Probe PCI driver: net_e1000_em" /tmp/testpmd.out
check testpmd_vfio_iommu_type "$(grep -o 'Using IOMMU type [0-9]* ([^)]*)' /tmp/testpmd.out | head -n1)" grep -q "Using IOMMU type [0-9]* ($iommu_type)" /tmp/testpmd.out
# No IOMMU: DMA uses physical addresses (EAL reads them from /proc/self/pagemap); VT-d: virtual.
check testpmd_iova_mode "$(grep -o "Selected IOVA mode '[A-Z]*'" /tmp/testpmd.out)" grep -q "Selected IOVA mode '$iova'" /tmp/testpmd.out
check testpmd_forwarding "after ${started:-never} ms" [ -n "$started" ]
check testpmd_stopped "" grep -q "Forward statistics for port 0" /tmp/testpmd.out
