//! Service rule sync at scale on one minion: 1,000 services with 10
//! endpoints each. Rendering is pure; loading runs the real `nft -f` inside
//! a scratch network namespace that this bench makes and removes. Needs
//! root.
//!
//!     cargo bench --bench rules
//!
//! Round 1 installs the rules into an empty namespace; every later round
//! moves every endpoint, so the whole rule set is rewritten and the old
//! chains deleted, as after a large rescheduling.

use kctl::model::Protocol;
use kctl::services::rules::{self, Portal};
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SERVICES: usize = 1_000;
const ENDPOINTS: usize = 10;
const ROUNDS: usize = 6;

fn portals(round: usize) -> Vec<Portal> {
    (0..SERVICES)
        .map(|s| Portal {
            service: format!("svc-{s}"),
            ip: Ipv4Addr::new(10, 0, (s / 250) as u8, (s % 250 + 1) as u8),
            port: 8080,
            protocol: if s % 10 == 0 {
                Protocol::Udp
            } else {
                Protocol::Tcp
            },
            endpoints: (0..ENDPOINTS)
                .map(|e| {
                    let n = (s * ENDPOINTS + e + round * 7) % 60_000;
                    (
                        Ipv4Addr::new(10, 244, (n / 250) as u8, (n % 250 + 1) as u8),
                        8080,
                    )
                })
                .collect(),
            published: vec![],
            node_port: None,
        })
        .collect()
}

struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

fn in_ns(ns: &str, argv: &[&str], stdin: Option<&str>) -> (String, Duration) {
    let started = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ip netns exec");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        argv.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        started.elapsed(),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // Render alone, many times.
    let set = portals(0);
    let renders: Vec<f64> = (0..20)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(rules::render(&set));
            ms(t.elapsed())
        })
        .collect();
    let script = rules::render(&set);
    println!(
        "{SERVICES} services x {ENDPOINTS} endpoints: {} KiB of nft script",
        script.len() / 1024
    );
    println!("render only: median {:.1} ms over 20 runs", median(renders));

    let ns = Namespace(format!("kctl-bench-rules-{}", std::process::id()));
    let made = Command::new("ip").args(["netns", "add", &ns.0]).status();
    assert!(
        made.is_ok_and(|s| s.success()),
        "ip netns add (run as root)"
    );

    let mut totals = Vec::new();
    println!("round  render(ms)  nft -f(ms)  total(ms)");
    for round in 0..ROUNDS {
        let set = portals(round);
        let t = Instant::now();
        let script = rules::render(&set);
        let render_time = t.elapsed();
        let (_, load_time) = in_ns(&ns.0, &["nft", "--file", "-"], Some(&script));
        let total = render_time + load_time;
        println!(
            "{:>5}  {:>10.1}  {:>10.1}  {:>9.1}",
            round + 1,
            ms(render_time),
            ms(load_time),
            ms(total)
        );
        if round > 0 {
            totals.push(ms(total));
        }
    }
    // The namespace holds exactly the last round's rules: one chain per
    // service plus the five hook chains, and the last round's endpoints.
    let (listing, _) = in_ns(&ns.0, &["nft", "list", "table", "ip", "kctl"], None);
    let chains = listing.matches("\tchain ").count();
    assert_eq!(chains, SERVICES + 5, "unexpected chains in the table");
    let last = portals(ROUNDS - 1);
    let (ip, port) = last[0].endpoints[0];
    assert!(
        listing.contains(&format!("{ip} . {port}")),
        "last round's endpoints missing"
    );
    println!(
        "full resync (render + nft -f), median of rounds 2-{ROUNDS}: {:.1} ms",
        median(totals)
    );
}
