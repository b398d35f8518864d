//! The routing decision on the request path: load the current policy
//! snapshot (arc-swap), hash the user, choose a version. Target: < 200 ns.

use std::hint::black_box;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion};
use switchyard::policy::{CandidateSpec, Policy, PolicySpec, Weight};

fn canary() -> Policy {
    let mut spec = PolicySpec::pinned(1);
    spec.candidate = Some(CandidateSpec {
        version: 2,
        weight: Weight::from_bp(1000).expect("10%"),
    });
    spec.salt = "rollout-7".into();
    spec.allow_list = (0..100).map(|i| format!("vip-{i}")).collect();
    Policy::new(spec, |_| true).expect("valid policy")
}

fn routing(c: &mut Criterion) {
    let current = ArcSwap::from_pointee(canary());
    let users: Vec<String> = (0..1024).map(|i| format!("user-{i:08}")).collect();
    let mut i = 0usize;
    c.bench_function("route: load policy + sticky hash + choose (10% canary)", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            let policy = current.load();
            black_box(policy.decide(Some(black_box(&users[i])), None, || 0))
        })
    });
    c.bench_function("route: anonymous weighted (random bucket)", |b| {
        b.iter(|| {
            let policy = current.load();
            black_box(policy.decide(None, None, || fastrand::u32(..)))
        })
    });
    c.bench_function("route: allow-listed user", |b| {
        b.iter(|| {
            let policy = current.load();
            black_box(policy.decide(Some(black_box("vip-42")), None, || 0))
        })
    });
}

criterion_group!(benches, routing);
criterion_main!(benches);
