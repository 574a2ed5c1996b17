//! What recording a MiB of console output costs the gateway (issue 18):
//! each step a chunk goes through, on 1 MiB of a meter's log dump as the
//! console sends it (32 KiB messages, `\r\n` line ends): text from bytes,
//! asciicast lines (JSON-escaped, with serde_json's escaping beside for
//! comparison), and the chunk's chained SHA-256.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metergate::recording::cast::{Utf8Carry, event_into};
use metergate::recording::verify::chain;

fn dump() -> Vec<Vec<u8>> {
    let mut all = Vec::with_capacity(1 << 20);
    let mut i = 0u64;
    while all.len() < 1 << 20 {
        all.extend_from_slice(
            format!("{i:08} 2026-12-02T12:00:00Z event ok voltage 230.1 V load 12.4\r\n")
                .as_bytes(),
        );
        i += 1;
    }
    all.truncate(1 << 20);
    all.chunks(32 * 1024).map(<[u8]>::to_vec).collect()
}

fn bench(c: &mut Criterion) {
    let messages = dump();
    let mut g = c.benchmark_group("recording_1mib");
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("text", |b| {
        b.iter(|| {
            let mut carry = Utf8Carry::default();
            messages
                .iter()
                .map(|m| carry.take(m.clone()).len())
                .sum::<usize>()
        })
    });
    let texts: Vec<String> = {
        let mut carry = Utf8Carry::default();
        messages.iter().map(|m| carry.take(m.clone())).collect()
    };
    g.bench_function("asciicast_lines", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(5 << 20);
            for (i, t) in texts.iter().enumerate() {
                event_into(&mut out, i as f64 * 0.001, "o", t);
            }
            out.len()
        })
    });
    // What the lines cost with serde_json's escaping (before issue 18's
    // json-escape-simd), side by side in the same run.
    g.bench_function("asciicast_lines_serde_json", |b| {
        b.iter(|| {
            use std::io::Write;
            let mut out = Vec::with_capacity(5 << 20);
            for (i, t) in texts.iter().enumerate() {
                let _ = write!(out, "[{:.6}, \"o\", ", i as f64 * 0.001);
                let _ = serde_json::to_writer(&mut out, t);
                out.extend_from_slice(b"]\n");
            }
            out.len()
        })
    });
    let chunk: Vec<u8> = {
        let mut out = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            event_into(&mut out, i as f64 * 0.001, "o", t);
        }
        out
    };
    g.bench_function("chain_sha256", |b| {
        b.iter(|| chain(metergate::recording::verify::GENESIS, &chunk))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
