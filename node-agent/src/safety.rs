//! The checks that keep the agent from cutting its node off the network.
//!
//! A device is refused when it is the primary ENI (device index 0, or the MAC IMDS names
//! as the instance's primary), when its interface carries any route other than link-local
//! (169.254.0.0/16, fe80::/10, multicast), or when it holds one of the node's InternalIPs.
//! The decision is a pure function over a snapshot of the host's routes and addresses;
//! reading that snapshot (`/proc/net/route`, `/proc/net/ipv6_route`, `getifaddrs`) is
//! the only I/O here.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use crate::error::{Error, io_error};

/// One route, as the kernel's routing table lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub interface: String,
    pub destination: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
}

impl Route {
    /// Link-local and multicast routes exist on every interface that is up; they carry no
    /// traffic the node depends on (IMDS at 169.254.169.254 goes via the primary ENI's
    /// default route, not a link-local route on a secondary ENI).
    pub fn is_link_local(&self) -> bool {
        match self.destination {
            IpAddr::V4(a) => self.prefix_len >= 16 && a.octets()[..2] == [169, 254],
            IpAddr::V6(a) => {
                let s = a.segments()[0];
                (self.prefix_len >= 10 && s & 0xffc0 == 0xfe80)
                    || (self.prefix_len >= 8 && s & 0xff00 == 0xff00)
            }
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unspecified = match self.destination {
            IpAddr::V4(a) => a.is_unspecified(),
            IpAddr::V6(a) => a.is_unspecified(),
        };
        if unspecified && self.prefix_len == 0 {
            f.write_str("default")?;
        } else {
            write!(f, "{}/{}", self.destination, self.prefix_len)?;
        }
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        write!(f, " dev {}", self.interface)
    }
}

/// An address configured on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub interface: String,
    pub address: IpAddr,
}

/// The host's routes and addresses at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostNetwork {
    pub routes: Vec<Route>,
    pub addresses: Vec<InterfaceAddress>,
}

/// What the node tells us about itself.
#[derive(Clone, Debug, Default)]
pub struct SafetyPolicy {
    /// The Node's InternalIP addresses.
    pub node_ips: Vec<IpAddr>,
    /// MACs of the primary ENI (from IMDS `meta-data/mac`), lower-case.
    pub primary_macs: BTreeSet<String>,
}

/// A device the agent is about to bind.
#[derive(Clone, Debug)]
pub struct Candidate<'a> {
    pub device_index: i32,
    pub address: &'a str,
    /// Its interfaces now (empty once a DPDK driver holds it).
    pub interfaces: &'a [String],
    pub mac: Option<&'a str>,
}

/// Why a device must not be bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    PrimaryEni {
        detail: String,
    },
    CarriesRoutes {
        interface: String,
        routes: Vec<String>,
    },
    HoldsNodeIp {
        interface: String,
        ip: IpAddr,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::PrimaryEni { detail } => write!(
                f,
                "it is the node's primary ENI ({detail}); binding it would cut the node off"
            ),
            Refusal::CarriesRoutes { interface, routes } => write!(
                f,
                "interface {interface} carries routes ({}); binding it would cut traffic the node uses (only 169.254.0.0/16 and link-local routes are allowed)",
                routes.join(", ")
            ),
            Refusal::HoldsNodeIp { interface, ip } => {
                write!(
                    f,
                    "interface {interface} holds the node's InternalIP {ip}; binding it would cut the node off"
                )
            }
        }
    }
}

