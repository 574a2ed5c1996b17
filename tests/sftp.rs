//! The SFTP door driven by OpenSSH's `sftp -b` (a client nobody here wrote)
//! on the demo's meter stores: the permission table of DESIGN §2, protected
//! directories, the escape corpus (refused, logged, nothing outside touched),
//! uploads with their SHA-256, the size limit and the store quota.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/sftp.rs"]
mod sftp_client;
#[path = "common/site.rs"]
mod site;
#[path = "common/ssh.rs"]
mod ssh;

use std::path::{Path, PathBuf};
use std::process::Command;

use sftp_client::*;
use site::Site;
use ssh::*;

/// The demo with more users: `rw` (File System Read and Write Access),
/// `flasher` (Firmware Management alone), `certifier` (Certificate
/// Management alone); crew is an Operator (Read-Only Access) and admin
/// holds Administrator.
fn site() -> Site {
    let s = Site::start();
    for (role, permission) in [
        ("Writer", "File System Read and Write Access"),
        ("Flasher", "Firmware Management"),
        ("Certifier", "Certificate Management"),
    ] {
        s.d.mg(&["role", "create", role, "--permission", permission])
            .ok();
    }
    for (user, role) in [
        ("rw", "Writer"),
        ("flasher", "Flasher"),
        ("certifier", "Certifier"),
    ] {
        s.d.mg(&[
            "user",
            "add",
            user,
            "--email",
            &format!("{user}@example.org"),
        ])
        .ok();
        s.d.mg(&["user", "grant-role", user, role]).ok();
        let key = keygen(s.keys.path(), user);
        s.d.mg(&["user", "add-key", user, &public_line(&key)]).ok();
    }
    s
}

fn store(s: &Site, meter: &str) -> PathBuf {
    s.d.config.with_file_name("meters").join(meter)
}

