//! A real PostgreSQL 15 for the tests, from Debian's packages: `initdb` and
//! `pg_ctl` in a temporary directory (as the `postgres` account when the
//! tests run as root), on a free loopback port, TLS only, with a server
//! certificate from a test CA; the gateways log in with a password.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::daemon::free_port;

pub struct Postgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    as_postgres: bool,
}

/// The newest PostgreSQL's programs.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    versions.sort();
    let bin = versions
        .last()
        .map(|v| v.join("bin"))
        .filter(|b| b.join("initdb").exists());
    bin.unwrap_or_else(|| {
        panic!("PostgreSQL is not installed: apt-get install postgresql (bash .ci/run does)")
    })
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        let as_postgres = nix::unistd::Uid::effective().is_root();
        let port = free_port();
        let pg = Postgres {
            dir,
            port,
            bin,
            as_postgres,
        };
        pg.tls();
        std::fs::write(pg.path("superuser.pw"), "test-superuser\n").unwrap();
        std::fs::write(pg.password_file(), "gateway-secret\n").unwrap();
        std::fs::set_permissions(pg.password_file(), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        if as_postgres {
            // The server refuses to run as root.
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(pg.dir.path())
                .status()
                .expect("chown runs");
            assert!(chown.success());
        }
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.s("data"),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--pwfile",
                &pg.s("superuser.pw"),
                "-E",
                "UTF8",
            ],
        );
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nfsync = off\n\
             max_connections = 200\nlog_min_messages = warning\n",
            pg.s(""),
            pg.s("server.crt"),
            pg.s("server.key"),
        );
        append(&pg.path("data/postgresql.conf"), &conf);
        // TLS only from the network: no plain `host` line at all.
        std::fs::write(
            pg.path("data/pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        pg.up();
        pg.psql("CREATE ROLE metergate LOGIN PASSWORD 'gateway-secret'");
        pg.psql("CREATE DATABASE metergate OWNER metergate");
        pg
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn s(&self, p: &str) -> String {
        self.path(p).display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        let exe = self.bin.join(program);
        let out = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        }
        .unwrap_or_else(|e| panic!("{} runs: {e}", exe.display()));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts (or restarts) the server and waits until it accepts.
    pub fn up(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.s("data"),
                "-l",
                &self.s("server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server (fast: connections are cut).
    pub fn down(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.s("data"),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "stop",
            ],
        );
    }

    /// Runs SQL as the superuser over the local socket.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_on("postgres", sql)
    }

    /// `psql` as the superuser on database `db`.
    pub fn psql_on(&self, db: &str, sql: &str) -> String {
        self.run(
            "psql",
            &[
                "-h",
                &self.s(""),
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-tAc",
                sql,
            ],
        )
    }

    pub fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }

    pub fn password_file(&self) -> PathBuf {
        self.path("gateway.pw")
    }

    /// The directory's configuration for a store opened in the test's own
    /// process, as gateway `gateway`.
    pub fn directory_config(&self, gateway: &str) -> metergate::config::DirectoryConfig {
        metergate::config::DirectoryConfig::Postgres(metergate::config::PostgresDirectory {
            url: format!("postgres://metergate@127.0.0.1:{}/metergate", self.port),
            gateway: gateway.into(),
            ca: self.ca(),
            password_file: Some(self.password_file()),
            max_stale: std::time::Duration::from_secs(3600),
            pool_size: 4,
        })
    }

    /// The `[directory]` section of a gateway named `gateway`.
    pub fn directory_section(&self, gateway: &str) -> String {
        self.directory_section_stale(gateway, "1h")
    }

    /// As [`Postgres::directory_section`], with `max_stale`.
    pub fn directory_section_stale(&self, gateway: &str, max_stale: &str) -> String {
        format!(
            "[directory]\nbackend = \"postgres\"\nurl = \"postgres://metergate@127.0.0.1:{}/metergate\"\n\
             gateway = \"{gateway}\"\nca = {:?}\npassword_file = {:?}\nmax_stale = \"{max_stale}\"\n",
            self.port,
            self.ca().display().to_string(),
            self.password_file().display().to_string()
        )
    }

    /// A CA and the server's certificate for 127.0.0.1, by rcgen.
    fn tls(&self) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "metergate test directory CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        server
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
        let cert = server.signed_by(&key, &issuer).unwrap();
        std::fs::write(self.ca(), ca_cert.pem()).unwrap();
        std::fs::write(self.path("server.crt"), cert.pem()).unwrap();
        std::fs::write(self.path("server.key"), key.serialize_pem()).unwrap();
        std::fs::set_permissions(
            self.path("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.run_quiet();
    }
}

impl Postgres {
    fn run_quiet(&self) -> std::io::Result<std::process::Output> {
        let exe = self.bin.join("pg_ctl");
        let args = ["-D", &self.s("data"), "-m", "immediate", "-w", "stop"];
        if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        }
    }
}
