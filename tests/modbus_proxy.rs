//! The Modbus proxy with clients nobody here wrote (pymodbus, mbpoll) and raw
//! sockets: `metergate simulate` is the meter, `metergate serve` the proxy,
//! all on free ports.

#[path = "common/daemon.rs"]
mod daemon;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use daemon::{Daemon, Simulator, free_port, gateway_config, pymodbus};
use serde_json::{Value, json};

/// Service users: `tester` from 127.0.0.1 (writes enabled), `reader` from
/// 127.0.0.2 (plain, read-only). Meters 1-3 on the simulator; meter 4 on a
/// slow simulator when given.
fn config(socket: &Path, proxy: u16, sim: u16, slow: Option<u16>) -> String {
    let mut meters = String::new();
    for k in 0..3u16 {
        meters += &format!(
            "[[meters]]\nid = \"meter-{n}\"\ntags = {{ site = \"{site}\" }}\nprofile = \"ion-sim\"\naddress = \"127.0.0.1:{port}\"\ngateway_unit = {n}\ntimeout = \"2s\"\npipeline = 4\n\n",
            n = k + 1,
            site = if k < 2 { "north" } else { "south" },
            port = sim + k
        );
    }
    if let Some(slow) = slow {
        meters += &format!(
            "[[meters]]\nid = \"meter-slow\"\nprofile = \"ion-sim\"\naddress = \"127.0.0.1:{slow}\"\ngateway_unit = 4\ntimeout = \"1s\"\npipeline = 4\n\n"
        );
    }
    let rest = format!(
        "{meters}[modbus]\nlisten = [\"127.0.0.1:{proxy}\"]\n\n\
         [[modbus.clients]]\ncidr = \"127.0.0.1/32\"\nservice_user = \"tester\"\nallow_writes = true\n\n\
         [[modbus.clients]]\ncidr = \"127.0.0.2/32\"\nservice_user = \"reader\"\n"
    );
    gateway_config(socket, &rest)
}

struct Setup {
    d: Daemon,
    proxy: u16,
    sim: Simulator,
}

fn setup(slow: Option<&Simulator>) -> Setup {
    let sim = Simulator::start(3, &[]);
    let proxy = free_port();
    let sim_port = sim.base_port;
    let slow_port = slow.map(|s| s.base_port);
    let d = Daemon::start_text(|socket| config(socket, proxy, sim_port, slow_port));
    for (name, policy) in [("tester", "ReadOnly"), ("reader", "ReadOnly")] {
        d.mg(&["service-user", "add", name]).ok();
        d.mg(&["service-user", "attach", name, policy]).ok();
    }
    // One custom policy per write permission, to attach and detach.
    for p in [
        "Peak Demand Reset",
        "Master Reset",
        "Time Synchronization",
        "Test Mode Toggle",
        "Comm Config",
        "DSS Config",
        "ION Module Config",
    ] {
        let name = format!("only-{}", p.to_lowercase().replace(' ', "-"));
        let file = d.dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, format!("name = \"{name}\"\n[[statement]]\neffect = \"allow\"\npermissions = [\"{p}\"]\nmeters = [\"*\"]\n")).unwrap();
        d.mg(&["policy", "create", "--file", file.to_str().unwrap()])
            .ok();
    }
    Setup { d, proxy, sim }
}

fn one(port: u16, op: Value) -> Value {
    pymodbus(port, json!([op])).remove(0)
}

fn writes_seen_by_meter(sim_port: u16) -> u64 {
    // Straight to the simulator, not through the proxy.
    let r = one(sim_port, json!({"op": "read", "address": 6000}));
    r["registers"][0].as_u64().expect("register 6000")
}

