//! SFTP writes mean what POSIX open(2) and OpenSSH's internal-sftp make
//! them mean, through clients nobody here wrote: OpenSSH's `sftp` (`reput`,
//! `reget`) and paramiko (append, `r+`, a write at an offset, truncate, `w`,
//! the exact open flags). Every result is compared byte for byte. Size
//! changes count against the upload limit and the quota, and parallel
//! uploads together stay within the quota.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/sftp.rs"]
mod sftp_client;
#[path = "common/ssh.rs"]
mod ssh;

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use daemon::Daemon;
use serde_json::{Value, json};
use sftp_client::*;

/// SFTP's open flags, as on the wire.
const WRITE: u32 = 2;
const CREATE: u32 = 8;
const EXCLUDE: u32 = 32;

/// A gateway whose meter `m1` holds `path` with `content`, put there
/// before the gateway first counts the store.
fn with_file(ssh_extra: &str, path: &str, content: &[u8]) -> (Daemon, u16, PathBuf, PathBuf) {
    let (d, port, files, key) = one_meter(ssh_extra);
    let at = files.join(path);
    std::fs::create_dir_all(at.parent().expect("a parent")).unwrap();
    std::fs::write(&at, content).unwrap();
    (d, port, files, key)
}

/// Bytes that differ from one offset to the next.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn events(d: &Daemon, code: &str) -> String {
    d.mg(&["audit", "query", "--code", code, "--limit", "200"])
        .ok()
        .stdout
        .clone()
}

#[test]
fn append_writes_at_the_end_whatever_the_offset_and_keeps_what_was_there() {
    let (d, port, files, key) = with_file("", "logs/notes.txt", b"first line\n");
    // paramiko sends the offset it believes in: after a seek to 0 that is
    // 0, and the server still appends. Pipelined: many writes in flight.
    let r = steps(
        port,
        "ada",
        &key,
        json!([
            ["open", "/m1/logs/notes.txt", "ab"],
            ["pipelined"],
            ["write", "second line\n"],
            ["seek", 0],
            ["write", "third"],
            ["write", " line\n"],
            ["close"]
        ]),
    );
    assert!(r.iter().all(|o| o == "ok"), "{r:?}");
    let stored = std::fs::read(files.join("logs/notes.txt")).unwrap();
    assert_eq!(stored, b"first line\nsecond line\nthird line\n");
    // The event names the final file: its size and SHA-256.
    let ev = events(&d, "sftp.upload");
    assert!(ev.contains(&sha256(&stored)), "{ev}");
    assert!(
        ev.contains(&format!("stored {} bytes", stored.len())),
        "{ev}"
    );
}

#[test]
fn read_write_opens_read_what_is_there_and_write_where_they_seek() {
    let (_d, port, files, key) = with_file("", "config/meter.cfg", b"0123456789");
    let r = steps(
        port,
        "ada",
        &key,
        json!([
            ["open", "/m1/config/meter.cfg", "r+b"],
            ["read", 4],
            ["seek", 2],
            ["write", "AB"],
            ["seek", 0],
            ["read", -1],
            ["close"]
        ]),
    );
    assert_eq!(r, vec!["ok", "0123", "ok", "ok", "ok", "01AB456789", "ok"]);
    assert_eq!(
        std::fs::read(files.join("config/meter.cfg")).unwrap(),
        b"01AB456789"
    );
}

#[test]
fn a_write_at_an_offset_lands_there_and_a_gap_reads_as_zeros() {
    let (_d, port, files, key) = with_file("", "logs/sparse.bin", b"abc");
    // WRITE | CREATE, no TRUNCATE: the bytes stay.
    let r = steps(
        port,
        "ada",
        &key,
        json!([
            ["open_flags", "/m1/logs/sparse.bin", WRITE | CREATE],
            ["seek", 1],
            ["write", "Z"],
            ["seek", 6],
            ["write", "XY"],
            ["close"]
        ]),
    );
    assert!(r.iter().all(|o| o == "ok"), "{r:?}");
    assert_eq!(
        std::fs::read(files.join("logs/sparse.bin")).unwrap(),
        b"aZc\0\0\0XY"
    );
}

#[test]
fn a_truncating_open_replaces_the_content() {
    let (_d, port, files, key) = with_file("", "logs/old.txt", b"a much longer old content");
    let r = steps(
        port,
        "ada",
        &key,
        json!([
            ["open", "/m1/logs/old.txt", "wb"],
            ["write", "new"],
            ["close"]
        ]),
    );
    assert!(r.iter().all(|o| o == "ok"), "{r:?}");
    assert_eq!(std::fs::read(files.join("logs/old.txt")).unwrap(), b"new");
}

