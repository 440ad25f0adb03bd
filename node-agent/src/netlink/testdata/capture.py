"""Dumps every route (RTM_GETROUTE) and every policy rule (RTM_GETRULE) of this network
namespace as raw rtnetlink messages, the way the agent asks for them. capture.sh runs it
in a throwaway namespace; the unit tests in ../mod.rs parse the files it writes."""
import socket, struct, sys

def dump(msg_type):
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    body = bytes(12)  # rtmsg / fib_rule_hdr, family AF_UNSPEC: every family
    s.send(struct.pack("=LHHLL", 16 + len(body), msg_type, 0x301, 1, 0) + body)
    out = b""
    while True:
        chunk = s.recv(65536)
        done = False
        off = 0
        while off < len(chunk):
            length, typ = struct.unpack_from("=LH", chunk, off)
            if typ == 3:  # NLMSG_DONE
                done = True
                break
            out += chunk[off:off + ((length + 3) & ~3)]
            off += (length + 3) & ~3
        if done:
            return out

open(sys.argv[1], "wb").write(dump(26))  # RTM_GETROUTE
open(sys.argv[2], "wb").write(dump(34))  # RTM_GETRULE