#[test]
fn each_operation_needs_the_permission_the_table_names() {
    let s = site();
    let local = tempfile::tempdir().unwrap();
    let upload = local.path().join("new.bin");
    std::fs::write(&upload, b"firmware image 1.2.3\n").unwrap();
    let up = upload.display().to_string();
    let got = local.path().join("got");
    let get = got.display().to_string();
    // (who, batch) -> succeeds?
    #[rustfmt::skip]
    let table: Vec<(&str, String, bool)> = vec![
        ("crew", format!("get /meter-1/logs/events.log {get}"), true),
        ("crew", "ls /meter-1/logs".into(), true),
        ("crew", "df /meter-1/logs".into(), true),
        ("crew", format!("put {up} /meter-1/logs/new.bin"), false),
        ("crew", "rm /meter-1/logs/events.log".into(), false),
        ("crew", "rename /meter-1/logs/events.log /meter-1/logs/e2".into(), false),
        ("crew", "mkdir /meter-1/logs/d".into(), false),
        ("crew", format!("get /meter-1/firmware/VERSION {get}"), true),
        ("crew", format!("put {up} /meter-1/firmware/new.bin"), false),
        ("crew", "ls /meter-3".into(), false),
        ("rw", format!("put {up} /meter-1/logs/new.bin"), true),
        ("rw", "mkdir /meter-1/logs/d".into(), true),
        ("rw", "rename /meter-1/logs/new.bin /meter-1/logs/d/moved.bin".into(), true),
        ("rw", "rm /meter-1/logs/d/moved.bin".into(), true),
        ("rw", "rmdir /meter-1/logs/d".into(), true),
        ("rw", format!("put {up} /meter-1/firmware/new.bin"), false),
        ("rw", format!("put {up} /meter-1/certificates/ca.pem"), false),
        ("flasher", format!("put {up} /meter-1/firmware/new.bin"), true),
        ("flasher", format!("get /meter-1/firmware/VERSION {get}"), true),
        ("flasher", format!("put {up} /meter-1/logs/new.bin"), false),
        ("flasher", format!("get /meter-1/logs/events.log {get}"), false),
        // Certificate Management: the certificates directory, and only it.
        ("certifier", format!("put {up} /meter-1/certificates/ca.pem"), true),
        ("certifier", format!("get /meter-1/certificates/ca.pem {get}"), true),
        ("certifier", "ls /meter-1/certificates".into(), true),
        ("certifier", "rm /meter-1/certificates/ca.pem".into(), true),
        ("certifier", format!("put {up} /meter-1/firmware/new-cert.bin"), false),
        ("certifier", format!("put {up} /meter-1/logs/new.bin"), false),
        ("certifier", format!("get /meter-1/logs/events.log {get}"), false),
        ("certifier", format!("put {up} /meter-3/certificates/ca.pem"), true),
        ("admin", "rename /meter-1/firmware /meter-1/fw-old".into(), false),
        ("admin", "rmdir /meter-1/certificates".into(), false),
        ("admin", format!("put {up} /meter-3/config/new.cfg"), true),
    ];
    for (who, batch, expected) in &table {
        let (ok, out) = sftp(s.port, &s.key(who), who, &format!("{batch}\n"));
        assert_eq!(ok, *expected, "{who}: `{batch}`: {out}");
    }
    // What was put is stored whole, under its final name only.
    let fw = store(&s, "meter-1").join("firmware");
    assert_eq!(
        std::fs::read(fw.join("new.bin")).unwrap(),
        b"firmware image 1.2.3\n"
    );
    assert!(fw.join("VERSION").is_file(), "firmware/ was never renamed");
    let leftovers: Vec<String> = names(&fw)
        .into_iter()
        .filter(|n| n.starts_with(".metergate-upload-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The upload's event carries the stored file's SHA-256.
    let sha = {
        let out = Command::new("sha256sum").arg(&upload).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    s.wait_event("sftp.upload", &["user:flasher", &sha]);
    s.wait_event("file.deny", &["user:crew", "meter-1"]);
    s.wait_event("sftp.refused", &["a protected directory cannot be renamed"]);
    // The root lists only the meters one may reach.
    let (_, ls) = sftp(s.port, &s.key("crew"), "crew", "ls /\n");
    assert!(ls.contains("meter-1") && !ls.contains("meter-3"), "{ls}");
}

#[test]
fn the_escape_corpus_is_refused_logged_and_nothing_outside_changes() {
    let s = site();
    let local = tempfile::tempdir().unwrap();
    let get = local.path().join("got").display().to_string();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "outside").unwrap();
    // A symlink planted in the store, pointing out of it.
    let planted = store(&s, "meter-1").join("logs/out");
    std::os::unix::fs::symlink(outside.path(), &planted).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", store(&s, "meter-1").join("logs/pw")).unwrap();
    let o = outside.path().display().to_string();
    #[rustfmt::skip]
    let corpus: Vec<String> = vec![
        format!("get /meter-1/../../etc/passwd {get}"),
        format!("get ../../../../etc/passwd {get}"),
        format!("get /etc/passwd {get}"),
        format!("get /meter-1/logs/out/secret {get}"),
        format!("get /meter-1/logs/pw {get}"),
        "ls /meter-1/logs/out/secret".into(),
        format!("put /etc/hostname /meter-1/logs/out/planted"),
        "rm /meter-1/logs/out/secret".into(),
        "rename /meter-1/logs/events.log /meter-2/logs/stolen.log".into(),
        format!("rename /meter-1/logs/events.log /meter-1/../../{o}/moved"),
        "ln -s / /meter-1/logs/root".into(),
        "ln /meter-1/logs/events.log /meter-1/logs/hard".into(),
        format!("mkdir /meter-1/logs/out/newdir"),
        "df /meter-1/logs/out".into(),
    ];
    for batch in &corpus {
        let (ok, out) = sftp(s.port, &s.key("admin"), "admin", &format!("{batch}\n"));
        assert!(!ok, "`{batch}` should be refused: {out}");
    }
    // The planted link is seen as a link, never followed.
    let (_, ls) = sftp(s.port, &s.key("admin"), "admin", "ls -l /meter-1/logs\n");
    assert!(ls.contains("out") && !ls.contains("secret"), "{ls}");
    // Nothing came out, nothing outside changed.
    assert!(!Path::new(&get).exists(), "something was served");
    assert_eq!(names(outside.path()), vec!["secret".to_string()]);
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret")).unwrap(),
        "outside"
    );
    assert!(store(&s, "meter-1").join("logs/events.log").is_file());
    assert!(!store(&s, "meter-2").join("logs/stolen.log").exists());
    let refused = s.events("sftp.refused");
    for why in [
        "a path leaving the store",
        "cannot move files between meters",
        "symbolic links cannot be created",
        "hard links cannot be created",
        "is not a meter",
    ] {
        assert!(
            refused.contains(why),
            "no refusal saying {why:?}: {refused}"
        );
    }
}

/// Runs a paramiko SFTP script: `sftp` is logged in as `user` with `key`,
/// `args` holds the extra arguments; the script prints one JSON value.
fn paramiko_sftp(
    port: u16,
    user: &str,
    key: &Path,
    body: &str,
    args: &[&str],
) -> serde_json::Value {
    let script = format!(
        r#"import json, socket, sys, paramiko
port, user, key, args = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
t = paramiko.Transport(socket.create_connection(("127.0.0.1", port), timeout=30))
t.start_client(timeout=30)
t.auth_publickey(user, paramiko.Ed25519Key.from_private_key_file(key))
sftp = paramiko.SFTPClient.from_transport(t)
{body}"#
    );
    let out = Command::new("python3")
        .args(["-c", &script, &port.to_string(), user])
        .arg(key)
        .args(args)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_upload_limit_and_the_store_quota_give_clear_errors_and_leave_nothing() {
    let (d, port, files, key) = one_meter("max_upload_bytes = 50000\nstore_quota_bytes = 100000\n");
    let files = files.join("logs");
    std::fs::create_dir_all(&files).unwrap();
    let big = d.dir.path().join("big");
    std::fs::write(&big, vec![7u8; 60_000]).unwrap();
    let part = d.dir.path().join("part");
    std::fs::write(&part, vec![1u8; 40_000]).unwrap();
    // OpenSSH's sftp shows only the status ("Failure"); paramiko shows the
    // message the gateway sent with it.
    let script = r#"
out = []
big, part = args
for src, dst in [(big, "big"), (part, "a"), (part, "b"), (part, "c")]:
    try:
        with sftp.open("/m1/logs/" + dst, "wb") as f:
            f.write(open(src, "rb").read())
        out.append("ok")
    except IOError as e:
        out.append(str(e))
print(json.dumps(out))
"#;
    let (big, part) = (big.display().to_string(), part.display().to_string());
    let r = paramiko_sftp(port, "ada", &key, script, &[&big, &part]);
    assert!(
        r[0].as_str()
            .unwrap()
            .contains("maximum upload size (50000 bytes)"),
        "{r}"
    );
    assert_eq!(
        (r[1].as_str(), r[2].as_str()),
        (Some("ok"), Some("ok")),
        "{r}"
    );
    assert!(
        r[3].as_str()
            .unwrap()
            .contains("store quota (100000 bytes)"),
        "{r}"
    );
    // OpenSSH's client is refused the same way.
    let (ok, _) = sftp(port, &key, "ada", &format!("put {part} /m1/logs/d\n"));
    assert!(!ok);
    assert_eq!(
        names(&files),
        vec!["a".to_string(), "b".to_string()],
        "no partial file"
    );
}

#[test]
fn paramiko_drives_the_extended_operations() {
    let s = site();
    let script = r#"
out = {}
with sftp.open("/meter-1/logs/a.txt", "w") as f:
    f.write("first")
with sftp.open("/meter-1/logs/b.txt", "w") as f:
    f.write("second")
sftp.posix_rename("/meter-1/logs/a.txt", "/meter-1/logs/b.txt")
out["after_posix_rename"] = sftp.open("/meter-1/logs/b.txt").read().decode()
out["exists_a"] = "a.txt" in sftp.listdir("/meter-1/logs")
out["stat_size"] = sftp.stat("/meter-1/logs/b.txt").st_size
for name, op in [("posix_rename_out", lambda: sftp.posix_rename("/meter-1/logs/b.txt", "/meter-1/../../tmp/x")),
                 ("symlink", lambda: sftp.symlink("/", "/meter-1/logs/root")),
                 ("readlink", lambda: sftp.readlink("/meter-1/logs/b.txt")),
                 ("chmod_other_meter", lambda: sftp.chmod("/meter-9/logs/b.txt", 0o777))]:
    try:
        op()
        out[name] = "allowed"
    except IOError as e:
        out[name] = "refused"
sftp.close()
t.close()
print(json.dumps(out))
"#;
    let r = paramiko_sftp(s.port, "admin", &s.key("admin"), script, &[]);
    assert_eq!(r["after_posix_rename"], "first", "{r}");
    assert_eq!(r["exists_a"], false, "{r}");
    assert_eq!(r["stat_size"], 5, "{r}");
    for op in [
        "posix_rename_out",
        "symlink",
        "readlink",
        "chmod_other_meter",
    ] {
        assert_eq!(r[op], "refused", "{op}: {r}");
    }
}

#[test]
fn a_directory_swapped_for_a_symlink_mid_read_never_serves_the_outside() {
    let s = site();
    let logs = store(&s, "meter-1").join("logs");
    let parked = store(&s, "meter-1").join("logs-parked");
    // Outside the store, a tree that looks like the one the client reads.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("events.log"), "OUTSIDE").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (stop, logs, parked, target) = (
            stop.clone(),
            logs.clone(),
            parked.clone(),
            outside.path().to_path_buf(),
        );
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // logs/ -> a symlink to the outside, and back.
                if std::fs::rename(&logs, &parked).is_ok() {
                    let _ = std::os::unix::fs::symlink(&target, &logs);
                    std::thread::yield_now();
                    let _ = std::fs::remove_file(&logs);
                    let _ = std::fs::rename(&parked, &logs);
                    swaps += 1;
                }
            }
            swaps
        })
    };
    let script = r#"
