//! The checks that keep the agent from cutting its node off the network or its disks.
//!
//! A device is refused when it is not a network controller (PCI class `0x02xxxx`), when a
//! storage driver holds it, when it claims to be an ENA device without Amazon's vendor ID,
//! when IMDS says its MAC is not the NodeENI's ENI, when it is the primary ENI (device
//! index 0, or the MAC IMDS names as the instance's primary), when its interface carries
//! any route (in any routing table) other than link-local and multicast or is named by a
//! policy rule, or when it holds one of the node's InternalIPs.
//! The decision is a pure function over a snapshot of the host's routes, rules and
//! addresses; reading that snapshot (rtnetlink, or a fake tree's `net/route` files, and
//! `getifaddrs`) is the only I/O here.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use crate::error::{Error, io_error};
use crate::netlink::{self, DumpKind, RT_TABLE_MAIN};

/// One route, as the kernel's routing tables list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub interface: String,
    pub destination: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    /// The routing table (254 is main, 255 local).
    pub table: u32,
    /// `RTN_*` (1 unicast, 2 local, 3 broadcast, …).
    pub route_type: u8,
}

/// `RTN_UNICAST`: what `/proc/net/route` lists.
const RTN_UNICAST: u8 = 1;

impl Route {
    /// Link-local and multicast routes exist on every interface that is up; they carry no
    /// traffic the node depends on (IMDS at 169.254.169.254 goes via the primary ENI's
    /// default route, not a link-local route on a secondary ENI).
    pub fn is_link_local(&self) -> bool {
        match self.destination {
            IpAddr::V4(a) => {
                (self.prefix_len >= 16 && a.octets()[..2] == [169, 254])
                    || (self.prefix_len >= 4 && a.octets()[0] & 0xf0 == 0xe0)
            }
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
        if self.route_type != RTN_UNICAST {
            write!(f, "{} ", netlink::route_type_name(self.route_type))?;
        }
        if unspecified && self.prefix_len == 0 {
            f.write_str("default")?;
        } else if u32::from(self.prefix_len) == host_prefix_len(self.destination) {
            // A host route, as `ip route` prints it.
            write!(f, "{}", self.destination)?;
        } else {
            write!(f, "{}/{}", self.destination, self.prefix_len)?;
        }
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        write!(f, " dev {}", self.interface)?;
        if self.table != RT_TABLE_MAIN {
            write!(f, " table {}", netlink::table_name(self.table))?;
        }
        Ok(())
    }
}

fn host_prefix_len(a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// A policy routing rule that matches an interface by name (`iif` / `oif`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRule {
    pub priority: u32,
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub table: u32,
}

impl PolicyRule {
    fn names(&self, interface: &str) -> bool {
        self.iif.as_deref() == Some(interface) || self.oif.as_deref() == Some(interface)
    }
}

impl fmt::Display for PolicyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {}:", self.priority)?;
        if let Some(i) = &self.iif {
            write!(f, " iif {i}")?;
        }
        if let Some(o) = &self.oif {
            write!(f, " oif {o}")?;
        }
        write!(f, " lookup {}", netlink::table_name(self.table))
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
    /// Every table's routes (a fake tree's files give the main table only).
    pub routes: Vec<Route>,
    pub addresses: Vec<InterfaceAddress>,
    /// Policy rules that name an interface.
    pub rules: Vec<PolicyRule>,
}

/// What the node tells us about itself.
#[derive(Clone, Debug, Default)]
pub struct SafetyPolicy {
    /// The Node's InternalIP addresses.
    pub node_ips: Vec<IpAddr>,
    /// MACs of the primary ENI (from IMDS `meta-data/mac`), lower-case.
    pub primary_macs: BTreeSet<String>,
}

/// What IMDS says about the MAC of the NodeENI's ENI.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum EniMac {
    /// Not asked: IMDS is disabled or did not answer, or the device has no ENI ID yet.
    #[default]
    Unchecked,
    /// IMDS lists this MAC (lower-case) for the ENI.
    Listed { eni: String, mac: String },
    /// IMDS answered but lists no interface with the ENI's ID.
    NotListed { eni: String },
}

