use super::*;

fn portal(service: &str, ip: &str, endpoints: &[(&str, u16)]) -> Portal {
    Portal {
        service: service.into(),
        ip: ip.parse().unwrap(),
        port: 8080,
        protocol: Protocol::Tcp,
        endpoints: endpoints
            .iter()
            .map(|(ip, p)| (ip.parse().unwrap(), *p))
            .collect(),
        published: vec![],
        node_port: None,
    }
}

#[test]
fn replaces_the_table_whole() {
    let rules = render(&[]);
    assert!(rules.starts_with("table ip kctl\ndelete table ip kctl\ntable ip kctl {\n"));
    assert!(rules.ends_with("}\n"));
    assert!(
        !rules.contains("elements"),
        "empty sets have no element list:\n{rules}"
    );
}

#[test]
fn spreads_evenly_over_endpoints() {
    let p = portal(
        "web",
        "10.0.0.1",
        &[
            ("10.101.1.2", 8080),
            ("10.101.2.2", 8080),
            ("10.101.2.3", 9090),
        ],
    );
    let rules = render(std::slice::from_ref(&p));
    let chain = service_chain(&p);
    assert!(
        rules.contains(&format!("10.0.0.1 . tcp . 8080 : goto {chain}")),
        "{rules}"
    );
    assert!(rules.contains(
        "meta l4proto tcp dnat ip addr . port to numgen random mod 3 map { 0 : 10.101.1.2 . 8080, 1 : 10.101.2.2 . 8080, 2 : 10.101.2.3 . 9090 }"
    ), "{rules}");
    // Every endpoint can reach itself through the portal.
    for ip in ["10.101.1.2", "10.101.2.2", "10.101.2.3"] {
        assert!(
            rules.contains(&format!("{ip} . {ip}")),
            "{ip} missing from hairpin"
        );
    }
    assert!(rules.contains("ct status dnat ip saddr . ip daddr @hairpin masquerade"));
    // Both ways in: from pods and other machines, and from the minion.
    assert!(rules.contains("type nat hook prerouting priority -101"));
    assert!(rules.contains("type nat hook output priority -101"));
}

#[test]
fn service_without_endpoints_is_rejected() {
    let mut udp = portal("dns", "10.0.0.2", &[]);
    udp.protocol = Protocol::Udp;
    let rules = render(&[portal("web", "10.0.0.1", &[]), udp]);
    assert!(
        rules.contains("elements = { 10.0.0.1 . tcp . 8080, 10.0.0.2 . udp . 8080 }"),
        "{rules}"
    );
    assert!(rules.contains("@no_endpoints meta l4proto tcp reject with tcp reset"));
    assert!(rules.contains("type filter hook forward priority -1"));
    assert!(
        !rules.contains("goto svc-"),
        "no service chain without endpoints"
    );
}

#[test]
fn udp_portals_dnat_udp() {
    let mut p = portal("dns", "10.0.0.3", &[("10.101.1.5", 53)]);
    p.protocol = Protocol::Udp;
    let rules = render(std::slice::from_ref(&p));
    assert!(rules.contains("10.0.0.3 . udp . 8080 : goto"));
    assert!(rules.contains("meta l4proto udp dnat ip addr . port to numgen random mod 1"));
    assert_ne!(
        service_chain(&p),
        service_chain(&portal("dns", "10.0.0.3", &[]))
    );
}

#[test]
fn digest_changes_with_endpoints() {
    let a = [portal("web", "10.0.0.1", &[("10.101.1.2", 8080)])];
    let b = [portal("web", "10.0.0.1", &[("10.101.1.3", 8080)])];
    assert_eq!(digest(&a), digest(&a.clone()));
    assert_ne!(digest(&a), digest(&b));
}

