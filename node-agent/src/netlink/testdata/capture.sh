#!/bin/sh
# Regenerates route-dump.bin and rule-dump.bin: a network namespace (unshare -rn, no root
# needed) shaped like a node with a VPC CNI secondary ENI: v0 has an address, its routes
# live only in tables 2 and 100 (none in main), a policy rule sends v1's traffic to table
# 100, and table 100 has an IPv6 route and a multipath route.
set -eu
cd "$(dirname "$0")"
unshare -rn sh -eu -c '
ip link set lo up
ip link add v0 type veth peer name v1
ip link set v0 up; ip link set v1 up
ip addr add 10.20.0.5/24 dev v0 noprefixroute
ip route add default via 10.20.0.1 dev v0 onlink table 2
ip route add 10.9.0.0/24 via 10.20.0.1 dev v0 onlink table 100
ip route add 10.30.0.0/16 table 100 nexthop via 10.20.0.1 dev v0 onlink nexthop via 10.20.0.2 dev v0 onlink
ip -6 route add 2001:db8:1::/64 dev v0 table 100
ip rule add iif v1 lookup 100 pref 100
ip rule add from 10.20.0.5 lookup 2 pref 200
ip -o link | sed "s/^/# /"
ip route show table all | sed "s/^/# /"
ip -6 route show table all | sed "s/^/# /"
ip rule | sed "s/^/# /"
python3 capture.py route-dump.bin rule-dump.bin
'