/// A device the agent is about to bind.
#[derive(Clone, Debug)]
pub struct Candidate<'a> {
    pub device_index: i32,
    pub address: &'a str,
    /// Its interfaces now (empty once a DPDK driver holds it).
    pub interfaces: &'a [String],
    pub mac: Option<&'a str>,
    /// sysfs `class` (`0x020000`) and `vendor` (`0x1d0f`).
    pub class: Option<&'a str>,
    pub vendor: Option<&'a str>,
    /// Every driver that holds the device or held it: the PCI driver now, the drivers of
    /// its virtio children, and the original driver the journal recorded.
    pub drivers: &'a [String],
    pub eni_mac: &'a EniMac,
}

/// Drivers of disks and disk controllers: a device one of them holds is never a NIC.
pub const STORAGE_DRIVERS: &[&str] = &[
    "nvme",
    "ahci",
    "ata_piix",
    "ata_generic",
    "virtio_blk",
    "virtio_scsi",
    "vmw_pvscsi",
    "megaraid_sas",
    "mpt3sas",
    "mptspi",
    "isci",
    "sym53c8xx",
    "xen-blkfront",
];
/// PCI vendor ID of Amazon (ENA NICs, and also EBS and instance-store NVMe controllers).
pub const AMAZON_VENDOR: &str = "0x1d0f";
/// The ENA driver's name.
pub const ENA_DRIVER: &str = "ena";

/// Why a device must not be bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    NotANetworkDevice {
        class: Option<String>,
    },
    StorageDriver {
        driver: String,
    },
    NotEnaVendor {
        vendor: Option<String>,
    },
    MacNotOfEni {
        mac: String,
        eni: String,
        imds_mac: Option<String>,
    },
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
            Refusal::NotANetworkDevice { class } => write!(
                f,
                "it is not a network controller (PCI class {}, a NIC is 0x02xxxx); binding it could take a disk or another device away from the node",
                class
                    .as_deref()
                    .unwrap_or("unknown: sysfs has no class file")
            ),
            Refusal::StorageDriver { driver } => write!(
                f,
                "it is held by the storage driver {driver}; binding it would take a disk away from the node"
            ),
            Refusal::NotEnaVendor { vendor } => write!(
                f,
                "it is an ENA device (driver ena) but its PCI vendor is {}, not Amazon's {AMAZON_VENDOR}",
                vendor.as_deref().unwrap_or("unknown")
            ),
            Refusal::MacNotOfEni { mac, eni, imds_mac } => match imds_mac {
                Some(m) => write!(
                    f,
                    "its MAC {mac} is not the MAC of {eni}: IMDS lists {m} for it (dpdkPCIAddress names another interface)"
                ),
                None => write!(
                    f,
                    "IMDS lists no interface for {eni}, so its MAC {mac} cannot be confirmed as that ENI's"
                ),
            },
            Refusal::PrimaryEni { detail } => write!(
                f,
                "it is the node's primary ENI ({detail}); binding it would cut the node off"
            ),
            Refusal::CarriesRoutes { interface, routes } => write!(
                f,
                "interface {interface} carries routes ({}); binding it would cut traffic the node uses (only 169.254.0.0/16, link-local and multicast routes are allowed, in any table)",
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

/// Decides whether `c` may be bound: what the device is, whose it is, what the node uses.
pub fn check(c: &Candidate<'_>, net: &HostNetwork, policy: &SafetyPolicy) -> Result<(), Refusal> {
    check_identity(c)?;
    check_eni_mac(c)?;
    check_in_use(c, net, policy)
}

/// A network controller, not held by a storage driver, and an ENA device only with
/// Amazon's vendor ID.
fn check_identity(c: &Candidate<'_>) -> Result<(), Refusal> {
    let network_class = c.class.is_some_and(|class| {
        let hex = class.trim_start_matches("0x");
        hex.len() == 6 && hex.starts_with("02")
    });
    if !network_class {
        return Err(Refusal::NotANetworkDevice {
            class: c.class.map(str::to_string),
        });
    }
    if let Some(driver) = c
        .drivers
        .iter()
        .find(|d| STORAGE_DRIVERS.contains(&d.as_str()))
    {
        return Err(Refusal::StorageDriver {
            driver: driver.clone(),
        });
    }
    if c.drivers.iter().any(|d| d == ENA_DRIVER)
        && !c
            .vendor
            .is_some_and(|v| v.eq_ignore_ascii_case(AMAZON_VENDOR))
    {
        return Err(Refusal::NotEnaVendor {
            vendor: c.vendor.map(str::to_string),
        });
    }
    Ok(())
}

/// When IMDS answered, the device's MAC must be the one it lists for the NodeENI's ENI.
fn check_eni_mac(c: &Candidate<'_>) -> Result<(), Refusal> {
    let Some(mac) = c.mac.map(str::to_ascii_lowercase) else {
        return Ok(());
    };
    match c.eni_mac {
        EniMac::Unchecked => Ok(()),
        EniMac::Listed { mac: listed, .. } if *listed == mac => Ok(()),
        EniMac::Listed { eni, mac: listed } => Err(Refusal::MacNotOfEni {
            mac,
            eni: eni.clone(),
            imds_mac: Some(listed.clone()),
        }),
        EniMac::NotListed { eni } => Err(Refusal::MacNotOfEni {
            mac,
            eni: eni.clone(),
            imds_mac: None,
        }),
    }
}

/// Not the primary ENI, no routes or rules, no InternalIP.
fn check_in_use(
    c: &Candidate<'_>,
    net: &HostNetwork,
    policy: &SafetyPolicy,
) -> Result<(), Refusal> {
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
            .chain(
                net.rules
                    .iter()
                    .filter(|r| r.names(iface))
                    .map(|r| r.to_string()),
            )
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
            table: RT_TABLE_MAIN,
            route_type: RTN_UNICAST,
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
            table: RT_TABLE_MAIN,
            route_type: RTN_UNICAST,
        });
    }
    out
}