/// `nft --check` parses the script without touching the kernel's rules
/// (`scripts/setup` installs nft).
#[test]
fn nft_accepts_the_script() {
    let version = std::process::Command::new("nft")
        .arg("--version")
        .output()
        .expect("nft is installed (scripts/setup)");
    assert!(version.status.success());
    let mut udp = portal("dns", "10.0.0.2", &[("10.101.1.7", 53)]);
    udp.protocol = Protocol::Udp;
    let script = render(&[
        portal(
            "web",
            "10.0.0.1",
            &[("10.101.1.2", 8080), ("10.101.2.2", 8080)],
        ),
        portal("empty", "10.0.0.9", &[]),
        udp,
    ]);
    let mut child = std::process::Command::new("nft")
        .args(["--check", "--file", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `nft list table ip kctl` as nft 1.0 prints the rules of `tomcat` (two
/// endpoints) and `empty` (none).
fn listing(tomcat_chain: &str) -> String {
    format!(
        "table ip kctl {{
\tset hairpin {{
\t\ttype ipv4_addr . ipv4_addr
\t\telements = {{ 10.101.1.2 . 10.101.1.2,
\t\t\t     10.101.2.2 . 10.101.2.2 }}
\t}}

\tmap services {{
\t\ttype ipv4_addr . inet_proto . inet_service : verdict
\t\telements = {{ 10.101.128.1 . tcp . 8080 : goto {tomcat_chain} }}
\t}}

\tset no_endpoints {{
\t\ttype ipv4_addr . inet_proto . inet_service
\t\telements = {{ 10.101.128.2 . tcp . 8080 }}
\t}}

\tchain nat-prerouting {{
\t}}

\tchain nat-output {{
\t}}

\tchain nat-postrouting {{
\t}}

\tchain filter-output {{
\t}}

\tchain filter-forward {{
\t}}

\tchain {tomcat_chain} {{
\t\tcomment \"tomcat portal\"
\t\tmeta l4proto tcp dnat ip to numgen random mod 2 map {{ 0 : 10.101.1.2 . 8080, 1 : 10.101.2.2 . 8080 }}
\t}}
}}
"
    )
}

#[test]
fn live_rules_that_match_have_no_drift_and_each_difference_is_named() {
    let tomcat = portal(
        "tomcat",
        "10.101.128.1",
        &[("10.101.1.2", 8080), ("10.101.2.2", 8080)],
    );
    let empty = portal("empty", "10.101.128.2", &[]);
    let text = listing(&service_chain(&tomcat));
    assert_eq!(
        drift(&[tomcat.clone(), empty.clone()], Some(&text)),
        Vec::<String>::new()
    );

    // An endpoint gone from etcd but still in the rules; a service unknown
    // to the rules; one the rules have that etcd does not.
    let one_endpoint = portal("tomcat", "10.101.128.1", &[("10.101.1.2", 8080)]);
    let other = portal("db", "10.101.128.3", &[("10.101.1.5", 5432)]);
    assert_eq!(
        drift(&[one_endpoint, other], Some(&text)),
        [
            "portal 10.101.128.1 . tcp . 8080 (service tomcat) leads to [10.101.1.2 . 8080, 10.101.2.2 . 8080], not [10.101.1.2 . 8080]",
            "portal 10.101.128.3 . tcp . 8080 (service db) is missing",
            "portal 10.101.128.2 . tcp . 8080 is not a service in etcd",
        ]
    );
    let flushed = text.replace("\tchain nat-output {\n\t}\n", "");
    assert_eq!(
        drift(&[tomcat.clone(), empty], Some(&flushed)),
        ["chain nat-output is missing"]
    );
    assert_eq!(drift(&[tomcat], None).len(), 1);
}

#[test]
fn a_published_portal_answers_on_the_machines_and_masquerades_only_toward_other_minions() {
    let mut p = portal("web", "10.0.0.1", &[("10.101.1.2", 8080)]);
    p.published = vec![
        "10.101.0.11".parse().unwrap(),
        "10.101.0.12".parse().unwrap(),
    ];
    let mut empty = portal("idle", "10.0.0.2", &[]);
    empty.published = vec!["10.101.0.11".parse().unwrap()];
    let rules = render(&[p.clone(), empty.clone()]);
    let chain = service_chain(&p);
    for key in ["10.0.0.1", "10.101.0.11", "10.101.0.12"] {
        assert!(
            rules.contains(&format!("{key} . tcp . 8080 : goto {chain}")),
            "{key}:\n{rules}"
        );
    }
    assert!(rules.contains("10.101.0.11 . tcp . 8080"), "{rules}");
    assert!(
        rules.contains(
            "set published {\n    type ipv4_addr\n    elements = { 10.101.0.11, 10.101.0.12 }"
        ),
        "{rules}"
    );
    // The pod bridge's name, as converge makes it.
    assert_eq!(crate::converge::docker::POD_BRIDGE, "kctl0");
    assert!(
        rules.contains(
            "ct status dnat ct original ip daddr @published oifname != \"kctl0\" masquerade"
        ),
        "{rules}"
    );
    // No service published: the set is empty, nothing else changes.
    let plain = render(&[portal("web", "10.0.0.1", &[("10.101.1.2", 8080)])]);
    assert!(
        plain.contains("set published {\n    type ipv4_addr\n  }"),
        "{plain}"
    );
    // A minion whose table lacks a published key drifted.
    let listing = plain.replace("\n", "\n\t");
    let drift = drift(&[p], Some(&listing));
    assert!(
        drift
            .iter()
            .any(|d| d.contains("portal 10.101.0.11 . tcp . 8080 (service web) is missing")),
        "{drift:?}"
    );
}

#[test]
fn a_node_port_answers_on_every_minion_at_its_own_port() {
    let mut p = portal("web", "10.0.0.1", &[("10.101.1.2", 8080)]);
    p.node_port = Some(NodePortRule {
        port: 30080,
        on: vec![
            "10.101.0.11".parse().unwrap(),
            "10.101.0.12".parse().unwrap(),
        ],
    });
    let rules = render(std::slice::from_ref(&p));
    let chain = service_chain(&p);
    for key in [
        "10.0.0.1 . tcp . 8080",
        "10.101.0.11 . tcp . 30080",
        "10.101.0.12 . tcp . 30080",
    ] {
        assert!(
            rules.contains(&format!("{key} : goto {chain}")),
            "{key}:\n{rules}"
        );
    }
    // The service port is not opened on the machines, only the node port.
    assert!(!rules.contains("10.101.0.11 . tcp . 8080"), "{rules}");
    // Replies of a pod elsewhere come back through the machine asked.
    assert!(
        rules.contains(
            "set published {\n    type ipv4_addr\n    elements = { 10.101.0.11, 10.101.0.12 }"
        ),
        "{rules}"
    );
    // Without endpoints the node port is refused at once, like the portal.
    p.endpoints.clear();
    let rules = render(&[p]);
    assert!(
        rules.contains("set no_endpoints {\n    type ipv4_addr . inet_proto . inet_service\n    elements = { 10.0.0.1 . tcp . 8080, 10.101.0.11 . tcp . 30080, 10.101.0.12 . tcp . 30080 }"),
        "{rules}"
    );
}

#[test]
fn a_key_twice_is_written_once_and_a_node_port_outside_the_range_never() {
    let mut a = portal("a", "10.0.0.1", &[("10.101.1.2", 8080)]);
    a.published = vec!["10.101.0.11".parse().unwrap()];
    a.port = 30080;
    let mut b = portal("b", "10.0.0.2", &[("10.101.1.3", 8080)]);
    b.node_port = Some(NodePortRule {
        port: 30080,
        on: vec!["10.101.0.11".parse().unwrap()],
    });
    let rules = render(&[a, b]);
    assert_eq!(
        rules.matches("10.101.0.11 . tcp . 30080 :").count(),
        1,
        "{rules}"
    );
    // A record whose node port is sshd's is not believed.
    let mut state = crate::state::ClusterState::default();
    let mut record = crate::services::tests::service("web", None);
    record.node_port = Some(22);
    state.services.insert("web".into(), record);
    let portals = portals(&state, &Default::default());
    assert_eq!(portals[0].node_port, None);
}

/// A service id that would close the chain and add a table of its own
/// (records read back are untrusted) never reaches the script's text.
#[test]
fn only_a_checked_service_id_reaches_the_script() {
    let crafted =
        "web\" }\n}\ntable ip evil { chain c { type filter hook input priority 0; policy drop; }";
    let rules = render(&[portal(crafted, "10.0.0.1", &[("10.101.1.2", 8080)])]);
    assert!(!rules.contains("evil"), "{rules}");
    assert!(!rules.contains("comment"), "{rules}");
    let rules = render(&[portal("web", "10.0.0.1", &[("10.101.1.2", 8080)])]);
    assert!(rules.contains("comment \"web portal\""), "{rules}");
}
