//! SFTP writes mean what POSIX open(2) and OpenSSH's internal-sftp make
//! them mean, through clients nobody here wrote: OpenSSH's `sftp` (`reput`,
//! `reget`) and paramiko (append, `r+`, a write at an offset, truncate, `w`,
//! the exact open flags). Every result is compared byte for byte.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/sftp.rs"]
mod sftp_client;
#[path = "common/ssh.rs"]
mod ssh;

use std::path::PathBuf;

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
