#!/bin/sh
# /init of the QEMU guest for the real-kernel test. It plays the node: NIC drivers load as
# udev would load them, the virtio NIC carries the default route (the "primary ENI"), the
# e1000e NIC has no address (a secondary ENI). Then the statically linked agent runs its
# `load` and one-shot `bind`/`unbind`, and every check prints one line:
#   DPDKTEST <name> PASS|FAIL <detail>
# The mode comes from the kernel command line:
# dpdktest=iommu|noiommu|route-table|bench|pod-iommu|pod-noiommu.
# The pod modes (tests/qemu_dpdk.rs) run the node as a cluster would: the agent's `load` and
# `run` against the host's API server and IMDS stub (QEMU guestfwd), the device plugin with
# the guest kubelet, and dpdk-testpmd in a mount namespace built from the Allocate answer
# (pod.sh). Their settings come from /etc/dpdktest/env, a second initramfs archive.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /tmp /var/lib/dpdk
mode=$(sed -n 's/.*dpdktest=\([a-z-]*\).*/\1/p' /proc/cmdline)
A="/bin/dpdk-node-agent --log-format json"
STATE="--state-dir /var/lib/dpdk"
NIC=0000:00:03.0      # e1000e: the device to bind
PRIMARY=0000:00:04.0  # virtio-net: carries the default route
PEER=0000:00:05.0     # virtio-net on the e1000e's QEMU hub, kernel driver (pod modes only)
say() { echo "DPDKTEST $*"; }
check() { name=$1; detail=$2; shift 2; if "$@"; then say "$name PASS $detail"; else say "$name FAIL $detail"; fi; }
driver_of() { l=$(readlink "/sys/bus/pci/devices/$1/driver" 2>/dev/null) && basename "$l" || echo none; }
ms() { read up _ < /proc/uptime; echo "${up%.*}${up#*.}0"; }   # uptime in ms (10 ms resolution)
finish() { say DONE; sync; poweroff -f; }

say BOOTED "$(uname -r) mode=$mode"
modprobe e1000e; modprobe virtio_pci; modprobe virtio_net
for i in 1 2 3 4 5 6 7 8 9 10; do
  [ -d /sys/bus/pci/devices/$NIC/net ] && ls /sys/bus/pci/devices/$PRIMARY/virtio*/net >/dev/null 2>&1 && break
  sleep 0.2
done
NIC_IF=$(ls /sys/bus/pci/devices/$NIC/net)
PRIMARY_IF=$(ls /sys/bus/pci/devices/$PRIMARY/virtio*/net)
ip link set lo up
ip link set "$PRIMARY_IF" up && ip addr add 10.0.2.15/24 dev "$PRIMARY_IF" && ip route add default via 10.0.2.2 dev "$PRIMARY_IF"
# Up without an address: only link-local (fe80::/64, multicast) routes, which do not block.
ip link set "$NIC_IF" up
say NET "nic=$NIC_IF primary=$PRIMARY_IF"
ip route | sed 's/^/DPDKTEST-LOG route /'