#[test]
fn permissions_and_allowlists_through_the_proxy_with_pymodbus() {
    let s = setup(None);
    let (d, p) = (&s.d, s.proxy);
    let w = |policy: &str, attach: bool| {
        d.mg(&[
            "service-user",
            if attach { "attach" } else { "detach" },
            "tester",
            policy,
        ])
        .ok();
    };
    // Data View reads.
    let r = one(
        p,
        json!({"op": "read", "unit": 1, "address": 3000, "count": 10}),
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["registers"].as_array().unwrap().len(), 10);
    // A peak-demand reset: refused with Data View only, allowed with the grant.
    let before = writes_seen_by_meter(s.sim.base_port);
    assert_eq!(
        one(
            p,
            json!({"op": "write1", "unit": 1, "address": 5000, "value": 21212})
        )["exception"],
        1
    );
    w("only-peak-demand-reset", true);
    let r = one(
        p,
        json!({"op": "write1", "unit": 1, "address": 5000, "value": 21212}),
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        writes_seen_by_meter(s.sim.base_port),
        before + 1,
        "the reset reached the meter once"
    );
    // The master-reset value is not the peak-demand grant's; a second reset is inside the lockout.
    assert_eq!(
        one(
            p,
            json!({"op": "write1", "unit": 1, "address": 5000, "value": 1115})
        )["exception"],
        1
    );
    assert_eq!(
        one(
            p,
            json!({"op": "write1", "unit": 1, "address": 5000, "value": 21212})
        )["exception"],
        1
    );
    assert_eq!(
        writes_seen_by_meter(s.sim.base_port),
        before + 1,
        "refused writes never reach the meter"
    );
    // Another meter has its own slot.
    assert_eq!(
        one(
            p,
            json!({"op": "write1", "unit": 2, "address": 5000, "value": 21212})
        )["ok"],
        true
    );
    // A plain client without allow_writes never writes, whatever it holds.
    d.mg(&["service-user", "attach", "reader", "only-peak-demand-reset"])
        .ok();
    let r = one(
        p,
        json!({"source": "127.0.0.2", "op": "write1", "unit": 3, "address": 5000, "value": 21212}),
    );
    assert_eq!(r["exception"], 1, "{r}");
    assert_eq!(
        one(
            p,
            json!({"source": "127.0.0.2", "op": "read", "unit": 3, "address": 3000})
        )["ok"],
        true
    );
    w("only-peak-demand-reset", false);

    // Each write permission through its own allowlist entry.
    let cases = [
        (
            "only-master-reset",
            json!({"op": "write1", "unit": 3, "address": 5000, "value": 1115}),
        ),
        (
            "only-time-synchronization",
            json!({"op": "write", "unit": 1, "address": 5010, "values": [2026, 11, 23, 12, 0, 0]}),
        ),
        (
            "only-test-mode-toggle",
            json!({"op": "write1", "unit": 1, "address": 5020, "value": 1}),
        ),
        (
            "only-comm-config",
            json!({"op": "write", "unit": 1, "address": 5030, "values": [1, 2]}),
        ),
        (
            "only-dss-config",
            json!({"op": "write", "unit": 1, "address": 5040, "values": [7]}),
        ),
        (
            "only-ion-module-config",
            json!({"op": "write", "unit": 1, "address": 5100, "values": [1, 2, 3]}),
        ),
    ];
    for (policy, op) in cases {
        assert_eq!(
            one(p, op.clone())["exception"],
            1,
            "{policy}: refused without it"
        );
        w(policy, true);
        let r = one(p, op.clone());
        assert_eq!(r["ok"], true, "{policy}: allowed with it: {r}");
        w(policy, false);
    }
    // FC 16 spanning an allowed and a forbidden register; FC 23 with a
    // forbidden write part; FC 22 on a value-constrained register.
    w("only-time-synchronization", true);
    assert_eq!(
        one(
            p,
            json!({"op": "write", "unit": 1, "address": 5014, "values": [0, 0, 0]})
        )["exception"],
        1
    );
    let r = one(
        p,
        json!({"op": "readwrite", "unit": 1, "read_address": 3000, "read_count": 2, "address": 5000, "values": [1115]}),
    );
    assert_eq!(r["exception"], 1, "{r}");
    let r = one(
        p,
        json!({"op": "readwrite", "unit": 1, "read_address": 3000, "read_count": 2, "address": 5010, "values": [2026, 11, 23, 12, 0, 0]}),
    );
    assert_eq!(r["ok"], true, "FC 23 with both parts allowed: {r}");
    d.mg(&["service-user", "attach", "tester", "Administrator"])
        .ok();
    assert_eq!(
        one(
            p,
            json!({"op": "mask", "unit": 1, "address": 5000, "or": 1})
        )["exception"],
        1
    );
    // Device identification is a Data View read.
    let r = one(p, json!({"op": "devid", "unit": 1}));
    assert_eq!(r["objects"]["0"], "metergate", "{r}");
    // Unknown unit: gateway path unavailable.
    assert_eq!(
        one(p, json!({"op": "read", "unit": 9, "address": 3000}))["exception"],
        10
    );
    // Every decision is in the log with what was needed and why.
    let tail = d.mg(&["audit", "tail", "-n", "400"]).stdout;
    assert!(
        tail.contains("write-registers.deny")
            && tail.contains("svc:reader")
            && tail.contains("read-only"),
        "{tail}"
    );
    assert!(
        tail.contains("peak demand was reset recently; the next reset is allowed at"),
        "{tail}"
    );
}