#[test]
fn without_create_a_missing_file_is_not_made_and_exclusive_refuses_an_existing_one() {
    let (_d, port, files, key) = with_file("", "logs/kept.txt", b"kept");
    let r = steps(
        port,
        "ada",
        &key,
        json!([
            ["open_flags", "/m1/logs/missing.txt", WRITE],
            ["open_flags", "/m1/logs/kept.txt", WRITE | CREATE | EXCLUDE],
            ["open_flags", "/m1/logs/fresh.txt", WRITE | CREATE | EXCLUDE],
            ["write", "fresh"],
            ["close"]
        ]),
    );
    assert!(
        r[0].as_str().unwrap_or("").contains("no such file"),
        "{r:?}"
    );
    assert!(
        r[1].as_str().unwrap_or("").contains("already exists"),
        "{r:?}"
    );
    assert_eq!(&r[2..], &["ok", "ok", "ok"], "{r:?}");
    let logs = files.join("logs");
    assert_eq!(names(&logs), vec!["fresh.txt", "kept.txt"]);
    assert_eq!(std::fs::read(logs.join("kept.txt")).unwrap(), b"kept");
    assert_eq!(std::fs::read(logs.join("fresh.txt")).unwrap(), b"fresh");
}

#[test]
fn truncate_by_path_and_by_handle_changes_the_size_in_place() {
    let (d, port, files, key) = with_file("", "logs/t.bin", b"0123456789");
    let r = steps(
        port,
        "ada",
        &key,
        json!([
            ["setstat_size", "/m1/logs/t.bin", 4],
            ["stat", "/m1/logs/t.bin"],
            ["open", "/m1/logs/t.bin", "r+b"],
            ["truncate", 2],
            ["seek", 0],
            ["read", -1],
            ["seek", 5],
            ["write", "X"],
            ["close"],
            ["setstat_size", "/m1/logs/t.bin", 8]
        ]),
    );
    assert_eq!(
        Value::Array(r),
        json!(["ok", 4, "ok", "ok", "ok", "01", "ok", "ok", "ok", "ok"])
    );
    assert_eq!(
        std::fs::read(files.join("logs/t.bin")).unwrap(),
        b"01\0\0\0X\0\0"
    );
    let ev = events(&d, "sftp.truncate");
    assert!(
        ev.contains("set the size of the file to 4 bytes (was 10)"),
        "{ev}"
    );
}

#[test]
fn openssh_reput_resumes_an_upload() {
    let whole = pattern(3 << 20);
    let (d, port, files, key) = with_file("", "firmware/image.bin", &whole[..1 << 20]);
    let local = d.dir.path().join("image.bin");
    std::fs::write(&local, &whole).unwrap();
    // 64 writes in flight, each carrying its offset; the remote third
    // stays and the rest follows it.
    let (ok, out) = sftp(
        port,
        &key,
        "ada",
        &format!("reput {} /m1/firmware/image.bin\n", local.display()),
    );
    assert!(ok, "{out}");
    assert!(
        std::fs::read(files.join("firmware/image.bin")).unwrap() == whole,
        "the resumed upload is the whole file, byte for byte"
    );
    let ev = events(&d, "sftp.upload");
    assert!(ev.contains(&sha256(&whole)), "{ev}");
    assert!(
        ev.contains(&format!("stored {} bytes", whole.len())),
        "{ev}"
    );
}

#[test]
fn openssh_reget_resumes_a_download() {
    let whole = pattern(3 << 20);
    let (d, port, _files, key) = with_file("", "firmware/image.bin", &whole);
    let local = d.dir.path().join("image.bin");
    std::fs::write(&local, &whole[..1 << 20]).unwrap();
    let (ok, out) = sftp(
        port,
        &key,
        "ada",
        &format!("reget /m1/firmware/image.bin {}\n", local.display()),
    );
    assert!(ok, "{out}");
    assert!(
        std::fs::read(&local).unwrap() == whole,
        "the resumed download is the whole file, byte for byte"
    );
}

