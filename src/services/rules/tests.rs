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
    }
}

#[test]
fn spreads_evenly_over_endpoints() {
    let p = portal(
        "web",
        "10.0.0.1",
        &[
            ("10.101.1.2", 8080),
            ("10.101.2.2", 8080),
            ("10.101.2.3", 8080),
        ],
    );
    let rules = render(std::slice::from_ref(&p), "");
    let svc = service_chain(&p);
    let picks: Vec<&str> = rules
        .lines()
        .filter(|l| l.starts_with(&format!("-A {svc} ")))
        .collect();
    assert_eq!(picks.len(), 3);
    assert!(
        picks[0].contains("--probability 0.33333333333"),
        "{}",
        picks[0]
    );
    assert!(
        picks[1].contains("--probability 0.50000000000"),
        "{}",
        picks[1]
    );
    assert!(
        !picks[2].contains("statistic"),
        "the last endpoint takes the rest"
    );
    assert_eq!(rules.matches("-j DNAT --to-destination").count(), 3);
    assert!(rules.contains("-A KCTL-SERVICES -d 10.0.0.1/32 -p tcp -m tcp --dport 8080"));
    assert!(rules.contains("-j DNAT --to-destination 10.101.2.3:8080"));
}

#[test]
fn chain_names_fit_iptables() {
    let p = portal(
        "a-very-long-service-name",
        "10.0.0.1",
        &[("10.101.1.2", 65535)],
    );
    assert!(service_chain(&p).len() <= 28);
    assert!(endpoint_chain(&p, "10.101.1.2".parse().unwrap(), 65535).len() <= 28);
}

#[test]
fn service_without_endpoints_is_rejected() {
    let rules = render(&[portal("web", "10.0.0.1", &[])], "");
    assert!(rules.contains("-A KCTL-REJECT -d 10.0.0.1/32 -p tcp -m tcp --dport 8080"));
    assert!(rules.contains("--reject-with tcp-reset"));
    assert!(!rules.contains("KCTL-SVC-"));
    let mut udp = portal("dns", "10.0.0.2", &[]);
    udp.protocol = Protocol::Udp;
    assert!(render(&[udp], "").contains("-p udp -m udp --dport 8080 -m comment --comment \"dns portal has no endpoints\" -j REJECT --reject-with icmp-port-unreachable"));
}

#[test]
fn hooks_are_added_once() {
    let fresh = render(&[], "");
    for hook in [
        "-I PREROUTING 1 -j KCTL-SERVICES",
        "-I OUTPUT 1 -j KCTL-SERVICES",
        "-I POSTROUTING 1 -j KCTL-POSTROUTING",
        "-I OUTPUT 1 -j KCTL-REJECT",
        "-I FORWARD 1 -j KCTL-REJECT",
    ] {
        assert!(fresh.contains(hook), "{hook} missing:\n{fresh}");
    }
    let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:KCTL-SERVICES - [0:0]\n-A PREROUTING -j KCTL-SERVICES\n-A OUTPUT -j KCTL-SERVICES\n-A POSTROUTING -j KCTL-POSTROUTING\nCOMMIT\n*filter\n-A OUTPUT -j KCTL-REJECT\n-A FORWARD -j KCTL-REJECT\nCOMMIT\n";
    let again = render(&[], save);
    assert!(!again.contains("-I "), "hooks added twice:\n{again}");
}

#[test]
fn stale_chains_are_flushed_and_deleted() {
    let old = portal("old", "10.0.0.9", &[("10.101.1.9", 80)]);
    let first = render(std::slice::from_ref(&old), "");
    // What iptables-save would show after the first restore.
    let save = format!(
        "*nat\n{}COMMIT\n",
        first
            .lines()
            .filter(|l| l.starts_with(':'))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
    let second = render(&[], &save);
    let svc = service_chain(&old);
    assert!(second.contains(&format!(":{svc} - [0:0]")));
    assert!(second.contains(&format!("-X {svc}")));
    assert!(!second.contains(&format!("-A {svc}")));
    // Bootstrap's chain is never touched.
    let with_forward = "*filter\n:KCTL-FORWARD - [0:0]\nCOMMIT\n";
    assert!(!render(&[], with_forward).contains("KCTL-FORWARD"));
}

#[test]
fn digest_changes_with_endpoints() {
    let a = [portal("web", "10.0.0.1", &[("10.101.1.2", 8080)])];
    let b = [portal("web", "10.0.0.1", &[("10.101.1.3", 8080)])];
    assert_eq!(digest(&a), digest(&a.clone()));
    assert_ne!(digest(&a), digest(&b));
}

#[test]
fn existing_chains_by_table() {
    let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:KCTL-SERVICES - [0:0]\nCOMMIT\n*filter\n:KCTL-REJECT - [0:0]\nCOMMIT\n";
    let chains = existing_chains(save);
    assert_eq!(chains["nat"].iter().collect::<Vec<_>>(), ["KCTL-SERVICES"]);
    assert_eq!(chains["filter"].iter().collect::<Vec<_>>(), ["KCTL-REJECT"]);
}
