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
    gateway_stale(pg, name, sim, "1h")
}

/// As [`gateway`], people's logins refused after `max_stale` without the
/// directory.
fn gateway_stale(pg: &Postgres, name: &str, sim: u16, max_stale: &str) -> Gateway {
    gateway_on(sim, &pg.directory_section_stale(name, max_stale))
}

/// A gateway on its own local directory, with the same fleet.
fn local_gateway(sim: u16) -> Gateway {
    gateway_on(sim, "")
}

fn gateway_on(sim: u16, directory: &str) -> Gateway {
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
                directory
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
fn a_user_made_on_one_gateway_logs_in_on_the_others_and_a_deactivation_there_ends_the_session_here()
{
    let pg = Postgres::start();
    let sim = Simulator::start(1, &[]);
    let a = gateway(&pg, "site-a", sim.base_port);
    let b = gateway(&pg, "site-b", sim.base_port);
    let c = gateway(&pg, "site-c", sim.base_port);
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
    within("kim logs in on C too", Duration::from_secs(10), || {
        whoami(&c, &key, "kim")
    });

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
    for (g, name) in [(&a, "A"), (&c, "C")] {
        within(
            "deactivated kim is refused",
            Duration::from_secs(10),
            || !whoami(g, &key, "kim"),
        );
        eprintln!("kim is refused on {name}");
    }
    let events =
        a.d.mg(&["audit", "query", "--code", "access.ended"])
            .ok()
            .stdout
            .clone();
    assert!(
        events.contains("kim"),
        "A's log says kim's access ended: {events}"
    );
    // Every event names the gateway that logged it (the SIEM merges many).
    for (g, name) in [(&a, "site-a"), (&b, "site-b"), (&c, "site-c")] {
        let all = g.d.mg(&["audit", "export"]).ok().stdout.clone();
        let events: Vec<serde_json::Value> = all
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|e: &serde_json::Value| e.get("code").is_some())
            .collect();
        assert!(events.len() > 3, "{all}");
        for e in &events {
            assert_eq!(e["detail"]["gateway"], name, "{e}");
        }
    }
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
        // Either its version check fails on the winner's change, or its
        // checks were made before the winner's change reached its gateway.
        assert!(
            said.contains("changed by someone else")
                || said.contains("not ") && said.contains("version")
                || said.contains(
                    "another gateway changed the directory while this change was being checked"
                ),
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
    let mut a = gateway(&pg, "site-a", sim.base_port);
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

    // A gateway restarted while the directory is away starts on its last
    // copy and decides on it.
    a.d.restart(None);
    assert!(
        whoami(&a, &key, "kim"),
        "a key login after a restart without PostgreSQL"
    );
    let r = pymodbus(a.modbus, read.clone());
    assert_eq!(
        r[0]["ok"], true,
        "a Modbus read after a restart without PostgreSQL: {r:?}"
    );
    let status = a.d.mg(&["directory", "status"]).ok().stdout.clone();
    assert!(status.contains("UNREACHABLE"), "{status}");

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

/// Writes the simulated meter has taken (its register 6000), read straight
/// from the simulator.
fn writes_seen_by_meter(sim: u16) -> u64 {
    let r = pymodbus(sim, json!([{"op": "read", "address": 6000}]));
    r[0]["registers"][0].as_u64().expect("register 6000")
}

/// Service user `scada`, allowed Peak Demand Resets on every meter, made
/// through `g`.
fn scada_may_reset_peaks(g: &Gateway) {
    let policy = g.d.dir.path().join("peak.toml");
    std::fs::write(
        &policy,
        "name = \"peak-reset\"\n[[statement]]\neffect = \"allow\"\n\
         permissions = [\"Peak Demand Reset\"]\nmeters = [\"*\"]\n",
    )
    .unwrap();
    g.d.mg(&["policy", "create", "--file", policy.to_str().unwrap()])
        .ok();
    g.d.mg(&["service-user", "add", "scada"]).ok();
    g.d.mg(&["service-user", "attach", "scada", "peak-reset"])
        .ok();
}

#[test]
fn two_gateways_in_front_of_one_meter_racing_peak_demand_resets_give_one_allow() {
    let pg = Postgres::start();
    let sim = Simulator::start(1, &[]);
    let a = gateway(&pg, "site-a", sim.base_port);
    let b = gateway(&pg, "site-b", sim.base_port);
    scada_may_reset_peaks(&a);
    within("B lets scada reset peaks", Duration::from_secs(10), || {
        b.d.mg(&["service-user", "show", "scada"])
            .stdout
            .contains("peak-reset")
    });
    let before = writes_seen_by_meter(sim.base_port);
    // Four SCADA masters at once, two through each gateway.
    let reset = json!([{"op": "write1", "unit": 1, "address": 5000, "value": 21212}]);
    let results: Vec<serde_json::Value> = std::thread::scope(|s| {
        let racers: Vec<_> = [a.modbus, b.modbus, a.modbus, b.modbus]
            .into_iter()
            .map(|port| {
                let reset = reset.clone();
                s.spawn(move || pymodbus(port, reset).remove(0))
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let allowed = results.iter().filter(|r| r["ok"] == true).count();
    assert_eq!(allowed, 1, "exactly one reset is allowed: {results:?}");
    for r in results.iter().filter(|r| r["ok"] != true) {
        assert_eq!(r["exception"], 1, "the others are refused: {r}");
    }
    assert_eq!(
        writes_seen_by_meter(sim.base_port),
        before + 1,
        "the meter saw one reset"
    );
    let refusals: String = [&a, &b]
        .iter()
        .map(|g| g.d.mg(&["audit", "tail", "-n", "50"]).stdout)
        .collect();
    assert_eq!(
        refusals
            .matches("peak demand was reset recently; the next reset is allowed at")
            .count(),
        3,
        "{refusals}"
    );

    // Without the directory, the shared interval cannot be kept: resets
    // are refused (never one per gateway), reads go on.
    pg.down();
    within("A sees the directory go", Duration::from_secs(15), || {
        metric(a.metrics, "metergate_directory_reachable") == Some(0.0)
    });
    let r = pymodbus(a.modbus, reset.clone()).remove(0);
    assert_eq!(r["exception"], 1, "{r}");
    let tail = a.d.mg(&["audit", "tail", "-n", "5"]).stdout;
    assert!(
        tail.contains("the peak demand interval is shared by the gateways"),
        "{tail}"
    );
    assert_eq!(writes_seen_by_meter(sim.base_port), before + 1);
}

/// A password login through paramiko; whether it got in.
fn password_login(g: &Gateway, user: &str, password: &str) -> bool {
    ssh::paramiko(g.ssh, &["password", user, password, "whoami"])["ok"] == true
}

fn locked_on(g: &Gateway, user: &str) -> bool {
    g.d.mg(&["user", "show", user])
        .stdout
        .contains("password login locked until")
}

#[test]
fn password_failures_spread_over_gateways_lock_after_the_configured_count_even_across_an_outage() {
    let pg = Postgres::start();
    let sim = Simulator::start(1, &[]);
    let a = gateway(&pg, "site-a", sim.base_port);
    let b = gateway(&pg, "site-b", sim.base_port);
    a.d.mg(&["user", "add", "carol", "--email", "carol@example.org"])
        .ok();
    a.d.mg(&["user", "attach", "carol", "ReadOnly"]).ok();
    let said =
        a.d.mg(&["user", "resend-password", "carol"])
            .ok()
            .stdout
            .clone();
    let temp = ssh::temporary_password(&said);
    let good = "Quiet harbor 42 lamps";
    let r = ssh::paramiko(
        a.ssh,
        &["interactive", "carol", "whoami", &temp, good, good],
    );
    assert_eq!(r["ok"], true, "{r}");
    within("B takes carol's password", Duration::from_secs(10), || {
        password_login(&b, "carol", good)
    });

    // The configured count is 5: four wrong passwords over A and B do not
    // lock; the fifth, wherever it lands, does, on both.
    for g in [&a, &b, &a, &b] {
        assert!(!password_login(g, "carol", "not the password"));
    }
    assert!(!locked_on(&a, "carol") && !locked_on(&b, "carol"));
    assert!(!password_login(&b, "carol", "still not it"));
    assert!(locked_on(&a, "carol"), "five failures over two sites lock");
    assert!(
        !password_login(&a, "carol", good),
        "locked on A by failures mostly elsewhere"
    );
    let lockout =
        b.d.mg(&["audit", "query", "--code", "login.lockout"])
            .stdout;
    assert!(lockout.contains("user:carol"), "{lockout}");
    // One unlock, made on either, frees carol on both.
    a.d.mg(&["user", "unlock", "carol"]).ok();
    assert!(!locked_on(&b, "carol"));
    assert!(password_login(&b, "carol", good));

    // During an outage each gateway counts alone (three and two failures:
    // neither locks by itself); once the directory is back the runs are
    // put together and carol is locked.
    pg.down();
    for g in [&a, &b] {
        within(
            "the gateway sees the directory go",
            Duration::from_secs(15),
            || metric(g.metrics, "metergate_directory_reachable") == Some(0.0),
        );
    }
    for g in [&a, &a, &a, &b, &b] {
        assert!(!password_login(g, "carol", "guessing while it is away"));
    }
    assert!(!locked_on(&a, "carol") && !locked_on(&b, "carol"));
    pg.up();
    for g in [&a, &b] {
        within(
            "the runs counted apart are put together",
            Duration::from_secs(30),
            || locked_on(g, "carol"),
        );
    }
    assert!(!password_login(&a, "carol", good));

    // A lock seen in the shared run holds while the directory is away.
    pg.down();
    for g in [&a, &b] {
        within(
            "the gateway sees the directory go",
            Duration::from_secs(15),
            || metric(g.metrics, "metergate_directory_reachable") == Some(0.0),
        );
        assert!(locked_on(g, "carol"));
        assert!(
            !password_login(g, "carol", good),
            "the lock holds without PostgreSQL"
        );
    }
}

#[test]
fn beyond_max_stale_people_wait_for_the_directory_while_scada_reads_on() {
    let pg = Postgres::start();
    let sim = Simulator::start(1, &[]);
    let a = gateway_stale(&pg, "site-a", sim.base_port, "10s");
    a.d.mg(&["service-user", "add", "scada"]).ok();
    a.d.mg(&["service-user", "attach", "scada", "ReadOnly"])
        .ok();
    let key = keygen(a.d.dir.path(), "kim");
    a.d.mg(&["user", "add", "kim", "--email", "kim@example.org"])
        .ok();
    a.d.mg(&["user", "attach", "kim", "ReadOnly"]).ok();
    a.d.mg(&["user", "add-key", "kim", &public_line(&key)]).ok();
    assert!(whoami(&a, &key, "kim"));
    let mut session = hold(a.ssh, &key, "kim");
    within("kim's session is listed", Duration::from_secs(20), || {
        a.d.mg(&["session", "list"]).stdout.contains("kim")
    });

    pg.down();
    // Some time after max_stale, kim's new logins are refused …
    within(
        "kim's new logins are refused once the copy is stale",
        Duration::from_secs(60),
        || !whoami(&a, &key, "kim"),
    );
    let refused =
        a.d.mg(&["audit", "query", "--code", "login.failure"])
            .ok()
            .stdout
            .clone();
    assert!(
        refused.contains("longer ago than directory.max_stale"),
        "{refused}"
    );
    // … while SCADA reads, the local console and kim's open session go on,
    // also once a reload has every open session checked again.
    a.d.reload_with(|t| t);
    std::thread::sleep(Duration::from_secs(1));
    let read = json!([{"op": "read", "unit": 1, "address": 3000, "count": 2}]);
    assert_eq!(pymodbus(a.modbus, read)[0]["ok"], true);
    assert!(a.d.mg(&["session", "list"]).stdout.contains("kim"));
    assert!(
        session.try_wait().unwrap().is_none(),
        "the open session goes on"
    );

    pg.up();
    within(
        "kim logs in again once the directory is back",
        Duration::from_secs(30),
        || whoami(&a, &key, "kim"),
    );
    let _ = session.kill();
    let _ = session.wait();
}

/// What `user permissions`, `service-user permissions` and `check` answer
/// for every principal, as one text to compare.
fn answers(g: &Gateway, users: &[&str], services: &[&str]) -> String {
    let mut out = String::new();
    let mut ask = |args: &[&str]| {
        let r = g.d.mg(args);
        out.push_str(&format!(
            "$ {}\n{}{}[{}]\n",
            args.join(" "),
            r.stdout,
            r.stderr,
            r.code
        ));
    };
    for u in users {
        ask(&["user", "permissions", u]);
    }
    for s in services {
        ask(&["service-user", "permissions", s]);
    }
    let principals: Vec<String> = users
        .iter()
        .map(|u| format!("user:{u}"))
        .chain(services.iter().map(|s| format!("svc:{s}")))
        .collect();
    for p in &principals {
        for permission in [
            "Data View",
            "Peak Demand Reset",
            "Terminal Access",
            "Master Reset",
        ] {
            ask(&[
                "check",
                "--principal",
                p,
                "--permission",
                permission,
                "--meter",
                "meter-1",
            ]);
        }
    }
    out
}

/// `directory export` of `from`, written to `file`.
fn export_to(from: &Daemon, file: &Path) {
    let export = from.mg(&["directory", "export"]).ok().stdout.clone();
    std::fs::write(file, export).unwrap();
}

/// `directory import --replace` of `file` into `into`: it must succeed.
fn import_replacing(into: &Daemon, file: &Path) {
    let file = file.to_str().unwrap();
    let r = into.mg(&["directory", "import", "--file", file, "--replace"]);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn a_local_directory_exported_and_imported_into_postgresql_and_back_answers_the_same() {
    let pg = Postgres::start();
    let sim = Simulator::start(1, &[]);
    let local = local_gateway(sim.base_port);
    let d = &local.d;
    let policy = d.dir.path().join("night.toml");
    std::fs::write(
        &policy,
        "name = \"night-crew\"\n[[statement]]\neffect = \"allow\"\n\
         permissions = [\"Data View\", \"Terminal Access\"]\nmeters = [\"meter-*\"]\n\
         [[statement]]\neffect = \"deny\"\npermissions = [\"Terminal Access\"]\nmeters = [\"meter-1\"]\n",
    )
    .unwrap();
    d.mg(&["policy", "create", "--file", policy.to_str().unwrap()])
        .ok();
    for (user, email) in [
        ("ana", "ana@example.org"),
        ("ben", "ben@example.org"),
        ("cy", "cy@example.org"),
        ("boss", "boss@example.org"),
    ] {
        d.mg(&["user", "add", user, "--email", email]).ok();
    }
    d.mg(&["user", "attach", "ana", "ReadOnly"]).ok();
    d.mg(&["user", "attach", "boss", "Administrator"]).ok();
    d.mg(&["group", "add", "crews"]).ok();
    d.mg(&["group", "add-member", "crews", "ben"]).ok();
    d.mg(&["group", "attach", "crews", "night-crew"]).ok();
    d.mg(&["user", "deactivate", "cy"]).ok();
    d.mg(&["service-user", "add", "scada"]).ok();
    d.mg(&["service-user", "attach", "scada", "ReadOnly"]).ok();
    let users = ["ana", "ben", "cy", "boss"];
    let services = ["scada"];
    let before = answers(&local, &users, &services);
    assert!(before.contains("Terminal Access"), "{before}");

    let file = d.dir.path().join("dir.json");
    export_to(d, &file);
    let shared = gateway(&pg, "site-a", sim.base_port);
    import_replacing(&shared.d, &file);
    assert_eq!(answers(&shared, &users, &services), before);

    // And back: from PostgreSQL into a new local directory.
    export_to(&shared.d, &file);
    let again = local_gateway(sim.base_port);
    import_replacing(&again.d, &file);
    assert_eq!(answers(&again, &users, &services), before);
}

#[test]
fn a_change_checked_on_a_directory_another_gateway_changed_since_is_not_applied() {
    use metergate::model::User;
    use metergate::store::log::Capacity;
    use metergate::store::{Entity, Expect, Op, Store, StoreError};
    let pg = Postgres::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Store::open_configured(dir_a.path(), Capacity::default(), &pg.directory_config("a"))
        .unwrap();
    let b = Store::open_configured(dir_b.path(), Capacity::default(), &pg.directory_config("b"))
        .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let add = |name: &str| {
        vec![Op::Put(
            Entity::User(User::new(name, &format!("{name}@example.org"))),
            Expect::New,
        )]
    };
    // A's caller is checked on the directory as A has it now …
    let checked = a.directory_version();
    // … then a change lands through B (say, the caller's grant withdrawn).
    b.apply(add("lee"), "test", now, &[]).unwrap();
    let r = a.apply_checked(add("kim"), "test", now, &[], Some(checked));
    assert!(
        matches!(r, Err(StoreError::ChangedWhileChecked)),
        "{:?}",
        r.map(|_| ())
    );
    within("A has B's change", Duration::from_secs(10), || {
        a.directory().users.contains_key("lee")
    });
    assert!(
        !a.directory().users.contains_key("kim"),
        "nothing was applied"
    );
    // Checked again on the directory as it is now, it goes through.
    let checked = a.directory_version();
    a.apply_checked(add("kim"), "test", now, &[], Some(checked))
        .unwrap();
    within("B has A's change", Duration::from_secs(10), || {
        b.directory().users.contains_key("kim")
    });
}

#[test]
fn a_gateways_copy_of_one_directory_is_never_merged_into_another() {
    use metergate::model::User;
    use metergate::store::log::Capacity;
    use metergate::store::{Entity, Expect, Op, Store};
    let (first, second) = (Postgres::start(), Postgres::start());
    let now = time::OffsetDateTime::now_utc();
    let add = |name: &str| {
        vec![Op::Put(
            Entity::User(User::new(name, &format!("{name}@example.org"))),
            Expect::New,
        )]
    };
    let state = tempfile::tempdir().unwrap();
    {
        let a = Store::open_configured(
            state.path(),
            Capacity::default(),
            &first.directory_config("a"),
        )
        .unwrap();
        a.apply(add("lee"), "test", now, &[]).unwrap();
    }
    // The second directory has moved further than the first.
    let other = tempfile::tempdir().unwrap();
    {
        let b = Store::open_configured(
            other.path(),
            Capacity::default(),
            &second.directory_config("b"),
        )
        .unwrap();
        for name in ["ann", "bo", "cat", "dan"] {
            b.apply(add(name), "test", now, &[]).unwrap();
        }
    }
    // The gateway pointed at the second directory holds it, and only it.
    let a = Store::open_configured(
        state.path(),
        Capacity::default(),
        &second.directory_config("a"),
    )
    .unwrap();
    let dir = a.directory();
    assert!(
        dir.users.contains_key("dan"),
        "{:?}",
        dir.users.keys().collect::<Vec<_>>()
    );
    assert!(
        !dir.users.contains_key("lee"),
        "a user of the first directory came along: {:?}",
        dir.users.keys().collect::<Vec<_>>()
    );
}

#[test]
fn a_running_gateway_whose_server_now_holds_another_directory_reads_it_whole() {
    use metergate::model::User;
    use metergate::store::log::Capacity;
    use metergate::store::{Entity, Expect, Op, Store};
    let pg = Postgres::start();
    let state = tempfile::tempdir().unwrap();
    let a = Store::open_configured(state.path(), Capacity::default(), &pg.directory_config("a"))
        .unwrap();
    let lee = vec![Op::Put(
        Entity::User(User::new("lee", "lee@example.org")),
        Expect::New,
    )];
    a.apply(lee, "test", time::OffsetDateTime::now_utc(), &[])
        .unwrap();
    // Behind the gateway's back the server becomes another directory at
    // the same version: one without lee.
    pg.psql_on(
        "metergate",
        "DELETE FROM metergate_directory WHERE key = convert_to('user/lee', 'UTF8'); \
         UPDATE metergate_version SET directory_id = 'another directory'",
    );
    within(
        "A drops what the other directory does not hold",
        Duration::from_secs(15),
        || !a.directory().users.contains_key("lee"),
    );
}

#[test]
fn a_gateway_whose_clock_runs_ahead_still_keeps_the_shared_peak_demand_interval() {
    let pg = Postgres::start();
    let sim = Simulator::start(1, &[]);
    let a = gateway(&pg, "site-a", sim.base_port);
    let mut b = gateway(&pg, "site-b", sim.base_port);
    scada_may_reset_peaks(&a);
    // B's clock is 20 minutes ahead: past the 15-minute interval by its own
    // clock when A has just reset.
    let ahead = std::process::Command::new("date")
        .args(["-u", "-d", "+20 min", "+%Y-%m-%d %H:%M:%S"])
        .output()
        .expect("date runs");
    b.d.restart(Some(String::from_utf8_lossy(&ahead.stdout).trim()));
    within("B lets scada reset peaks", Duration::from_secs(10), || {
        b.d.mg(&["service-user", "show", "scada"])
            .stdout
            .contains("peak-reset")
    });
    let reset = json!([{"op": "write1", "unit": 1, "address": 5000, "value": 21212}]);
    assert_eq!(pymodbus(a.modbus, reset.clone())[0]["ok"], true);
    let r = pymodbus(b.modbus, reset).remove(0);
    assert_eq!(
        r["exception"], 1,
        "B allowed a second reset by its own clock: {r}"
    );
}

#[test]
fn a_reset_made_before_a_gateway_moved_to_postgresql_still_keeps_the_interval() {
    let pg = Postgres::start();
    let sim = Simulator::start(1, &[]);
    let mut g = local_gateway(sim.base_port);
    scada_may_reset_peaks(&g);
    let reset = json!([{"op": "write1", "unit": 1, "address": 5000, "value": 21212}]);
    assert_eq!(pymodbus(g.modbus, reset.clone())[0]["ok"], true);

    // The directory moves to PostgreSQL; the gateway restarts on it.
    g.d.mg(&["user", "add", "boss", "--email", "boss@example.org"])
        .ok();
    g.d.mg(&["user", "attach", "boss", "Administrator"]).ok();
    let file = g.d.dir.path().join("dir.json");
    export_to(&g.d, &file);
    g.d.stop();
    let text = std::fs::read_to_string(&g.d.config).unwrap();
    std::fs::write(
        &g.d.config,
        format!("{text}\n{}", pg.directory_section("site-a")),
    )
    .unwrap();
    g.d.restart(None);
    import_replacing(&g.d, &file);
    let r = pymodbus(g.modbus, reset).remove(0);
    assert_eq!(
        r["exception"], 1,
        "a second reset inside the interval after the move: {r}"
    );
    let shared = pg.psql_on(
        "metergate",
        "SELECT count(*) FROM metergate_guard_state WHERE key LIKE 'pdr/%'",
    );
    assert_eq!(shared.trim(), "1", "the slot is in the shared table");
}