fn hex_v6(s: &str) -> Option<Ipv6Addr> {
    (s.len() == 32)
        .then(|| u128::from_str_radix(s, 16).ok().map(Ipv6Addr::from))
        .flatten()
}

/// Reads the host's routes, rules and addresses.
///
/// When `proc_root` is a procfs mount (the host's `/proc`; the agent runs in the host
/// network namespace), routes and rules come from rtnetlink: every table, both families.
/// A plain directory (a test's fake tree) is read as `net/route` and `net/ipv6_route`.
pub fn read_host_network(proc_root: &Path) -> Result<HostNetwork, Error> {
    let (routes, rules) = if is_procfs(proc_root) {
        kernel_routes_and_rules()?
    } else {
        (proc_file_routes(proc_root)?, Vec::new())
    };
    Ok(HostNetwork {
        routes,
        addresses: interface_addresses()?,
        rules,
    })
}

/// `PROC_SUPER_MAGIC` (linux/magic.h).
const PROC_SUPER_MAGIC: libc::c_long = 0x9fa0;

fn is_procfs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs(2) on a NUL-terminated path into a zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as libc::c_long;
    rc == 0 && magic == PROC_SUPER_MAGIC
}

/// Every route of every table and the rules that name an interface, from rtnetlink.
fn kernel_routes_and_rules() -> Result<(Vec<Route>, Vec<PolicyRule>), Error> {
    let read = |kind: DumpKind| {
        netlink::dump(kind).map_err(|e| io_error(format!("rtnetlink {kind:?} dump"), e))
    };
    let invalid = |e: netlink::ParseError| Error::Sysfs {
        path: "rtnetlink".into(),
        message: e.to_string(),
    };
    let routes = netlink::parse_routes(&read(DumpKind::Routes)?).map_err(invalid)?;
    let rules = netlink::parse_rules(&read(DumpKind::Rules)?).map_err(invalid)?;
    Ok((
        routes_by_name(routes, netlink::interface_name),
        rules_naming_interfaces(rules),
    ))
}