seen = {"inside": 0, "refused": 0, "outside": 0}
for i in range(1500):
    try:
        with sftp.open("/meter-1/logs/events.log") as f:
            data = f.read()
        seen["outside" if b"OUTSIDE" in data else "inside"] += 1
    except IOError:
        seen["refused"] += 1
print(json.dumps(seen))
"#;
    let r = paramiko_sftp(s.port, "admin", &s.key("admin"), script, &[]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert_eq!(r["outside"], 0, "the outside was served: {r}");
    // The race really ran both ways: reads inside and reads refused.
    assert!(swaps > 0, "{r}");
    assert!(r["inside"].as_u64().unwrap() > 0, "{r}");
    assert!(r["refused"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn an_upstream_store_is_reached_as_the_meter_side_account_with_the_pinned_key() {
    let s = site();
    // meter-2's and meter-3's stores become their meters' own SFTP servers
    // (the simulated consoles serve them); meter-3 pins a key its server
    // does not have. Read-only access maps to `viewer`, read-write to
    // `engineer`.
    let wrong = public_line(&keygen(s.keys.path(), "not-the-meter"));
    let accounts = "accounts = [{ permission = \"File System Read-Only Access\", account = \"viewer\" }, \
                    { permission = \"File System Read and Write Access\", account = \"engineer\" }]";
    s.d.reload_with(|text| {
        let mut console = String::new();
        let mut out = String::new();
        for line in text.lines() {
            if line.starts_with("console = ") {
                console = line.to_string();
            }
            let meter = line
                .strip_prefix("files = \"meters/")
                .map(|m| m.trim_end_matches('"').to_string());
            match meter.as_deref() {
                Some(m @ ("meter-2" | "meter-3")) => {
                    let mut sftp = console.replacen("console = ", "sftp = ", 1);
                    if m == "meter-3" {
                        let (head, _) = sftp.split_once("host_key").unwrap();
                        sftp = format!("{head}host_key = \"{wrong}\" }}");
                    }
                    out += &format!("{sftp}\n{accounts}\n");
                }
                _ => {
                    out += line;
                    out.push('\n');
                }
            }
        }
        out
    });
    let local = tempfile::tempdir().unwrap();
    let get = local.path().join("got");
    let up = local.path().join("up.txt");
    std::fs::write(&up, "from the crew\n").unwrap();
    let meter2 = store(&s, "meter-2");
    let table: Vec<(&str, String, bool)> = vec![
        (
            "crew",
            format!("get /meter-2/logs/events.log {}", get.display()),
            true,
        ),
        (
            "crew",
            format!("put {} /meter-2/logs/up.txt", up.display()),
            false,
        ),
        (
            "rw",
            format!("put {} /meter-2/logs/up.txt", up.display()),
            true,
        ),
        ("rw", "ls /meter-2/logs".into(), true),
        (
            "rw",
            "rename /meter-2/logs/up.txt /meter-2/logs/up2.txt".into(),
            true,
        ),
        ("rw", "ls /meter-3/logs".into(), false),
    ];
    for (who, batch, expected) in &table {
        let (ok, out) = sftp(s.port, &s.key(who), who, &format!("{batch}\n"));
        assert_eq!(
            ok,
            *expected,
            "{who}: `{batch}`: {out} {}",
            s.events("sftp.upload")
        );
    }
    assert_eq!(
        std::fs::read(&get).unwrap(),
        std::fs::read(meter2.join("logs/events.log")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(meter2.join("logs/up2.txt")).unwrap(),
        "from the crew\n"
    );
    // A resumed upload: the part on the meter is copied through its server
    // into the temporary file, the rest follows it.
    let whole: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&up, &whole).unwrap();
    std::fs::write(meter2.join("logs/resumed.bin"), &whole[..100_000]).unwrap();
    let (ok, out) = sftp(
        s.port,
        &s.key("rw"),
        "rw",
        &format!("reput {} /meter-2/logs/resumed.bin\n", up.display()),
    );
    assert!(ok, "{out} {}", s.events("sftp.upload"));
    assert!(
        std::fs::read(meter2.join("logs/resumed.bin")).unwrap() == whole,
        "the resumed upload is whole on the meter"
    );
    let leftovers: Vec<String> = names(&meter2.join("logs"))
        .into_iter()
        .filter(|n| n.starts_with(".metergate-upload-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A symlink on the meter is seen as one (LSTAT), never as the file it
    // names (STAT is refused).
    std::os::unix::fs::symlink("events.log", meter2.join("logs/link")).unwrap();
    let script = r#"
out = {}
for op in ("stat", "lstat"):
    try:
        a = getattr(sftp, op)("/meter-2/logs/link")
        out[op] = "link" if (a.st_mode & 0o170000) == 0o120000 else "file"
    except IOError:
        out[op] = "refused"
print(json.dumps(out))
"#;
    let r = paramiko_sftp(s.port, "rw", &s.key("rw"), script, &[]);
    assert_eq!(r, serde_json::json!({"stat": "refused", "lstat": "link"}));
    s.wait_event("sftp.upload", &["user:rw", "meter-2"]);
    s.wait_event("sftp.upstream-failed", &["meter-3", "not the pinned one"]);
}

/// A small tmpfs, unmounted when dropped.
struct SmallDisk(PathBuf);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_gives_a_clear_error_and_leaves_the_previous_file_whole() {
    let (d, port, files, key) = one_meter("");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=128k", "tmpfs"])
        .arg(&files)
        .status()
        .expect("mount runs");
    assert!(
        mounted.success(),
        "mounting a tmpfs needs root (CI runs as root)"
    );
    let _disk = SmallDisk(files.clone());
    std::fs::create_dir(files.join("logs")).unwrap();
    let previous: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(files.join("logs/previous.bin"), &previous).unwrap();
    // 512 KiB into a 128 KiB disk: a new file, a replacing one ("wb") and
    // an append (the copy fits, the rest does not).
    let script = r#"
out = []
for path, mode in [("/m1/logs/big.bin", "wb"), ("/m1/logs/previous.bin", "wb"),
                   ("/m1/logs/previous.bin", "ab")]:
    try:
        with sftp.open(path, mode) as f:
            for _ in range(16):
                f.write(b"x" * 32768)
        out.append("ok")
    except IOError as e:
        out.append(str(e))
print(json.dumps(out))
"#;
    let r = paramiko_sftp(port, "ada", &key, script, &[]);
    for (i, outcome) in r.as_array().expect("a list").iter().enumerate() {
        assert!(
            outcome
                .as_str()
                .unwrap_or("")
                .contains("No space left on device"),
            "upload {i}: {r}"
        );
    }
    assert_eq!(
        names(&files.join("logs")),
        vec!["previous.bin".to_string()],
        "nothing half-written is left"
    );
    assert!(
        std::fs::read(files.join("logs/previous.bin")).unwrap() == previous,
        "the previous file is whole, byte for byte"
    );
    let failures = d
        .mg(&["audit", "query", "--code", "sftp.upload"])
        .ok()
        .stdout
        .clone();
    assert!(failures.contains("discarded"), "{failures}");
}

#[test]
fn a_meter_the_caller_may_not_reach_is_answered_as_one_that_does_not_exist() {
    let s = Site::start();
    // crew is an Operator on site=north: meter-3 (south) exists, meter-9
    // does not; neither may be learned of.
    let script = r#"
def answer(op, path):
    try:
        r = getattr(sftp, op)(path)
        if op == "listdir":
            r = sorted(r)
        elif op in ("stat", "lstat"):
            r = "attrs"
        elif op == "open":
            r = "opened"
        return ["ok", r]
    except Exception as e:
        return [type(e).__name__, getattr(e, "errno", None), str(e)]
out = {}
for op in ("normalize", "stat", "lstat", "listdir", "open"):
    for path in args:
        out[op + " " + path] = answer(op, path)
out["root"] = answer("listdir", "/")
print(json.dumps(out))
"#;
    let pairs = [
        ("/meter-3", "/meter-9"),
        ("/meter-3/logs", "/meter-9/logs"),
        ("/meter-3/logs/energy.csv", "/meter-9/logs/energy.csv"),
        ("meter-3", "meter-9"),
    ];
    let mut paths = Vec::new();
    for (hidden, missing) in pairs {
        paths.push(hidden);
        paths.push(missing);
    }
    let r = paramiko_sftp(s.port, "crew", &s.key("crew"), script, &paths);
    for op in ["normalize", "stat", "lstat", "listdir", "open"] {
        for (hidden, missing) in pairs {
            let (h, m) = (&r[format!("{op} {hidden}")], &r[format!("{op} {missing}")]);
            assert_eq!(h, m, "{op}: {hidden} and {missing} answer differently: {r}");
            assert_ne!(h[0], "ok", "{op} {hidden} answered: {r}");
        }
    }
    let root = r["root"][1].as_array().expect("/ lists").clone();
    assert!(root.iter().any(|n| n == "meter-1"), "{r}");
    assert!(!root.iter().any(|n| n == "meter-3"), "{r}");
    // The log still tells them apart.
    s.wait_event(
        "sftp.refused",
        &["`meter-3` is a meter the caller may not reach"],
    );
    s.wait_event("sftp.refused", &["`meter-9` is not a meter"]);
}
