//! Many gateways, one directory (issue 21): gateway processes on loopback
//! sharing a real PostgreSQL (tests/common/postgres.rs, TLS with a test CA),
//! driven by OpenSSH, pymodbus and the CLI.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/postgres.rs"]
mod postgres;
#[path = "common/ssh.rs"]
mod ssh;

use std::path::Path;
use std::time::{Duration, Instant};

use daemon::{Daemon, Simulator, free_port, gateway_config, pymodbus};
use postgres::Postgres;
use serde_json::json;
use ssh::{hold, keygen, public_line, wait_gone};

/// One gateway of the fleet: its daemon and its doors' ports.
struct Gateway {
    d: Daemon,
    ssh: u16,
    modbus: u16,
    metrics: u16,
}

/// A gateway named `name` on the shared directory, with an SSH door, a
/// Modbus door in front of the simulator's meter 1 (SCADA is `scada`
/// from 127.0.0.1) and metrics.
fn gateway(pg: &Postgres, name: &str, sim: u16) -> Gateway {
    let (ssh, modbus, metrics) = (free_port(), free_port(), free_port());
    let d = Daemon::start_text(|sock| {
        gateway_config(
            sock,
            &format!(
                "[[meters]]\nid = \"meter-1\"\nprofile = \"ion-sim\"\naddress = \"127.0.0.1:{sim}\"\n\
                 gateway_unit = 1\ntimeout = \"2s\"\n\n\
                 [modbus]\nlisten = [\"127.0.0.1:{modbus}\"]\n\
                 [[modbus.clients]]\ncidr = \"127.0.0.1/32\"\nservice_user = \"scada\"\nallow_writes = true\n\n\
                 [ssh]\nlisten = [\"127.0.0.1:{ssh}\"]\n\n\
                 [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\n{}",
                pg.directory_section(name)
            ),
        )
    });
    Gateway {
        d,
        ssh,
        modbus,
        metrics,
    }
}

/// Waits (bounded) until `f` holds; how long it took.
fn within(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn whoami(g: &Gateway, key: &Path, user: &str) -> bool {
    let r = ssh::ssh(g.ssh, key, user, &[], "whoami");
    r.code == 0 && r.stdout.contains(&format!("user:{user}"))
}

fn metric(port: u16, name: &str) -> Option<f64> {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .expect("curl runs (apt-get install curl)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_string))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_user_made_on_one_gateway_logs_in_on_another_and_a_deactivation_there_ends_the_session_here() {
    let pg = Postgres::start();
    let sim = Simulator::start(1, &[]);
    let a = gateway(&pg, "site-a", sim.base_port);
    let b = gateway(&pg, "site-b", sim.base_port);
    let key = keygen(a.d.dir.path(), "kim");
    a.d.mg(&["user", "add", "kim", "--email", "kim@example.org"])
        .ok();
    a.d.mg(&["user", "attach", "kim", "ReadOnly"]).ok();
    a.d.mg(&["user", "add-key", "kim", &public_line(&key)]).ok();
    let took = within(
        "kim, made on A, logs in over SSH on B",
        Duration::from_secs(10),
        || whoami(&b, &key, "kim"),
    );
    eprintln!("kim could log in on B {took:?} after the change on A");

    // A session on A, ended by a deactivation made through B.
    let mut session = hold(a.ssh, &key, "kim");
    within(
        "kim's session is listed on A",
        Duration::from_secs(20),
        || a.d.mg(&["session", "list"]).stdout.contains("kim"),
    );
    b.d.mg(&["user", "deactivate", "kim"]).ok();
    let status = wait_gone(&mut session);
    eprintln!("the session on A ended: {status}");
    within("A lists no session of kim", Duration::from_secs(10), || {
        !a.d.mg(&["session", "list"]).stdout.contains("kim")
    });
    assert!(
        !whoami(&a, &key, "kim"),
        "deactivated kim still logs in on A"
    );
    let events =
        a.d.mg(&["audit", "query", "--code", "access.ended"])
            .ok()
            .stdout
            .clone();
    assert!(
        events.contains("kim"),
        "A's log says kim's access ended: {events}"
    );
}

#[test]
fn concurrent_edits_of_one_policy_from_two_gateways_one_wins_the_other_gets_the_conflict() {
    let pg = Postgres::start();
    let sim = Simulator::start(1, &[]);
    let a = gateway(&pg, "site-a", sim.base_port);
    let b = gateway(&pg, "site-b", sim.base_port);
    let write = |name: &str, text: &str| {
        let path = a.d.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let v1 = write(
        "v1.toml",
        "name = \"north\"\n[[statement]]\neffect = \"allow\"\npermissions = [\"Data View\"]\n",
    );
    a.d.mg(&["policy", "create", "--file", &v1]).ok();
    within("B has the policy", Duration::from_secs(10), || {
        b.d.mg(&["policy", "show", "north"]).code == 0
    });
    for round in 0..3 {
        let version = (round + 1).to_string();
        let from_a = write(
            "a.toml",
            &format!(
                "name = \"north\"\ndescription = \"A, round {round}\"\n[[statement]]\neffect = \"allow\"\npermissions = [\"Data View\"]\n"
            ),
        );
        let from_b = write(
            "b.toml",
            &format!(
                "name = \"north\"\ndescription = \"B, round {round}\"\n[[statement]]\neffect = \"allow\"\npermissions = [\"Data View\"]\n"
            ),
        );
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| {
                a.d.mg(&[
                    "policy",
                    "edit",
                    "north",
                    "--file",
                    &from_a,
                    "--if-version",
                    &version,
                ])
            });
            let tb = s.spawn(|| {
                b.d.mg(&[
                    "policy",
                    "edit",
                    "north",
                    "--file",
                    &from_b,
                    "--if-version",
                    &version,
                ])
            });
            (ta.join().unwrap(), tb.join().unwrap())
        });
        let won = [ra.code, rb.code].iter().filter(|c| **c == 0).count();
        assert_eq!(won, 1, "round {round}: exactly one wins: {ra:?} {rb:?}");
        let lost = if ra.code == 0 { &rb } else { &ra };
        assert_ne!(lost.code, 0);
        let said = format!("{}{}", lost.stdout, lost.stderr);
        assert!(
            said.contains("changed by someone else")
                || said.contains("not ") && said.contains("version"),
            "round {round}: the other is told of the conflict: {said}"
        );
        let winner = if ra.code == 0 { "A" } else { "B" };
        let expected = format!("{winner}, round {round}");
        for g in [&a, &b] {
            within(
                "both gateways show the winner",
                Duration::from_secs(10),
                || {
                    g.d.mg(&["policy", "show", "north"])
                        .stdout
                        .contains(&expected)
                },
            );
        }
    }
}

