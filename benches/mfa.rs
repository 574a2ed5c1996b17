//! The cost of a second-factor check (issue 20): a TOTP code checked
//! against the secret (HMAC-SHA-1 over up to three steps, with the one step
//! of skew either side), beside the argon2 password check a login makes
//! anyway, so the ratio shows what the factor adds.

use criterion::{Criterion, criterion_group, criterion_main};
use metergate::guard::mfa;
use metergate::store::secrets::{self, Secret};

fn bench(c: &mut Criterion) {
    let secret = mfa::new_secret().unwrap();
    let now = 1_796_000_000u64;
    let right = mfa::code_at(&secret, now).unwrap();
    // A code of no step in the window: all three are computed.
    let wrong = (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .find(|c| mfa::matching_step(&secret, c, now).is_none())
        .unwrap();
    let mut g = c.benchmark_group("second_factor");
    g.bench_function("totp_right_code", |b| {
        b.iter(|| mfa::matching_step(&secret, &right, now))
    });
    g.bench_function("totp_wrong_code", |b| {
        b.iter(|| mfa::matching_step(&secret, &wrong, now))
    });
    let password = Secret::new("Granite lantern 7 ferry");
    let phc = secrets::hash_now(&password).unwrap();
    g.sample_size(10);
    g.bench_function("argon2_password", |b| {
        b.iter(|| secrets::verify_now(&password, &phc))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