/// Decides whether `c` may be bound.
pub fn check(c: &Candidate<'_>, net: &HostNetwork, policy: &SafetyPolicy) -> Result<(), Refusal> {
    if c.device_index == 0 {
        return Err(Refusal::PrimaryEni {
            detail: "deviceIndex 0".into(),
        });
    }
    if let Some(mac) = c.mac
        && policy.primary_macs.contains(&mac.to_ascii_lowercase())
    {
        return Err(Refusal::PrimaryEni {
            detail: format!("MAC {mac} is the instance's primary MAC in IMDS"),
        });
    }
    for iface in c.interfaces {
        let routes: Vec<String> = net
            .routes
            .iter()
            .filter(|r| &r.interface == iface && !r.is_link_local())
            .map(|r| r.to_string())
            .collect();
        if !routes.is_empty() {
            return Err(Refusal::CarriesRoutes {
                interface: iface.clone(),
                routes,
            });
        }
        if let Some(a) = net
            .addresses
            .iter()
            .find(|a| &a.interface == iface && policy.node_ips.contains(&a.address))
        {
            return Err(Refusal::HoldsNodeIp {
                interface: iface.clone(),
                ip: a.address,
            });
        }
    }
    Ok(())
}

/// Parses `/proc/net/route` (IPv4; hex fields in host byte order, little-endian on x86).
pub fn parse_ipv4_routes(text: &str) -> Vec<Route> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Some(dest), Some(gw), Some(mask)) = (hex_v4(f[1]), hex_v4(f[2]), hex_v4(f[7])) else {
            continue;
        };
        // Flags: RTF_UP = 0x1. Routes that are down carry nothing.
        if u32::from_str_radix(f[3], 16)
            .map(|fl| fl & 0x1 == 0)
            .unwrap_or(true)
        {
            continue;
        }
        out.push(Route {
            interface: f[0].to_string(),
            destination: IpAddr::V4(dest),
            prefix_len: u32::from(mask).count_ones() as u8,
            gateway: (!gw.is_unspecified()).then_some(IpAddr::V4(gw)),
        });
    }
    out
}

fn hex_v4(s: &str) -> Option<Ipv4Addr> {
    let v = u32::from_str_radix(s, 16).ok()?;
    // The kernel prints the in-memory (network order) value as a host integer.
    Some(Ipv4Addr::from(v.to_ne_bytes()))
}

/// Parses `/proc/net/ipv6_route`: dest, dest prefix, src, src prefix, next hop, metric,
/// refcount, use, flags, interface.
pub fn parse_ipv6_routes(text: &str) -> Vec<Route> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let (Some(dest), Ok(plen), Some(gw)) =
            (hex_v6(f[0]), u8::from_str_radix(f[1], 16), hex_v6(f[4]))
        else {
            continue;
        };
        // Loopback and reject routes ("lo") never belong to a NIC.
        if f[9] == "lo" {
            continue;
        }
        out.push(Route {
            interface: f[9].to_string(),
            destination: IpAddr::V6(dest),
            prefix_len: plen,
            gateway: (!gw.is_unspecified()).then_some(IpAddr::V6(gw)),
        });
    }
    out
}

fn hex_v6(s: &str) -> Option<Ipv6Addr> {
    (s.len() == 32)
        .then(|| u128::from_str_radix(s, 16).ok().map(Ipv6Addr::from))
        .flatten()
}

/// Reads the routing tables under `proc_root` (normally `/proc`; the agent runs in the
/// host network namespace) and the interface addresses of this network namespace.
pub fn read_host_network(proc_root: &Path) -> Result<HostNetwork, Error> {
    let mut routes = Vec::new();
    let v4 = proc_root.join("net/route");
    match std::fs::read_to_string(&v4) {
        Ok(t) => routes.extend(parse_ipv4_routes(&t)),
        Err(e) => return Err(io_error(&v4, e)),
    }
    let v6 = proc_root.join("net/ipv6_route");
    match std::fs::read_to_string(&v6) {
        Ok(t) => routes.extend(parse_ipv6_routes(&t)),
        // IPv6 may be disabled on the host.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&v6, e)),
    }
    Ok(HostNetwork {
        routes,
        addresses: interface_addresses()?,
    })
}

