use super::*;

/// Bytes a real kernel (6.x) sent for `testdata/capture.sh`'s namespace: lo is 1, v1 is 2,
/// v0 is 3; v0's routes are only in tables 2 and 100 (and its address in table local).
const ROUTES: &[u8] = include_bytes!("testdata/route-dump.bin");
const RULES: &[u8] = include_bytes!("testdata/rule-dump.bin");
const V0: u32 = 3;

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse().expect("ip"))
}

#[test]
fn a_real_dump_has_the_routes_of_every_table() {
    let routes = parse_routes(ROUTES).expect("parses");
    let on_v0: Vec<&NetlinkRoute> = routes
        .iter()
        .filter(|r| r.hops.iter().any(|h| h.0 == V0))
        .collect();
    let in_main: Vec<&&NetlinkRoute> = on_v0.iter().filter(|r| r.table == RT_TABLE_MAIN).collect();
    assert_eq!(
        in_main.iter().map(|r| r.destination).collect::<Vec<_>>(),
        vec![IpAddr::V6("fe80::".parse().expect("ip"))],
        "capture.sh puts none of v0's routes in main, only the kernel's fe80::/64: {on_v0:?}"
    );
    let default_t2 = on_v0
        .iter()
        .find(|r| r.table == 2)
        .expect("the default route of table 2");
    assert_eq!(
        (
            default_t2.destination,
            default_t2.prefix_len,
            default_t2.route_type
        ),
        (v4("0.0.0.0"), 0, 1)
    );
    assert_eq!(default_t2.hops, vec![(V0, Some(v4("10.20.0.1")))]);
    let t100 = on_v0
        .iter()
        .find(|r| r.table == 100 && r.destination == v4("10.9.0.0"))
        .expect("10.9.0.0/24 in table 100");
    assert_eq!(t100.prefix_len, 24);
    let multipath = on_v0
        .iter()
        .find(|r| r.destination == v4("10.30.0.0"))
        .expect("the multipath route");
    assert_eq!(
        multipath.hops,
        vec![(V0, Some(v4("10.20.0.1"))), (V0, Some(v4("10.20.0.2")))]
    );
    let v6 = on_v0
        .iter()
        .find(|r| r.destination == IpAddr::V6("2001:db8:1::".parse().expect("ip")))
        .expect("the IPv6 route of table 100");
    assert_eq!((v6.table, v6.prefix_len), (100, 64));
    let local = on_v0
        .iter()
        .find(|r| r.table == RT_TABLE_LOCAL && r.destination == v4("10.20.0.5"))
        .expect("v0's address in table local");
    assert_eq!(route_type_name(local.route_type), "local");
    assert!(
        routes
            .iter()
            .any(|r| r.table == RT_TABLE_MAIN && r.hops.iter().any(|h| h.0 == 2)),
        "main table routes are there too (fe80::/64 on v1)"
    );
}

#[test]
fn a_real_rule_dump_names_the_interfaces_and_tables() {
    let rules = parse_rules(RULES).expect("parses");
    let iif = rules.iter().find(|r| r.priority == 100).expect("rule 100");
    assert_eq!(
        (iif.iif.as_deref(), iif.oif.as_deref(), iif.table),
        (Some("v1"), None, 100)
    );
    let from = rules.iter().find(|r| r.priority == 200).expect("rule 200");
    assert_eq!((from.iif.as_deref(), from.table), (None, 2));
    assert!(
        rules
            .iter()
            .any(|r| r.priority == 32766 && r.table == RT_TABLE_MAIN)
    );
}

#[test]
fn truncated_or_lying_messages_are_errors_not_panics() {
    for cut in [1, 7, 17, 40, ROUTES.len() - 3] {
        // Cutting inside the first header leaves nothing to read; anywhere else is an error.
        let r = parse_routes(&ROUTES[..cut]);
        assert!(r.is_err() || cut < NLMSG_HDR_LEN, "cut at {cut}: {r:?}");
    }
    let mut lying = ROUTES.to_vec();
    lying[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
    assert!(parse_routes(&lying).is_err());
    let mut short_attr = RULES.to_vec();
    // The first attribute's length (just after the 16-byte header and 12-byte fib_rule_hdr).
    short_attr[28..30].copy_from_slice(&2u16.to_ne_bytes());
    assert!(parse_rules(&short_attr).is_err());
}

#[test]
fn this_hosts_kernel_answers_with_more_than_the_main_table() {
    let routes = parse_routes(&dump(DumpKind::Routes).expect("RTM_GETROUTE dump")).expect("parses");
    // Every network namespace has 127.0.0.1 in table local, which /proc/net/route never shows.
    assert!(
        routes.iter().any(|r| r.table == RT_TABLE_LOCAL
            && r.destination == v4("127.0.0.1")
            && r.hops
                .iter()
                .any(|h| interface_name(h.0).as_deref() == Some("lo"))),
        "{routes:?}"
    );
    let rules = parse_rules(&dump(DumpKind::Rules).expect("RTM_GETRULE dump")).expect("parses");
    assert!(
        rules.iter().any(|r| r.table == RT_TABLE_LOCAL),
        "the kernel's default rule 0: from all lookup local: {rules:?}"
    );
}
