#!/bin/sh
# The container of the QEMU pod modes (init.sh runs it under `unshare -m`): what a container
# runtime makes of the device plugin's Allocate answer, then DPDK's testpmd on the device.
#
#   pod.sh <alloc-dir> <peer-mac> <seconds> <EAL's IOMMU type: No-IOMMU | Type 1>
#
# <alloc-dir>/devices holds `<host path> <container path>` per DeviceSpec and <alloc-dir>/env
# the answer's environment (guest_kubelet writes both). As runc does for a DeviceSpec, the
# container's /dev/vfio is a fresh tmpfs and each container path is a mknod with the host
# node's type and major:minor, so only the allocated nodes exist, at their container paths.
# testpmd gets the allow-list from PCIDEVICE_* and transmits (txonly) to <peer-mac> for
# <seconds>; SIGINT then makes it print its forward statistics (TX-packets).
export PATH=/bin:/sbin:/usr/bin
alloc=$1; peer=$2; secs=$3; iommu_type=$4
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
# It transmits for <seconds> once forwarding started; `timeout` bounds the whole run.
t0=$(ms)
timeout -s INT $((secs + 90)) dpdk-testpmd --lcores 0@0,1@0 -n 1 --file-prefix pod --huge-dir /dev/hugepages -m 64 --log-level=lib.eal:debug $allow \
  -- --forward-mode=txonly --eth-peer=0,"$peer" --nb-cores=1 --rxq=1 --txq=1 --rxd=256 --txd=256 \
     --total-num-mbufs=2048 --no-mlockall --stats-period 1 < /dev/null > /tmp/testpmd.out 2>&1 &
pid=$!
started=""
while kill -0 $pid 2>/dev/null; do
  if grep -q "txonly packet forwarding" /tmp/testpmd.out; then started=$(( $(ms) - t0 )); break; fi
  sleep 0.1
done
if [ -n "$started" ]; then sleep "$secs"; kill -INT $pid 2>/dev/null; fi
wait $pid; rc=$?
cat /tmp/testpmd.out
echo "DPDKTEST-T testpmd_forwarding_ms=${started:-0} testpmd_rc=$rc"
[ -n "$started" ] || failed=1
check testpmd_probed "" grep -q "Probe PCI driver: net_e1000_em" /tmp/testpmd.out
check testpmd_vfio_iommu_type "$(grep -o 'IOMMU type [0-9]* ([^)]*)' /tmp/testpmd.out | head -n1)" grep -q "IOMMU type [0-9]* ($iommu_type)" /tmp/testpmd.out
check testpmd_forwarding "after ${started:-never} ms" [ -n "$started" ]
