//! The authorized-entry index at scale: 100,000 entries and 10,000 agents. Goal (issue 3):
//! applying one entry change takes under 1 ms.
//!
//! Run: `cargo bench -p sigil-server --bench index`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sigil_core::{RegistrationEntry, SelectorSet};
use sigil_server::index::EntryIndex;
use sigil_spiffe::{SpiffeId, TrustDomain};

const AGENTS: usize = 10_000;
const ALIASES: usize = 100;
const DIRECT_PER_AGENT: usize = 9;
const UNDER_EACH_ALIAS: usize = 100;

fn id(s: &str) -> SpiffeId {
    s.parse().expect("valid id")
}

fn agent(n: usize) -> SpiffeId {
    id(&format!(
        "spiffe://example.org/sigil/agent/join_token/node-{n}"
    ))
}

fn selectors(items: &[String]) -> SelectorSet {
    items
        .iter()
        .map(|s| s.parse().expect("valid selector"))
        .collect()
}

fn entry(n: usize, parent: SpiffeId, hint: &str) -> RegistrationEntry {
    RegistrationEntry {
        id: format!("entry-{n}").parse().expect("valid entry id"),
        spiffe_id: id(&format!("spiffe://example.org/workload/{n}")),
        parent_id: parent,
        selectors: selectors(&[format!("unix:uid:{}", n % 1000)]),
        x509_svid_ttl: None,
        jwt_svid_ttl: None,
        dns_names: vec![],
        federates_with: vec![],
        admin: false,
        downstream: false,
        hint: hint.to_owned(),
        expires_at: None,
        revision: 1,
        created_at: 0,
    }
}

fn alias_id(z: usize) -> SpiffeId {
    id(&format!("spiffe://example.org/zone/{z}"))
}

/// 10,000 agents in 100 zones; 100 zone aliases; 90,000 entries parented to agents and 10,000
/// parented to aliases.
fn populated() -> EntryIndex {
    let td = TrustDomain::new("example.org").expect("valid trust domain");
    let server = id("spiffe://example.org/sigil/server");
    let mut index = EntryIndex::new(&td).expect("index");
    for a in 0..AGENTS {
        index.set_agent(
            agent(a),
            selectors(&[format!("node:zone:{}", a % ALIASES), format!("node:id:{a}")]),
        );
    }
    for z in 0..ALIASES {
        let mut alias = entry(1_000_000 + z, server.clone(), "");
        alias.spiffe_id = alias_id(z);
        alias.selectors = selectors(&[format!("node:zone:{z}")]);
        index.upsert_entry(alias);
    }
    let mut n = 0;
    for a in 0..AGENTS {
        for _ in 0..DIRECT_PER_AGENT {
            index.upsert_entry(entry(n, agent(a), ""));
            n += 1;
        }
    }
    for z in 0..ALIASES {
        for _ in 0..UNDER_EACH_ALIAS {
            index.upsert_entry(entry(n, alias_id(z), ""));
            n += 1;
        }
    }
    assert_eq!(index.entry_count(), 100_000 + ALIASES);
    index
}

fn bench(c: &mut Criterion) {
    let mut index = populated();
    let mut group = c.benchmark_group("index_100k_entries_10k_agents");
    let mut flip = false;
    group.bench_function("update entry parented to an agent (1 agent told)", |b| {
        b.iter(|| {
            flip = !flip;
            black_box(index.upsert_entry(entry(5, agent(0), if flip { "a" } else { "b" })))
        })
    });
    group.bench_function("update entry under a node alias (100 agents told)", |b| {
        b.iter(|| {
            flip = !flip;
            black_box(index.upsert_entry(entry(95_000, alias_id(50), if flip { "a" } else { "b" })))
        })
    });
    group.bench_function("create then delete an entry", |b| {
        b.iter(|| {
            black_box(index.upsert_entry(entry(2_000_000, agent(7), "")));
            black_box(index.remove_entry(&"entry-2000000".parse().expect("valid entry id")))
        })
    });
    group.bench_function("agent changes zone (alias membership)", |b| {
        b.iter(|| {
            flip = !flip;
            let zone = if flip { 1 } else { 2 };
            black_box(index.set_agent(
                agent(1),
                selectors(&[format!("node:zone:{zone}"), "node:id:1".to_owned()]),
            ))
        })
    });
    group.bench_function("authorized entries of one agent (109)", |b| {
        b.iter(|| black_box(index.authorized_entries(black_box(&agent(3))).len()))
    });
    group.bench_function("is_authorized (alias path)", |b| {
        let entry_id = "entry-95000".parse().expect("valid entry id");
        b.iter(|| black_box(index.is_authorized(&agent(50), &entry_id)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