case "$mode" in
iommu)
  $A load $STATE --driver vfio-pci --noiommu true > /tmp/load.out 2>&1; rc=$?
  sed 's/^/DPDKTEST-LOG load /' /tmp/load.out
  check load_exit "rc=$rc" [ "$rc" = 0 ]
  check vfio_module "" [ -d /sys/module/vfio ]
  check vfio_pci_driver "" [ -d /sys/bus/pci/drivers/vfio-pci ]
  check noiommu_not_claimed "kernel lacks CONFIG_VFIO_NOIOMMU, IOMMU on" grep -q '"noiommu":false' /tmp/load.out

  t0=$(ms)
  $A bind $STATE --pci $NIC --driver vfio-pci --node-ip 10.0.2.15 > /tmp/bind.out 2>&1; rc=$?
  t1=$(ms)
  sed 's/^/DPDKTEST-LOG bind /' /tmp/bind.out
  say TIME "bind_ms=$((t1 - t0))"
  check bind_exit "rc=$rc" [ "$rc" = 0 ]
  check driver_link_vfio "driver=$(driver_of $NIC)" [ "$(driver_of $NIC)" = vfio-pci ]
  group=$(basename "$(readlink /sys/bus/pci/devices/$NIC/iommu_group)")
  check dev_vfio_group "/dev/vfio/$group" [ -c "/dev/vfio/$group" ]
  check override_cleared "$(cat /sys/bus/pci/devices/$NIC/driver_override)" [ "$(cat /sys/bus/pci/devices/$NIC/driver_override)" = "(null)" ]
  check netdev_gone "$NIC_IF" [ ! -e "/sys/class/net/$NIC_IF" ]
  check journal_original_driver "" grep -q '"originalDriver": "e1000e"' /var/lib/dpdk/journal.json
  check journal_mac "" grep -q '"mac": "52:54:00:12:34:01"' /var/lib/dpdk/journal.json

  $A bind $STATE --pci $PRIMARY --driver vfio-pci --node-ip 10.0.2.15 > /tmp/refuse.out 2>&1; rc=$?
  sed 's/^/DPDKTEST-LOG refuse /' /tmp/refuse.out
  check refuse_exit "rc=$rc" [ "$rc" != 0 ]
  check refuse_names_default_route "" grep -q "default via 10.0.2.2 dev $PRIMARY_IF" /tmp/refuse.out
  check primary_untouched "driver=$(driver_of $PRIMARY)" [ "$(driver_of $PRIMARY)" = virtio-pci ]
  check primary_still_routes "" ip route get 10.0.2.2
  check other_device_kept "driver=$(driver_of $NIC)" [ "$(driver_of $NIC)" = vfio-pci ]

  $A unbind $STATE --pci $NIC > /tmp/unbind.out 2>&1; rc=$?
  sed 's/^/DPDKTEST-LOG unbind /' /tmp/unbind.out
  check unbind_exit "rc=$rc" [ "$rc" = 0 ]
  check driver_restored "driver=$(driver_of $NIC)" [ "$(driver_of $NIC)" = e1000e ]
  check netdev_back "" [ -d /sys/bus/pci/devices/$NIC/net ]
  check dev_vfio_group_gone "/dev/vfio/$group" [ ! -e "/dev/vfio/$group" ]
  check journal_empty "" grep -q '"devices": \[\]' /var/lib/dpdk/journal.json
  ;;
noiommu)
  $A load $STATE --driver vfio-pci --noiommu true > /tmp/load.out 2>&1; rc=$?
  sed 's/^/DPDKTEST-LOG load /' /tmp/load.out
  check load_fails "rc=$rc" [ "$rc" != 0 ]
  check load_names_config_vfio_noiommu "" grep -q "was built without CONFIG_VFIO_NOIOMMU" /tmp/load.out
  # vfio-pci is loaded all the same; without any IOMMU its probe fails, and the agent
  # must hand the NIC back to e1000e.
  $A bind $STATE --pci $NIC --driver vfio-pci --node-ip 10.0.2.15 > /tmp/bind.out 2>&1; rc=$?
  sed 's/^/DPDKTEST-LOG bind /' /tmp/bind.out
  check bind_fails "rc=$rc" [ "$rc" != 0 ]
  check bind_says_why "" grep -q "did not claim" /tmp/bind.out
  check rolled_back "driver=$(driver_of $NIC)" [ "$(driver_of $NIC)" = e1000e ]
  check override_cleared "" [ "$(cat /sys/bus/pci/devices/$NIC/driver_override)" = "(null)" ]
  ;;