/// `getifaddrs(3)`: every address on every interface of this network namespace.
pub fn interface_addresses() -> Result<Vec<InterfaceAddress>, Error> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io_error("getifaddrs", std::io::Error::last_os_error()));
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr points at a sockaddr whose family says which struct it is.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let address = match family {
            libc::AF_INET => {
                // SAFETY: family AF_INET means a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::V4(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()))
            }
            libc::AF_INET6 => {
                // SAFETY: family AF_INET6 means a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
            }
            _ => continue,
        };
        out.push(InterfaceAddress {
            interface: name,
            address,
        });
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth1\t0000FEA9\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
eth2\t0001000A\t00000000\t0000\t0\t0\t0\t00FFFFFF\t0\t0\t0
";

    const ROUTE6: &str = "fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth1
20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth3
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth1
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000001 00000000 80200001       lo
";

    #[test]
    fn parses_proc_routes() {
        let r = parse_ipv4_routes(ROUTE);
        assert_eq!(r.len(), 3, "the down route on eth2 is skipped: {r:?}");
        assert_eq!(r[0].to_string(), "default via 10.0.2.1 dev eth0");
        assert_eq!(r[1].to_string(), "10.0.2.0/24 dev eth0");
        assert!(
            r[2].is_link_local(),
            "169.254.0.0/16 is link-local: {}",
            r[2]
        );
        let r6 = parse_ipv6_routes(ROUTE6);
        assert_eq!(r6.len(), 3, "lo skipped: {r6:?}");
        assert!(r6[0].is_link_local() && r6[2].is_link_local());
        assert_eq!(r6[1].to_string(), "2001:db8::/64 dev eth3");
    }

    fn cand<'a>(ifs: &'a [String], mac: Option<&'a str>) -> Candidate<'a> {
        Candidate {
            device_index: 1,
            address: "0000:00:06.0",
            interfaces: ifs,
            mac,
        }
    }

    #[test]
    fn refuses_routes_node_ip_and_primary_but_allows_link_local() {
        let mut routes = parse_ipv4_routes(ROUTE);
        routes.extend(parse_ipv6_routes(ROUTE6));
        let net = HostNetwork {
            routes,
            addresses: vec![InterfaceAddress {
                interface: "eth4".into(),
                address: "10.0.9.7".parse().expect("ip"),
            }],
        };
        let policy = SafetyPolicy {
            node_ips: vec!["10.0.9.7".parse().expect("ip")],
            primary_macs: ["02:aa:00:00:00:01".to_string()].into_iter().collect(),
        };
        let eth0 = vec!["eth0".to_string()];
        let err = check(&cand(&eth0, None), &net, &policy).expect_err("default route");
        assert!(
            err.to_string().contains("default via 10.0.2.1 dev eth0"),
            "{err}"
        );
        let eth1 = vec!["eth1".to_string()];
        assert_eq!(
            check(&cand(&eth1, None), &net, &policy),
            Ok(()),
            "only link-local routes on eth1"
        );
        let eth3 = vec!["eth3".to_string()];
        assert!(matches!(
            check(&cand(&eth3, None), &net, &policy),
            Err(Refusal::CarriesRoutes { .. })
        ));
        let eth4 = vec!["eth4".to_string()];
        let err = check(&cand(&eth4, None), &net, &policy).expect_err("node ip");
        assert!(err.to_string().contains("InternalIP 10.0.9.7"), "{err}");
        let none: Vec<String> = vec![];
        assert!(matches!(
            check(&cand(&none, Some("02:AA:00:00:00:01")), &net, &policy),
            Err(Refusal::PrimaryEni { .. })
        ));
        let idx0 = Candidate {
            device_index: 0,
            address: "0000:00:05.0",
            interfaces: &none,
            mac: None,
        };
        assert!(matches!(
            check(&idx0, &net, &policy),
            Err(Refusal::PrimaryEni { .. })
        ));
        assert_eq!(
            check(&cand(&none, Some("02:bb:00:00:00:02")), &net, &policy),
            Ok(())
        );
    }

    #[test]
    fn reads_this_hosts_addresses() {
        let addrs = interface_addresses().expect("getifaddrs");
        assert!(
            addrs
                .iter()
                .any(|a| a.address == IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
    }
}