#[test]
fn size_changes_count_against_the_upload_limit_and_the_quota() {
    let (d, port, files, key) = with_file(
        "max_upload_bytes = 50000\nstore_quota_bytes = 100000\n",
        "logs/a.bin",
        &pattern(20_000),
    );
    let logs = files.join("logs");
    std::fs::write(logs.join("small.bin"), b"0123456789").unwrap();
    let (max, quota) = (
        "maximum upload size (50000 bytes)",
        "store quota (100000 bytes)",
    );
    #[rustfmt::skip]
    let table: Vec<(Value, Option<&str>)> = vec![
        // SETSTAT: past the limit refused; within it, counted (70000).
        (json!(["setstat_size", "/m1/logs/small.bin", 60000]), Some(max)),
        (json!(["setstat_size", "/m1/logs/small.bin", 50000]), None),
        // 40000 more would fit but for the size change.
        (json!(["open", "/m1/logs/c.bin", "wb"]), None),
        (json!(["write_n", 40000, 7]), Some(quota)),
        (json!(["close"]), None),
        // FSETSTAT on a file being written: the same rules (95000).
        (json!(["open", "/m1/logs/d.bin", "wb"]), None),
        (json!(["write", "0123456789"]), None),
        (json!(["truncate", 60000]), Some(max)),
        (json!(["truncate", 25000]), None),
        (json!(["truncate", 31000]), Some(quota)),
        (json!(["close"]), None),
        // Exactly what is left fits; one byte more does not.
        (json!(["open", "/m1/logs/e.bin", "wb"]), None),
        (json!(["write_n", 5000, 9]), None),
        (json!(["close"]), None),
        (json!(["open", "/m1/logs/f.bin", "wb"]), None),
        (json!(["write", "x"]), Some(quota)),
        (json!(["close"]), None),
        // A file open only for reading cannot change size.
        (json!(["open", "/m1/logs/a.bin", "rb"]), None),
        (json!(["truncate", 1]), Some("not open for writing")),
        (json!(["close"]), None),
    ];
    let r = steps(
        port,
        "ada",
        &key,
        Value::Array(table.iter().map(|(s, _)| s.clone()).collect()),
    );
    for (i, ((step, expected), got)) in table.iter().zip(&r).enumerate() {
        let got = got.as_str().unwrap_or("");
        match expected {
            None => assert_eq!(got, "ok", "step {i} {step}: {r:?}"),
            Some(why) => assert!(got.contains(why), "step {i} {step}: {got}"),
        }
    }
    let mut small = b"0123456789".to_vec();
    small.resize(50_000, 0);
    let mut d_bin = b"0123456789".to_vec();
    d_bin.resize(25_000, 0);
    assert!(std::fs::read(logs.join("small.bin")).unwrap() == small);
    assert!(std::fs::read(logs.join("d.bin")).unwrap() == d_bin);
    assert_eq!(std::fs::read(logs.join("e.bin")).unwrap(), vec![9u8; 5000]);
    assert!(std::fs::read(logs.join("a.bin")).unwrap() == pattern(20_000));
    assert_eq!(names(&logs), vec!["a.bin", "d.bin", "e.bin", "small.bin"]);
    let ev = events(&d, "sftp.truncate");
    for said in [
        "set the size of the file to 50000 bytes (was 10)",
        "set the size of the file being written to 25000 bytes (was 10)",
        "was not set to 60000 bytes",
    ] {
        assert!(ev.contains(said), "no {said:?}: {ev}");
    }
}

/// Bytes of the regular files under `dir`, each file once (a file renamed
/// while it is walked is not counted twice).
fn bytes_under(dir: &Path, seen: &mut HashSet<u64>) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for e in entries.filter_map(Result::ok) {
        match std::fs::symlink_metadata(e.path()) {
            Ok(m) if m.is_dir() => total += bytes_under(&e.path(), seen),
            Ok(m) if m.is_file() && seen.insert(m.ino()) => total += m.size(),
            _ => {}
        }
    }
    total
}