route-table)
  # A secondary ENI as the VPC CNI sets one up: up, no address, its only route in a table
  # of its own (table 100), none in the main table. The agent must refuse it all the same.
  ip route add 10.99.0.0/24 dev "$NIC_IF" table 100; rc=$?
  check route_added "rc=$rc" [ "$rc" = 0 ]
  ip route show table 100 | sed 's/^/DPDKTEST-LOG table100 /'
  in_table_100() { ip route show table 100 | grep -q "^10.99.0.0/24 dev $NIC_IF"; }
  # What a main-table-only check reads (/proc/net/route) does not name the NIC at all.
  not_in_main() { awk -v i="$NIC_IF" '$1 == i { found = 1 } END { exit found }' /proc/net/route; }
  check route_in_table_100 "" in_table_100
  check main_table_does_not_name_nic "" not_in_main
  sed 's/^/DPDKTEST-LOG proc-net-route /' /proc/net/route

  $A load $STATE --driver vfio-pci --noiommu true > /tmp/load.out 2>&1; rc=$?
  sed 's/^/DPDKTEST-LOG load /' /tmp/load.out
  check load_exit "rc=$rc" [ "$rc" = 0 ]
  check vfio_pci_driver "" [ -d /sys/bus/pci/drivers/vfio-pci ]

  $A bind $STATE --pci $NIC --driver vfio-pci --node-ip 10.0.2.15 > /tmp/bind.out 2>&1; rc=$?
  sed 's/^/DPDKTEST-LOG bind /' /tmp/bind.out
  check refuse_exit "rc=$rc" [ "$rc" != 0 ]
  check refuse_names_table_100 "" grep -q "10.99.0.0/24 dev $NIC_IF table 100" /tmp/bind.out
  check report_refused "" grep -q '"health": "Refused"' /tmp/bind.out
  check nic_untouched "driver=$(driver_of $NIC)" [ "$(driver_of $NIC)" = e1000e ]
  check netdev_kept "$NIC_IF" [ -d "/sys/class/net/$NIC_IF" ]
  check override_cleared "$(cat /sys/bus/pci/devices/$NIC/driver_override)" [ "$(cat /sys/bus/pci/devices/$NIC/driver_override)" = "(null)" ]
  check route_still_in_table_100 "" in_table_100
  ;;