#[test]
fn without_postgresql_gateways_keep_serving_and_refuse_changes_then_catch_up() {
    let pg = Postgres::start();
    let sim = Simulator::start(1, &[]);
    let a = gateway(&pg, "site-a", sim.base_port);
    let b = gateway(&pg, "site-b", sim.base_port);
    a.d.mg(&["service-user", "add", "scada"]).ok();
    a.d.mg(&["service-user", "attach", "scada", "ReadOnly"])
        .ok();
    let key = keygen(a.d.dir.path(), "kim");
    a.d.mg(&["user", "add", "kim", "--email", "kim@example.org"])
        .ok();
    a.d.mg(&["user", "attach", "kim", "ReadOnly"]).ok();
    a.d.mg(&["user", "add-key", "kim", &public_line(&key)]).ok();
    let read = json!([{"op": "read", "unit": 1, "address": 3000, "count": 2}]);
    for g in [&a, &b] {
        within(
            "the gateway knows kim and scada",
            Duration::from_secs(10),
            || whoami(g, &key, "kim"),
        );
        assert_eq!(pymodbus(g.modbus, read.clone())[0]["ok"], true);
        assert_eq!(
            metric(g.metrics, "metergate_directory_reachable"),
            Some(1.0)
        );
    }

    pg.down();
    for g in [&a, &b] {
        within(
            "the gateway sees the directory go",
            Duration::from_secs(15),
            || metric(g.metrics, "metergate_directory_reachable") == Some(0.0),
        );
        // Fail-static: reads and key logins go on from the last snapshot.
        let r = pymodbus(g.modbus, read.clone());
        assert_eq!(r[0]["ok"], true, "a Modbus read without PostgreSQL: {r:?}");
        assert!(whoami(g, &key, "kim"), "a key login without PostgreSQL");
        // Changes are refused, clearly.
        let change =
            g.d.mg(&["user", "add", "lee", "--email", "lee@example.org"]);
        assert_ne!(change.code, 0, "{change:?}");
        assert!(
            change.stderr.contains("directory cannot be reached")
                && change.stderr.contains("admin changes are refused"),
            "{change:?}"
        );
        assert!(!change.stderr.contains("gateway-secret"), "{change:?}");
        let status = g.d.mg(&["directory", "status"]).ok().stdout.clone();
        assert!(status.contains("UNREACHABLE"), "{status}");
        let events =
            g.d.mg(&["audit", "query", "--code", "directory.unreachable"])
                .ok()
                .stdout
                .clone();
        assert!(events.contains("directory.unreachable"), "{events}");
    }

    pg.up();
    for g in [&a, &b] {
        within("the gateway reconnects", Duration::from_secs(30), || {
            metric(g.metrics, "metergate_directory_reachable") == Some(1.0)
        });
    }
    b.d.mg(&["user", "add", "lee", "--email", "lee@example.org"])
        .ok();
    within(
        "a change through B after the outage reaches A",
        Duration::from_secs(10),
        || a.d.mg(&["user", "show", "lee"]).code == 0,
    );
    let status = a.d.mg(&["directory", "status"]).ok().stdout.clone();
    assert!(status.contains("server: reachable"), "{status}");
    assert!(
        status.contains("site-a") && status.contains("site-b"),
        "{status}"
    );
    let events =
        a.d.mg(&["audit", "query", "--code", "directory.reachable"])
            .ok()
            .stdout
            .clone();
    assert!(events.contains("directory.reachable"), "{events}");
}