#[test]
fn a_stopped_meter_answers_0a_or_0b_and_a_timed_out_write_reaches_the_meter_at_most_once() {
    let slow = Simulator::start(1, &["--latency-ms", "2500"]);
    let mut s = setup(Some(&slow));
    let p = s.proxy;
    s.d.mg(&[
        "service-user",
        "attach",
        "tester",
        "only-time-synchronization",
    ])
    .ok();
    let r = one(
        p,
        json!({"op": "write", "unit": 4, "address": 5010, "values": [2026, 11, 23, 12, 0, 0], "timeout": 6}),
    );
    assert_eq!(
        r["exception"], 11,
        "the slow meter's write times out at the gateway: {r}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let direct = one(
        slow.base_port,
        json!({"op": "read", "address": 6000, "timeout": 6}),
    );
    assert_eq!(
        direct["registers"][0], 1,
        "the meter saw the write exactly once: {direct}"
    );
    s.sim.stop();
    let r = one(
        p,
        json!({"op": "read", "unit": 1, "address": 3000, "timeout": 6}),
    );
    let code = r["exception"].as_u64().unwrap_or(0);
    assert!(
        code == 10 || code == 11,
        "a stopped meter: 0A or 0B, got {r}"
    );
}

#[test]
fn mbpoll_reads_and_is_refused_the_master_reset() {
    let s = setup(None);
    let port = s.proxy.to_string();
    let mbpoll = |args: &[&str]| {
        let out = Command::new("mbpoll")
            .args(["-m", "tcp", "-p", &port, "-0", "-1", "-o", "3"])
            .args(args)
            .output();
        let out = out
            .unwrap_or_else(|_| panic!("mbpoll is missing: apt-get install mbpoll (.ci/run does)"));
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    let read = mbpoll(&["-a", "1", "-r", "3000", "-c", "4", "127.0.0.1"]);
    assert!(
        read.contains("[3000]:") && read.contains("[3003]:"),
        "{read}"
    );
    let mr = mbpoll(&["-a", "1", "-r", "5000", "127.0.0.1", "1115"]);
    assert!(mr.contains("Illegal function"), "{mr}");
    let unknown = mbpoll(&["-a", "200", "-r", "3000", "127.0.0.1"]);
    assert!(unknown.contains("Gateway path unavailable"), "{unknown}");
}

fn adu(tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut v = tid.to_be_bytes().to_vec();
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&((pdu.len() + 1) as u16).to_be_bytes());
    v.push(unit);
    v.extend_from_slice(pdu);
    v
}