pod-iommu|pod-noiommu)
  . /etc/dpdktest/env
  export KUBECONFIG NODE_NAME NODE_IP DPDK_IMDS_ENDPOINT
  release=$(uname -r)
  if [ "$mode" = pod-noiommu ]; then
    # This kernel's vfio.ko rebuilt with CONFIG_VFIO_NOIOMMU (build-vfio-noiommu.sh): what
    # an EC2 kernel (Amazon Linux, Ubuntu) ships. The agent loads it from modules.dep.
    cp /opt/noiommu/vfio.ko /lib/modules/$release/kernel/drivers/vfio/vfio.ko
  fi
  ln -sfn /run /var/run   # as on Debian; EAL keeps its runtime dir there
  echo 64 > /proc/sys/vm/nr_hugepages
  mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages
  check hugepages "nr_hugepages=$(cat /proc/sys/vm/nr_hugepages)" [ "$(cat /proc/sys/vm/nr_hugepages)" -ge 32 ]
  PEER_IF=$(ls /sys/bus/pci/devices/$PEER/virtio*/net)
  ip link set "$PEER_IF" up

  $A load $STATE > /tmp/load.out 2>&1; rc=$?
  sed 's/^/DPDKTEST-LOG load /' /tmp/load.out
  check load_exit "rc=$rc" [ "$rc" = 0 ]
  param=$(cat /sys/module/vfio/parameters/enable_unsafe_noiommu_mode 2>/dev/null || echo absent)
  if [ "$mode" = pod-noiommu ]; then
    check noiommu_param "enable_unsafe_noiommu_mode=$param" [ "$param" = Y ]
    check load_reports_noiommu "" grep -q '"noiommu":true' /tmp/load.out
  else
    check noiommu_param_absent "enable_unsafe_noiommu_mode=$param (stock vfio.ko, VT-d)" [ "$param" = absent ]
    # The emulated VT-d runs without interrupt remapping (see harness.rs), and type1 then
    # refuses VFIO_SET_IOMMU (EPERM) unless told the platform's interrupts are trusted.
    # Real VT-d and AMD-Vi hosts remap interrupts; this is the guest's stand-in for that.
    echo 1 > /sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts
  fi

  t0=$(ms)
  $A run $STATE --retry 1s > /tmp/run.out 2>&1 &
  run_pid=$!
  for i in $(seq 300); do [ "$(driver_of $NIC)" = vfio-pci ] && break; sleep 0.2; done
  t1=$(ms)
  check run_bound "driver=$(driver_of $NIC)" [ "$(driver_of $NIC)" = vfio-pci ]
  group=$(basename "$(readlink /sys/bus/pci/devices/$NIC/iommu_group)")
  say GROUP "$group"
  if [ "$mode" = pod-noiommu ]; then
    check group_is_noiommu "$(cat /sys/kernel/iommu_groups/$group/name 2>/dev/null)" [ "$(cat /sys/kernel/iommu_groups/$group/name 2>/dev/null)" = vfio-noiommu ]
    check dev_vfio_noiommu "/dev/vfio/noiommu-$group" [ -c "/dev/vfio/noiommu-$group" ]
  else
    check dev_vfio_group "/dev/vfio/$group" [ -c "/dev/vfio/$group" ]
  fi
  ls -l /dev/vfio | sed 's/^/DPDKTEST-LOG host-dev-vfio /'

  mkdir -p /var/lib/kubelet/device-plugins /tmp/alloc
  /bin/guest-kubelet /var/lib/kubelet/device-plugins "$RESOURCE" /tmp/alloc 120s > /tmp/kubelet.out 2> /tmp/kubelet.err &
  kubelet_pid=$!
  t2=$(ms)
  $A device-plugin --no-status > /tmp/dp.out 2>&1 &
  dp_pid=$!
  wait $kubelet_pid; rc=$?
  t3=$(ms)
  cat /tmp/kubelet.out
  sed 's/^/DPDKTEST-LOG kubelet /' /tmp/kubelet.err
  check allocate_exit "rc=$rc" [ "$rc" = 0 ]
  sed 's/^/DPDKTEST-LOG alloc-devices /' /tmp/alloc/devices

  rx0=$(cat /sys/class/net/$PEER_IF/statistics/rx_packets)
  t4=$(ms)
  if [ "$mode" = pod-noiommu ]; then iommu_type=No-IOMMU iova=PA; else iommu_type="Type 1" iova=VA; fi
  unshare -m /bin/sh /bin/pod.sh /tmp/alloc "$PEER_MAC" "$TESTPMD_SECONDS" "$iommu_type" $iova > /tmp/pod.out 2>&1; rc=$?
  t5=$(ms)
  rx1=$(cat /sys/class/net/$PEER_IF/statistics/rx_packets)
  grep -v '^DPDKTEST ' /tmp/pod.out | sed 's/^/DPDKTEST-LOG pod /'
  # pod.sh prints its own checks (DPDKTEST lines) too.
  grep '^DPDKTEST ' /tmp/pod.out
  check pod_exit "rc=$rc" [ "$rc" = 0 ]
  # The forward statistics printed on `stop` (the last TX-packets: the accumulated block).
  tx=$(sed -n 's/.*TX-packets: *\([0-9][0-9]*\).*/\1/p' /tmp/pod.out | tail -n1)
  say TXRX "tx=${tx:-none} peer_rx_before=$rx0 peer_rx_after=$rx1"
  check testpmd_sent "tx=${tx:-none}" [ "${tx:-0}" -gt 0 ]
  check peer_rx_rose "rx $rx0 -> $rx1, testpmd sent ${tx:-none}" [ $((rx1 - rx0)) -ge "${tx:-1}" ]
  started=$(sed -n 's/^DPDKTEST-T testpmd_forwarding_ms=\([0-9]*\).*/\1/p' /tmp/pod.out)
  say TIME "bind_ms=$((t1 - t0)) allocate_ms=$((t3 - t2)) pod_ms=$((t5 - t4)) testpmd_start_ms=${started:-0}"

  kill $dp_pid $run_pid 2>/dev/null
  wait $dp_pid $run_pid 2>/dev/null
  sed 's/^/DPDKTEST-LOG run /' /tmp/run.out | tail -n 40
  sed 's/^/DPDKTEST-LOG device-plugin /' /tmp/dp.out | tail -n 40
  ;;
bench)
  $A load $STATE --driver vfio-pci --noiommu false > /dev/null 2>&1 || say load FAIL
  n=10; tb=0; tu=0; ok=0
  for i in $(seq $n); do
    t0=$(ms); $A bind $STATE --pci $NIC --driver vfio-pci > /dev/null 2>&1 && ok=$((ok + 1)); t1=$(ms)
    $A unbind $STATE --pci $NIC > /dev/null 2>&1; t2=$(ms)
    tb=$((tb + t1 - t0)); tu=$((tu + t2 - t1))
  done
  say TIME "iterations=$n ok=$ok bind_total_ms=$tb unbind_total_ms=$tu"
  check bench_all_bound "ok=$ok" [ "$ok" = "$n" ]
  ;;
*)
  say mode FAIL "unknown mode '$mode'"
  ;;
esac
finish
