//! SPIFFE ID parsing, beside the cost of the one allocation a parsed ID makes (the floor).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sigil_spiffe::SpiffeId;

fn id_parse(c: &mut Criterion) {
    let typical = "spiffe://example.org/ns/production/sa/frontend-web";
    let mut group = c.benchmark_group("spiffe_id");
    group.bench_function("parse (52 bytes)", |b| {
        b.iter(|| black_box(typical).parse::<SpiffeId>())
    });
    group.bench_function("baseline: copy into Box<str>", |b| {
        b.iter(|| Box::<str>::from(black_box(typical)))
    });
    let long = format!("spiffe://example.org{}", "/segment".repeat(250));
    group.bench_function("parse (2020 bytes)", |b| {
        b.iter(|| black_box(long.as_str()).parse::<SpiffeId>())
    });
    group.finish();
}

criterion_group!(benches, id_parse);
criterion_main!(benches);
