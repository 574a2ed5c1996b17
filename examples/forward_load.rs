//! Forwarding throughput to rsyslog (Debian's rsyslogd, imtcp, one file):
//! the gateway's forwarder sending N stored events, against the same N
//! messages, pre-formatted, written by a bare socket writer (what the
//! collector can take at most). Alternated runs, medians, one process.
//!
//! cargo run --release --example forward_load -- [EVENTS] [RUNS]

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metergate::config::ForwardConfig;
use metergate::store::export::{Origin, octet_counted, rfc5424};
use metergate::store::forward::Forwarder;
use metergate::store::{Category, EventDraft, Outcome, Store};

fn event(i: u64) -> EventDraft {
    EventDraft::new("write-registers.allow", Category::Modbus, Outcome::Allow)
        .principal("svc:scada-operator")
        .source("10.20.0.5")
        .door("modbus")
        .meter("meter-1")
        .action("write FC 6 registers 5000..5001 values [21212]")
        .permission("Peak Demand Reset")
        .reason("allowed by policy `north-operators` statement 1 via role Operator")
        .detail("n", i)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// rsyslogd writing one line per message into `out`.
fn rsyslog(dir: &Path, port: u16, out: &Path) -> Child {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    let conf = format!(
        "global(workDirectory=\"{}\")\nmodule(load=\"imtcp\")\ninput(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\")\n\
         template(name=\"mg\" type=\"string\" string=\"%msgid% %structured-data%\\n\")\n\
         action(type=\"omfile\" file=\"{}\" template=\"mg\")\n",
        work.display(),
        out.display()
    );
    let path = dir.join("rsyslog.conf");
    std::fs::write(&path, conf).expect("config");
    let child = Command::new("rsyslogd")
        .arg("-n")
        .arg("-f")
        .arg(&path)
        .arg("-i")
        .arg(dir.join("pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rsyslogd (apt-get install rsyslog)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "rsyslogd does not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Waits until `out` has `n` lines; the time since `start`.
fn wait_lines(out: &Path, n: u64, start: Instant) -> Duration {
    let mut lines = 0u64;
    let mut offset = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(mut f) = std::fs::File::open(out) {
            let _ = f.seek(SeekFrom::Start(offset));
            while let Ok(k) = f.read(&mut buf) {
                if k == 0 {
                    break;
                }
                offset += k as u64;
                lines += buf[..k].iter().filter(|b| **b == b'\n').count() as u64;
            }
        }
        if lines >= n {
            return start.elapsed();
        }
        assert!(Instant::now() < deadline, "only {lines} of {n} arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let events: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store = Arc::new(Store::open(&dir.path().join("state")).expect("store"));
    rt.block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|w| {
                let s = store.clone();
                tokio::spawn(async move {
                    for i in 0..events / 64 {
                        s.log()
                            .append(event(w * 100_000 + i))
                            .await
                            .expect("append");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
    });
    let n = store.log().last_seq();
    eprintln!("{n} events stored");
    // The baseline's bytes: the same events, formatted once beforehand.
    let origin = Origin::here(13);
    let mut frames = Vec::new();
    for ev in store.log().range(1, n as usize).expect("read") {
        octet_counted(&rfc5424(&ev, &origin), &mut frames);
    }
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for run in 0..runs {
        for which in ["forwarder", "bare socket"] {
            let rdir: PathBuf = dir.path().join(format!("r{run}-{}", which.len()));
            std::fs::create_dir_all(&rdir).expect("dir");
            let out = rdir.join("received.log");
            let port = free_port();
            let mut child = rsyslog(&rdir, port, &out);
            let start = Instant::now();
            let took = if which == "forwarder" {
                store.set_forward_cursor(0).expect("cursor");
                let cfg = ForwardConfig {
                    target: format!("tcp://127.0.0.1:{port}"),
                    ca: None,
                    server_name: None,
                    certificate: None,
                    key: None,
                    facility: 13,
                };
                let f = Forwarder::new(&cfg).expect("forwarder");
                let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                let task = rt.spawn(f.run(store.clone(), stop_rx));
                let took = wait_lines(&out, n, start);
                let st = store.forward_state();
                if let Ok(e) = st.last_error.lock()
                    && let Some(e) = e.as_ref()
                {
                    eprintln!("  (the forwarder reconnected after: {e})");
                }
                let _ = stop_tx.send(true);
                let _ = rt.block_on(task);
                took
            } else {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
                for chunk in frames.chunks(1 << 20) {
                    s.write_all(chunk).expect("write");
                }
                s.flush().expect("flush");
                let took = wait_lines(&out, n, start);
                drop(s);
                took
            };
            let rate = n as f64 / took.as_secs_f64();
            eprintln!(
                "run {run} {which}: {n} events in {:.2} s = {rate:.0} events/s",
                took.as_secs_f64()
            );
            if which == "forwarder" {
                ours.push(rate);
            } else {
                bare.push(rate);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    let (o, b) = (median(ours), median(bare));
    println!(
        "forwarding to rsyslog, {n} events, median of {runs}: forwarder {o:.0} events/s, bare socket {b:.0} events/s, ratio {:.2}",
        o / b
    );
}