/// Reads `n` ADUs (header + PDU) from the stream.
fn read_adus(s: &mut TcpStream, n: usize) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut h = [0u8; 7];
        s.read_exact(&mut h).expect("an answer");
        let len = u16::from_be_bytes([h[4], h[5]]) as usize;
        let mut pdu = vec![0u8; len - 1];
        s.read_exact(&mut pdu).unwrap();
        out.push((u16::from_be_bytes([h[0], h[1]]), pdu));
    }
    out
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Closed by the gateway: EOF (or reset) instead of an answer.
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 16];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn raw_frames_get_the_outcomes_of_the_design_table() {
    let s = setup(None);
    let p = s.proxy;
    // Two ADUs in one segment, the second forbidden: each decided alone.
    let mut c = connect(p);
    let seg = [
        adu(1, 1, &[3, 0x0b, 0xb8, 0, 2]),
        adu(2, 1, &[6, 0x13, 0x88, 0x04, 0x5b]),
    ]
    .concat();
    c.write_all(&seg).unwrap();
    let answers = read_adus(&mut c, 2);
    assert_eq!(
        (answers[0].0, answers[0].1[0]),
        (1, 3),
        "the read is answered"
    );
    assert_eq!(
        (answers[1].0, answers[1].1.clone()),
        (2, vec![0x86, 0x01]),
        "the master reset is refused"
    );
    // 50 pipelined reads, answered in order.
    let mut seg = Vec::new();
    for t in 0..50u16 {
        seg.extend(adu(1000 + t, 1 + (t % 3) as u8, &[3, 0x0b, 0xb8, 0, 1]));
    }
    c.write_all(&seg).unwrap();
    let answers = read_adus(&mut c, 50);
    let ids: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(ids, (1000..1050).collect::<Vec<_>>());
    assert!(answers.iter().all(|a| a.1[0] == 3));
    // Exceptions 03 and 01, and 0A, without closing.
    for (pdu, unit, want) in [
        (vec![3u8, 0x0b, 0xb8, 0, 126], 1u8, vec![0x83u8, 3]), // quantity out of range
        (vec![16, 0x13, 0x92, 0x80, 0x00, 0], 1, vec![0x90, 3]), // FC16 quantity 0x8000
        (vec![16, 0x13, 0x92, 0, 2, 2, 0, 1], 1, vec![0x90, 3]), // byte count mismatch
        (vec![8, 0, 1, 0, 0], 1, vec![0x88, 1]),               // diagnostics
        (vec![43, 13, 1, 0], 1, vec![0xab, 1]),                // 43 other than 14
        (vec![65, 1, 2], 1, vec![0xc1, 1]),                    // user-defined code
        (vec![3, 0x0b, 0xb8, 0, 1], 250, vec![0x83, 0x0a]),    // reserved unit
    ] {
        c.write_all(&adu(7, unit, &pdu)).unwrap();
        let a = read_adus(&mut c, 1);
        assert_eq!(a[0].1, want, "{pdu:?} unit {unit}");
    }
    // Broadcast: no reply, never forwarded; the next request still answered.
    c.write_all(&adu(8, 0, &[6, 0x13, 0x88, 0x52, 0xdc]))
        .unwrap();
    c.write_all(&adu(9, 1, &[3, 0x0b, 0xb8, 0, 1])).unwrap();
    assert_eq!(read_adus(&mut c, 1)[0].0, 9, "unit 0 got no answer");
    // Frames that cannot be Modbus close the connection.
    for bad in [
        vec![0, 1, 0, 1, 0, 6, 1, 3, 0, 0, 0, 1], // protocol id 1
        vec![0, 1, 0, 0, 0, 1, 1],                // length < 2
        vec![0, 1, 0, 0, 1, 0, 1],                // length > 254
        vec![0, 1, 0, 0, 0, 2, 1, 0x83],          // function >= 0x80
        vec![0, 1, 0, 0, 0xff, 0xff, 1],          // length 0xFFFF, then silence
    ] {
        let mut c = connect(p);
        c.write_all(&bad).unwrap();
        assert!(closed(&mut c), "{bad:?} must close the connection");
    }
    // The proxy still serves everyone else.
    assert_eq!(
        one(p, json!({"op": "read", "unit": 1, "address": 3000}))["ok"],
        true
    );
    // A source with no client entry is closed right after accept.
    let mut stranger = std::net::TcpStream::connect(("127.0.0.1", p)).unwrap();
    let _ = stranger.write_all(&adu(1, 1, &[3, 0x0b, 0xb8, 0, 1]));
    let _ = stranger;
    let out = Command::new("python3")
        .args(["-c", &format!("import socket; s=socket.socket(); s.bind(('127.0.0.3',0)); s.connect(('127.0.0.1',{p})); s.settimeout(5); print(len(s.recv(10)))")])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "a stranger is closed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the simulated meter holds at 3000 + i for i in 7..=17: 10 × i,
/// constant (src/fleet/simulator.rs, `MeterState::refresh`), so a reply can
/// be told apart by its count and values.
fn fixed_registers(start: u16, count: u16) -> Value {
    assert!(
        start >= 3007 && start + count <= 3018,
        "not a constant range"
    );
    json!(
        (start..start + count)
            .map(|a| (a - 3000) * 10)
            .collect::<Vec<_>>()
    )
}

#[test]
fn a_late_reply_after_a_timeout_never_reaches_another_client() {
    // Every second request to this meter (counted across its connections)
    // takes 2.5 s; the gateway waits 1 s. Each client reads its own range of
    // constant registers, so a reply delivered to the wrong client differs
    // in count and values.
    let slow = Simulator::start(1, &["--latency-ms", "2500", "--slow-every", "2"]);
    let s = setup(Some(&slow));
    let p = s.proxy;
    let read = |start: u16, count: u16| {
        one(
            p,
            json!({"op": "read", "unit": 4, "address": start, "count": count, "timeout": 6}),
        )
    };
    let own =
        |start: u16, count: u16| json!({"ok": true, "registers": fixed_registers(start, count)});
    let timed_out = json!({"ok": false, "exception": 11});
    // Request 1 is fast, and shows the registers are what the meter holds.
    assert_eq!(read(3007, 11), own(3007, 11), "request 1");
    // Request 2, client A's, is the slow one: 0B after the gateway's
    // timeout, while its reply ([70]) is still on its way...
    assert_eq!(read(3007, 1), timed_out, "A");
    // ...request 3, client B's, asked while it is, gets B's own answer.
    assert_eq!(read(3008, 5), own(3008, 5), "B");
    // By now the meter has sent A's late reply.
    std::thread::sleep(Duration::from_secs(2));
    // Request 4, client C's, is slow again (0B, its reply [130, 140] late);
    // request 5, client D's, asked after A's late reply and while C's is on
    // its way, gets D's own answer.
    assert_eq!(read(3013, 2), timed_out, "C");
    assert_eq!(read(3015, 3), own(3015, 3), "D");
}

#[test]
fn deactivating_a_service_user_ends_its_live_modbus_connections() {
    let s = setup(None);
    let mut c = connect(s.proxy);
    c.write_all(&adu(1, 1, &[3, 0x0b, 0xb8, 0, 1])).unwrap();
    assert_eq!(read_adus(&mut c, 1)[0].1[0], 3, "the connection works");
    let r = s.d.mg(&["service-user", "deactivate", "tester"]);
    assert!(r.ok().stdout.contains("1 live sessions ended"), "{r:?}");
    assert!(closed(&mut c), "the gateway closed the live connection");
    // New connections from that source are let in but every request is denied.
    let r = one(s.proxy, json!({"op": "read", "unit": 1, "address": 3000}));
    assert_eq!(r["exception"], 1, "{r}");
    let tail = s.d.mg(&["audit", "tail", "-n", "5"]).stdout;
    assert!(tail.contains("principal is inactive"), "{tail}");
}

#[test]
fn each_listener_has_its_own_unit_map() {
    let sim = Simulator::start(2, &[]);
    let (a, b) = (free_port(), free_port());
    let base = sim.base_port;
    let d = Daemon::start_text(|socket| {
        gateway_config(
            socket,
            &format!(
                "[[meters]]\nid = \"north-1\"\nprofile = \"ion-sim\"\naddress = \"127.0.0.1:{base}\"\ngateway_unit = 1\nlistener = \"127.0.0.1:{a}\"\n\n\
             [[meters]]\nid = \"south-1\"\nprofile = \"ion-sim\"\naddress = \"127.0.0.1:{m2}\"\ngateway_unit = 1\nlistener = \"127.0.0.1:{b}\"\n\n\
             [modbus]\nlisten = [\"127.0.0.1:{a}\", \"127.0.0.1:{b}\"]\n\n\
             [[modbus.clients]]\ncidr = \"127.0.0.1/32\"\nservice_user = \"tester\"\nallow_writes = true\n",
                m2 = base + 1,
            ),
        )
    });
    d.mg(&["service-user", "add", "tester"]).ok();
    // Data View on north-1 only: unit 1 means a different meter on each port.
    let file = d.dir.path().join("north.toml");
    std::fs::write(&file, "name = \"north-view\"\n[[statement]]\neffect = \"allow\"\npermissions = [\"Data View\"]\nmeters = [\"north-1\"]\n").unwrap();
    d.mg(&["policy", "create", "--file", file.to_str().unwrap()])
        .ok();
    d.mg(&["service-user", "attach", "tester", "north-view"])
        .ok();
    assert_eq!(
        one(a, json!({"op": "read", "unit": 1, "address": 3000}))["ok"],
        true
    );
    assert_eq!(
        one(b, json!({"op": "read", "unit": 1, "address": 3000}))["exception"],
        1,
        "unit 1 on the second listener is south-1"
    );
    assert_eq!(
        one(a, json!({"op": "read", "unit": 2, "address": 3000}))["exception"],
        10
    );
    let tail = d.mg(&["audit", "tail", "-n", "10"]).stdout;
    assert!(tail.contains("meter=south-1"), "{tail}");
}

#[test]
fn a_full_queue_answers_06_half_frames_time_out_and_garbage_is_counted_not_flooded() {
    // One connection, one request at a time, one waiting: the rest are busy.
    let slow = Simulator::start(1, &["--latency-ms", "1500"]);
    let tree = std::env::temp_dir()
        .join(format!("metergate-sim-{}", slow.base_port))
        .join("sim-1");
    for f in ["logs/events.log", "logs/energy.csv", "config/meter.cfg"] {
        assert!(tree.join(f).is_file(), "the simulated meter has {f}");
    }
    for d in ["firmware", "certificates"] {
        assert!(tree.join(d).is_dir(), "the simulated meter has {d}/");
    }
    let proxy = free_port();
    let sim = slow.base_port;
    let mut d = Daemon::start_text(|socket| {
        gateway_config(
            socket,
            &format!(
                "[[meters]]\nid = \"m1\"\nprofile = \"ion-sim\"\naddress = \"127.0.0.1:{sim}\"\ngateway_unit = 1\nmax_connections = 1\ntimeout = \"5s\"\n\n\
             [modbus]\nlisten = [\"127.0.0.1:{proxy}\"]\nmax_queue = 1\n\n\
             [[modbus.clients]]\ncidr = \"127.0.0.1/32\"\nservice_user = \"tester\"\n"
            ),
        )
    });
    d.mg(&["service-user", "add", "tester"]).ok();
    d.mg(&["service-user", "attach", "tester", "ReadOnly"]).ok();
    let mut clients: Vec<TcpStream> = (0..4).map(|_| connect(proxy)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&adu(i as u16, 1, &[3, 0x0b, 0xb8, 0, 1]))
            .unwrap();
    }
    let answers: Vec<Vec<u8>> = clients
        .iter_mut()
        .map(|c| read_adus(c, 1).remove(0).1)
        .collect();
    let busy = answers.iter().filter(|a| **a == [0x83, 0x06]).count();
    let served = answers.iter().filter(|a| a[0] == 3).count();
    assert!(busy >= 1 && served >= 1, "{answers:?}");

    // A frame begun and never finished is closed after the partial-frame timeout.
    let mut half = connect(proxy);
    half.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    half.write_all(&[0, 1, 0, 0, 0, 6, 1, 3]).unwrap();
    let started = std::time::Instant::now();
    assert!(closed(&mut half), "a half frame is not held open");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "closed within the bound"
    );

    // Garbage from one source: counted per kind, not one event each.
    for _ in 0..25 {
        let mut c = connect(proxy);
        let _ = c.write_all(&[0, 1, 0, 7, 0, 6, 1, 3, 0, 0, 0, 1]);
        let _ = closed(&mut c);
    }
    d.restart(None); // a graceful stop writes the pending aggregates
    let tail = d.mg(&["--json", "audit", "tail", "-n", "100"]).stdout;
    let events: Vec<Value> = tail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let bad: Vec<&Value> = events
        .iter()
        .filter(|e| e["code"] == "modbus.bad-frame")
        .collect();
    // The first at once, the other 24 in one aggregate at the interval's end.
    assert_eq!(bad.len(), 2, "the first and one aggregate: {bad:?}");
    assert_eq!(bad[0]["detail"]["count"], "1");
    assert_eq!(bad[1]["detail"]["count"], "24");
    assert!(bad.iter().all(|e| e["source"] == "127.0.0.1"));
    assert!(
        events.iter().any(|e| e["code"] == "modbus.busy"),
        "the full queue is in the log"
    );
}