#[test]
fn parallel_uploads_together_stay_within_the_quota() {
    const QUOTA: u64 = 1_000_000;
    const SIZE: u64 = 300_000;
    let (_d, port, files, key) =
        with_file(&format!("store_quota_bytes = {QUOTA}\n"), "logs/.keep", b"");
    // Watches the store's bytes on disk while the uploads run.
    let (stop, most) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let watcher = {
        let (stop, most, files) = (stop.clone(), most.clone(), files.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let now = bytes_under(&files, &mut HashSet::new());
                most.fetch_max(now, Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    // 4 connections at once, 2 files open in each channel, 8 × 300 kB
    // wanted against 1 MB.
    let r = peer(
        "sftp_parallel.py",
        port,
        "ada",
        &key,
        &["4", "2", &SIZE.to_string(), "/m1/logs"],
    );
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert!(
        most.load(Ordering::Relaxed) <= QUOTA,
        "the store held {} bytes at one time",
        most.load(Ordering::Relaxed)
    );
    let outcomes = r.as_object().expect("one outcome per file");
    assert_eq!(outcomes.len(), 8, "{r}");
    let logs = files.join("logs");
    let mut stored = 0;
    for (name, outcome) in outcomes {
        let k: u8 = name.trim_start_matches("up-").parse().expect("up-K");
        let at = logs.join(name);
        if outcome == "ok" {
            let content = std::fs::read(&at).unwrap();
            assert!(content == vec![k + 1; SIZE as usize], "{name} is whole");
            stored += SIZE;
        } else {
            let why = outcome.as_str().unwrap_or("");
            assert!(
                why.contains(&format!("store quota ({QUOTA} bytes)")),
                "{k}: {why}"
            );
            assert!(!at.exists(), "a refused upload leaves nothing: {name}");
        }
    }
    assert!(stored < 8 * SIZE, "some uploads were refused: {r}");
    assert_eq!(
        names(&logs)
            .iter()
            .filter(|n| n.starts_with(".metergate-upload-"))
            .count(),
        0
    );
    // The count is exact: what is left fits, one byte more does not.
    let left = QUOTA - stored;
    let r = steps(
        port,
        "ada",
        &key,
        json!([
            ["open", "/m1/logs/rest.bin", "wb"],
            ["write_n", left, 1],
            ["close"],
            ["open", "/m1/logs/more.bin", "wb"],
            ["write", "x"],
            ["close"]
        ]),
    );
    assert_eq!(&r[..3], &["ok", "ok", "ok"], "{r:?}");
    assert!(r[4].as_str().unwrap_or("").contains("store quota"), "{r:?}");
    assert_eq!(
        std::fs::metadata(logs.join("rest.bin")).unwrap().len(),
        left
    );
}

/// A drop box: a path whose rule grants writing to one permission and
/// reading to another. A read-write open serves the file's bytes back, so
/// it needs both: a writer alone may replace the file but not read it.
#[test]
fn a_read_write_open_needs_the_right_to_read_too() {
    let port = daemon::free_port();
    let d = Daemon::start_text(|sock| {
        let profile = include_str!("../config/metergate.toml")
            .split_once("# --- profile ion-sim")
            .expect("the ion-sim profile")
            .1
            .split_once("# --- end profile ---")
            .expect("its end")
            .0
            .replace("profiles.ion-sim", "profiles.dropbox");
        daemon::gateway_config(
            sock,
            &format!(
                "# dropbox{profile}\n[[profiles.dropbox.paths]]\npattern = \"drop/**\"\nread = [\"Certificate Management\"]\nwrite = [\"Firmware Management\"]\n\n\
                 [[meters]]\nid = \"m1\"\nprofile = \"dropbox\"\nfiles = \"files/m1\"\n\
                 [ssh]\nlisten = [\"127.0.0.1:{port}\"]\n"
            ),
        )
    });
    let files = d.dir.path().join("files/m1");
    std::fs::create_dir_all(files.join("drop")).unwrap();
    std::fs::write(files.join("drop/key.txt"), b"the old secret").unwrap();
    let policy = d.dir.path().join("writer.toml");
    std::fs::write(
        &policy,
        "name = \"writer\"\n[[statement]]\neffect = \"allow\"\npermissions = [\"Firmware Management\"]\nmeters = [\"*\"]\n",
    )
    .unwrap();
    d.mg(&["policy", "create", "--file", policy.to_str().unwrap()])
        .ok();
    let key = ssh::keygen(d.dir.path(), "wren");
    d.mg(&["user", "add", "wren", "--email", "wren@example.org"])
        .ok();
    d.mg(&["user", "attach", "wren", "writer"]).ok();
    d.mg(&["user", "add-key", "wren", &ssh::public_line(&key)])
        .ok();
    // (flags, expected): READ|WRITE is refused, WRITE|CREATE|TRUNC is not.
    let r = steps(
        port,
        "wren",
        &key,
        json!([
            ["open_flags", "/m1/drop/key.txt", 1 | WRITE],
            ["read", -1],
            ["close"]
        ]),
    );
    assert!(
        r[0].as_str().unwrap_or("").starts_with("error:"),
        "a writer read the drop box: {r:?}"
    );
    assert_ne!(r[1], json!("the old secret"), "{r:?}");
    let r = steps(
        port,
        "wren",
        &key,
        json!([
            ["open_flags", "/m1/drop/key.txt", WRITE | CREATE | 16],
            ["write", "new"],
            ["close"]
        ]),
    );
    assert_eq!(r, [json!("ok"), json!("ok"), json!("ok")], "{r:?}");
    assert_eq!(std::fs::read(files.join("drop/key.txt")).unwrap(), b"new");
}