/// One [`Route`] per next hop whose interface index has a name (`name_of`); routes through
/// no interface (blackhole, unreachable) belong to no device.
pub fn routes_by_name(
    routes: Vec<netlink::NetlinkRoute>,
    name_of: impl Fn(u32) -> Option<String>,
) -> Vec<Route> {
    let mut out = Vec::new();
    for r in routes {
        for (ifindex, gateway) in &r.hops {
            let Some(interface) = name_of(*ifindex) else {
                continue;
            };
            out.push(Route {
                interface,
                destination: r.destination,
                prefix_len: r.prefix_len,
                gateway: *gateway,
                table: r.table,
                route_type: r.route_type,
            });
        }
    }
    out
}

/// The rules that match on an interface name.
pub fn rules_naming_interfaces(rules: Vec<netlink::NetlinkRule>) -> Vec<PolicyRule> {
    rules
        .into_iter()
        .filter(|r| r.iif.is_some() || r.oif.is_some())
        .map(|r| PolicyRule {
            priority: r.priority,
            iif: r.iif,
            oif: r.oif,
            table: r.table,
        })
        .collect()
}

/// `net/route` (IPv4 main table) and `net/ipv6_route` under a fake tree.
fn proc_file_routes(proc_root: &Path) -> Result<Vec<Route>, Error> {
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
    Ok(routes)
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

    const NIC_CLASS: Option<&str> = Some("0x020000");
    const NO_DRIVERS: &[String] = &[];
    static UNCHECKED: EniMac = EniMac::Unchecked;

    fn cand<'a>(ifs: &'a [String], mac: Option<&'a str>) -> Candidate<'a> {
        Candidate {
            device_index: 1,
            address: "0000:00:06.0",
            interfaces: ifs,
            mac,
            class: NIC_CLASS,
            vendor: Some(AMAZON_VENDOR),
            drivers: NO_DRIVERS,
            eni_mac: &UNCHECKED,
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
            rules: vec![],
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
            ..cand(&none, None)
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
    fn refuses_what_is_not_a_nic_or_is_held_by_a_storage_driver() {
        let (net, policy, none) = (
            HostNetwork::default(),
            SafetyPolicy::default(),
            Vec::<String>::new(),
        );
        // An EBS volume: Amazon's vendor ID, class 0x010802 (NVM Express), driver nvme.
        let nvme = vec!["nvme".to_string()];
        let ebs = Candidate {
            class: Some("0x010802"),
            drivers: &nvme,
            ..cand(&none, None)
        };
        let err = check(&ebs, &net, &policy).expect_err("not a NIC");
        assert_eq!(
            err,
            Refusal::NotANetworkDevice {
                class: Some("0x010802".into())
            }
        );
        assert!(err.to_string().contains("0x010802"), "{err}");
        let no_class = Candidate {
            class: None,
            ..cand(&none, None)
        };
        assert!(matches!(
            check(&no_class, &net, &policy),
            Err(Refusal::NotANetworkDevice { class: None })
        ));
        // Network class but a storage driver holds it (or its virtio child).
        for driver in ["nvme", "virtio_blk", "ahci"] {
            let held = vec!["virtio-pci".to_string(), driver.to_string()];
            let c = Candidate {
                drivers: &held,
                ..cand(&none, None)
            };
            assert_eq!(
                check(&c, &net, &policy),
                Err(Refusal::StorageDriver {
                    driver: driver.into()
                })
            );
        }
        // The QEMU guest's e1000e: Intel's vendor ID, network class.
        let e1000e = vec!["e1000e".to_string()];
        let intel = Candidate {
            vendor: Some("0x8086"),
            drivers: &e1000e,
            ..cand(&none, None)
        };
        assert_eq!(check(&intel, &net, &policy), Ok(()));
    }

    #[test]
    fn an_ena_device_needs_amazons_vendor_id() {
        let (net, policy, none) = (
            HostNetwork::default(),
            SafetyPolicy::default(),
            Vec::<String>::new(),
        );
        let ena = vec!["ena".to_string()];
        let ok = Candidate {
            drivers: &ena,
            vendor: Some("0x1D0F"),
            ..cand(&none, None)
        };
        assert_eq!(check(&ok, &net, &policy), Ok(()));
        let spoofed = Candidate {
            vendor: Some("0x8086"),
            ..ok.clone()
        };
        let err = check(&spoofed, &net, &policy).expect_err("not Amazon's");
        assert!(
            err.to_string().contains("0x8086") && err.to_string().contains("0x1d0f"),
            "{err}"
        );
    }

    #[test]
    fn the_mac_must_be_the_one_imds_lists_for_the_eni() {
        let (net, policy, none) = (
            HostNetwork::default(),
            SafetyPolicy::default(),
            Vec::<String>::new(),
        );
        let listed = EniMac::Listed {
            eni: "eni-0aaaa".into(),
            mac: "02:00:00:00:00:06".into(),
        };
        let same = Candidate {
            eni_mac: &listed,
            ..cand(&none, Some("02:00:00:00:00:06"))
        };
        assert_eq!(check(&same, &net, &policy), Ok(()));
        let other = Candidate {
            eni_mac: &listed,
            ..cand(&none, Some("02:00:00:00:00:07"))
        };
        let err = check(&other, &net, &policy).expect_err("another ENI's NIC");
        assert!(
            err.to_string().contains("02:00:00:00:00:07")
                && err.to_string().contains("IMDS lists 02:00:00:00:00:06"),
            "{err}"
        );
        let missing = EniMac::NotListed {
            eni: "eni-0aaaa".into(),
        };
        let unlisted = Candidate {
            eni_mac: &missing,
            ..cand(&none, Some("02:00:00:00:00:06"))
        };
        assert!(matches!(
            check(&unlisted, &net, &policy),
            Err(Refusal::MacNotOfEni { imds_mac: None, .. })
        ));
    }

    #[test]
    fn routes_of_any_table_and_rules_naming_the_interface_refuse_it() {
        // The real kernel's bytes of netlink/testdata: v0 (index 3) has routes only in
        // tables 2 and 100 and its address in table local; rule 100 names v1 (index 2).
        let routes = netlink::parse_routes(include_bytes!("netlink/testdata/route-dump.bin"))
            .expect("routes");
        let rules =
            netlink::parse_rules(include_bytes!("netlink/testdata/rule-dump.bin")).expect("rules");
        let names = |i: u32| {
            ["lo", "v1", "v0"]
                .get(i as usize - 1)
                .map(|n| n.to_string())
        };
        let net = HostNetwork {
            routes: routes_by_name(routes, names),
            addresses: vec![],
            rules: rules_naming_interfaces(rules),
        };
        assert!(
            net.routes
                .iter()
                .filter(|r| r.interface == "v0" && r.table == RT_TABLE_MAIN)
                .all(Route::is_link_local),
            "v0 has nothing but fe80::/64 in main, which is all /proc/net/route shows"
        );
        let policy = SafetyPolicy::default();
        let v0 = vec!["v0".to_string()];
        let err = check(&cand(&v0, None), &net, &policy).expect_err("table 2 and 100 routes");
        let msg = err.to_string();
        for needle in [
            "default via 10.20.0.1 dev v0 table 2",
            "10.9.0.0/24 via 10.20.0.1 dev v0 table 100",
            "10.30.0.0/16 via 10.20.0.2 dev v0 table 100",
            "2001:db8:1::/64 dev v0 table 100",
            "local 10.20.0.5 dev v0 table local",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
        }
        let v1 = vec!["v1".to_string()];
        let err = check(&cand(&v1, None), &net, &policy).expect_err("rule 100");
        assert!(
            err.to_string().contains("rule 100: iif v1 lookup 100"),
            "{err}"
        );
        assert!(
            !err.to_string().contains("fe80::"),
            "link-local and multicast routes never block: {err}"
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
