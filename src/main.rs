//! The `metergate` command line: runs the daemon or the demo, validates
//! configs, and sends admin commands to the running daemon. Exit codes:
//! 0 ok, 1 runtime failure, 2 usage or config error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use metergate::commands::{AdminCommand, AuditCommand};
use metergate::config::Config;
use metergate::doors::admin::protocol::Request;
use metergate::doors::admin::server::{call, call_streaming, default_socket};
use metergate::{daemon, demo, store};

#[derive(Parser)]
#[command(
    name = "metergate",
    version,
    about = "A gateway in front of fleets of electricity meters: one guard, one tamper-evident log"
)]
struct Cli {
    /// Config file (the daemon's; admin commands read the socket path from it).
    #[arg(long, global = true, env = "METERGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Control socket of the running daemon.
    #[arg(long, global = true, env = "METERGATE_SOCKET")]
    socket: Option<PathBuf>,
    /// A remote gateway's HTTPS API (https://HOST:PORT) instead of the
    /// control socket; the access key comes from METERGATE_KEY_ID and
    /// METERGATE_KEY_SECRET.
    #[arg(long, global = true, env = "METERGATE_API")]
    api: Option<String>,
    /// The CA certificate the remote gateway's certificate must chain to
    /// (default: the system's CA bundle).
    #[arg(long, global = true, env = "METERGATE_CACERT")]
    cacert: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    /// How the daemon's own log lines look on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// The embedded demo, in the foreground until Ctrl-C or SIGTERM.
    Demo {
        /// Where the demo lives (new or empty: set up; holding a demo: resumed).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Modbus proxy port of a fresh demo (meters 15519 above it); for tests.
        #[arg(long, hide = true, default_value_t = demo::DEMO_MODBUS_PORT)]
        base_port: u16,
    },
    /// Run the daemon (needs --config).
    Serve,
    /// Validate a config file and exit (2 with file, line and key on error).
    CheckConfig,
    /// Simulated meters as their own process: meter sim-K on port P+K-1.
    Simulate {
        #[arg(long, default_value_t = 1)]
        meters: u16,
        #[arg(long)]
        base_port: u16,
        /// Added to every answer.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Share of requests left unanswered (0.0-1.0).
        #[arg(long, default_value_t = 0.0)]
        drop_rate: f64,
        /// Where the meters' file trees live (DIR/sim-K); default: a new
        /// temporary directory.
        #[arg(long)]
        files: Option<PathBuf>,
        /// Only every Nth request is slowed by --latency-ms (default: all).
        #[arg(long, default_value_t = 1)]
        slow_every: u64,
        /// Connections each meter accepts (a real ION9000: 8).
        #[arg(long, default_value_t = 8)]
        max_connections: usize,
    },
    /// The certificate authority for Modbus/TCP Security; runs here, where
    /// the CA key lives (the daemon only reads the CA certificate and CRL).
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Shell completions for bash, zsh, fish, elvish or powershell, on stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The man page (roff), generated from this command line, on stdout.
    Man,
    #[command(flatten)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
enum CertCommand {
    /// Create a certificate authority (ECDSA P-256) in the --ca folder.
    InitCa {
        /// The CA's folder (created 0700; the demo's is DIR/ca).
        #[arg(long)]
        ca: PathBuf,
    },
    /// The gateway's own certificate: OUT/server.crt, OUT/server.key, OUT/ca.crt.
    Server {
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// An IP address or DNS name (repeatable; default 127.0.0.1, ::1, localhost).
        #[arg(long = "name")]
        names: Vec<String>,
        #[arg(long, default_value_t = 730)]
        days: i64,
    },
    /// A client certificate for a service user, with its role and clientAuth:
    /// OUT/SERVICE-USER.crt and .key (0600) and OUT/ca.crt.
    Issue {
        #[arg(long)]
        ca: PathBuf,
        /// Named by the subject CN (and a SAN URI urn:metergate:service-user:NAME).
        #[arg(long)]
        service_user: String,
        /// The role (a role in the daemon's role table). Given twice, the
        /// certificate carries two roles and every listener refuses it.
        #[arg(long, required_unless_present = "no_role")]
        role: Vec<String>,
        /// No role extension: the certificate connects but every request is denied.
        #[arg(long, conflicts_with = "role")]
        no_role: bool,
        /// Valid from 00:00 UTC of this date (default: now).
        #[arg(long)]
        not_before: Option<String>,
        /// Valid until 00:00 UTC of this date.
        #[arg(long, conflicts_with = "days")]
        not_after: Option<String>,
        /// Valid for this many days (default 365).
        #[arg(long)]
        days: Option<i64>,
        /// Leave out the extended key usage clientAuth (listeners refuse it).
        #[arg(long)]
        no_client_auth: bool,
        #[arg(long)]
        out: PathBuf,
    },
    /// What the CA issued, with status.
    List {
        #[arg(long)]
        ca: PathBuf,
    },
    /// Revoke a certificate and rewrite the CRL (DIR/crl.pem) the listener reads.
    Revoke {
        #[arg(long)]
        ca: PathBuf,
        /// As `cert list` prints it.
        serial: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon starts its log once its config (and log level) is read.
    if !matches!(
        cli.command,
        Command::Admin(_) | Command::Serve | Command::Demo { .. }
    ) {
        init_logging(cli.log_format, None);
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Levels from RUST_LOG, else the config's `daemon.log_level`, else info.
fn init_logging(format: LogFormat, level: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.unwrap_or("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

fn load_config(path: Option<&Path>, what: &str) -> Result<Config, ExitCode> {
    load_config_then(path, what, |warning| eprintln!("warning: {warning}"))
}

/// Loads a config; each warning (`FILE:LINE: key: message`) goes to `warn`.
fn load_config_then(
    path: Option<&Path>,
    what: &str,
    warn: impl Fn(&str),
) -> Result<Config, ExitCode> {
    let Some(path) = path else {
        eprintln!("error: {what} needs --config PATH");
        return Err(ExitCode::from(2));
    };
    match Config::load(path) {
        Ok((config, warnings)) => {
            for w in &warnings {
                warn(&format!("{}:{w}", path.display()));
            }
            Ok(config)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(2))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig => {
            let config = match load_config(cli.config.as_deref(), "check-config") {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            if let Some(m) = &config.mbaps
                && let Err(e) =
                    metergate::doors::modbus::mbaps::Tls::load(m, time::OffsetDateTime::now_utc())
            {
                eprintln!("error: mbaps: {e}");
                return Ok(ExitCode::from(2));
            }
            println!(
                "ok: {} ({} meters, {} profiles, {} Modbus client entries)",
                config.path.display(),
                config.meters.len(),
                config.profiles.len(),
                config.modbus_clients.len(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => {
            // Warnings wait for the log, so that they come in its format.
            let warnings = std::cell::RefCell::new(Vec::new());
            let config = match load_config_then(cli.config.as_deref(), "serve", |w| {
                warnings.borrow_mut().push(w.to_string())
            }) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            init_logging(cli.log_format, config.daemon.log_level.as_deref());
            for w in warnings.into_inner() {
                tracing::warn!("config: {w}");
            }
            let result = runtime()?.block_on(daemon::run(config, |r| {
                tracing::info!(socket = %r.socket.display(), "metergate ready");
            }));
            daemon_exit(result)
        }
        Command::Simulate {
            meters,
            base_port,
            latency_ms,
            slow_every,
            drop_rate,
            max_connections,
            files,
        } => {
            if !(0.0..=1.0).contains(&drop_rate)
                || meters == 0
                || base_port as u32 + meters as u32 > 65_536
            {
                eprintln!(
                    "error: --drop-rate must be within 0.0-1.0, --meters at least 1, and the ports must fit below 65536"
                );
                return Ok(ExitCode::from(2));
            }
            let faults = metergate::fleet::simulator::Faults {
                latency: std::time::Duration::from_millis(latency_ms),
                slow_every,
                drop_per_mille: (drop_rate * 1000.0) as u32,
                max_connections,
            };
            runtime()?.block_on(async move {
                let mut running = Vec::new();
                let files = files.unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("metergate-sim-{base_port}"))
                });
                for k in 0..meters {
                    metergate::fleet::simulator::create_file_tree(
                        &files.join(format!("sim-{}", k + 1)),
                        &format!("sim-{}", k + 1),
                    )?;
                    let addr: std::net::SocketAddr = ([127, 0, 0, 1], base_port + k).into();
                    running.push(
                        metergate::fleet::simulator::SimulatedMeter::start(addr, faults).await?,
                    );
                    println!("sim-{} on {addr}", k + 1);
                }
                println!("files in {}", files.display());
                println!("metergate simulate ready");
                tokio::signal::ctrl_c().await?;
                drop(running);
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { dir, base_port } => {
            if base_port as u32 + 15_524 > 65_535 {
                eprintln!("error: --base-port {base_port} leaves no room for the meters' ports");
                return Ok(ExitCode::from(2));
            }
            let demo = match demo::prepare(dir, base_port) {
                Ok(d) => d,
                Err(e @ demo::DemoError::NotADemo(_)) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
                Err(e) => return Err(e.into()),
            };
            init_logging(cli.log_format, demo.config.daemon.log_level.as_deref());
            let text = demo::instructions(&demo);
            let rt = runtime()?;
            let _meters = rt.block_on(demo::start_meters(&demo.config, &demo.dir))?;
            let result = rt.block_on(daemon::run(demo.config, |_| {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "{text}\nmetergate demo ready\n");
                let _ = out.flush();
            }));
            daemon_exit(result)
        }
        Command::Cert { command } => cert(command, cli.socket, cli.config.as_deref(), cli.json),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "metergate",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin(AdminCommand::Audit {
            command:
                AuditCommand::Verify {
                    state_dir: Some(dir),
                    checkpoint,
                    public_key,
                    from,
                    ..
                },
        }) => match checkpoint {
            None => verify_stopped(&dir, from, cli.json),
            Some(cp) => check_stopped(&dir, &cp, public_key.as_deref()),
        },
        Command::Admin(_) => match &cli.api {
            Some(url) => admin_remote(url, cli.cacert.as_deref(), cli.json),
            None => admin(cli.socket, cli.config.as_deref(), cli.json),
        },
    }
}

/// A certificate or key the config names is unusable: a config error (2).
fn daemon_exit(result: Result<(), daemon::DaemonError>) -> anyhow::Result<ExitCode> {
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(
            e @ (daemon::DaemonError::Mbaps(_)
            | daemon::DaemonError::Forward(_)
            | daemon::DaemonError::Ssh(_)),
        ) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(2))
        }
        // Configuration and file-permission problems: exit 2 with the fix.
        Err(daemon::DaemonError::Service(e))
            if !matches!(e, metergate::service::ServiceError::Drop { .. }) =>
        {
            eprintln!("error: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e.into()),
    }
}

/// `metergate cert …`: the CA operation here, then a report to the daemon
/// (if one is reachable) so the security log records it.
fn cert(
    command: CertCommand,
    socket: Option<PathBuf>,
    config: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use metergate::pki::PkiError;
    use metergate::pki::ca::{Ca, ClientRequest, Written};
    let now = time::OffsetDateTime::now_utc();
    let date = |flag: &str, text: &str| {
        metergate::model::Day::parse(text)
            .map(|d| d.start())
            .map_err(|_| PkiError::Usage(format!("{flag} `{text}` is not a date (YYYY-MM-DD)")))
    };
    let print_written = |w: &Written, what: &str| {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "serial": w.issued.serial, "kind": w.issued.kind, "name": w.issued.name,
                    "roles": w.issued.roles, "not_before": w.issued.not_before,
                    "not_after": w.issued.not_after, "certificate": w.certificate,
                    "key": w.key, "ca_certificate": w.ca_certificate,
                })
            );
        } else {
            println!(
                "issued {what} certificate {} for {}{}, valid {} to {}",
                w.issued.serial,
                w.issued.name,
                if w.issued.roles.is_empty() {
                    String::new()
                } else {
                    format!(" (role {})", w.issued.roles.join(", "))
                },
                w.issued.not_before,
                w.issued.not_after
            );
            println!("certificate: {}", w.certificate.display());
            println!("key: {} (0600)", w.key.display());
            println!("CA certificate: {}", w.ca_certificate.display());
        }
    };
    let result: Result<Option<Vec<String>>, PkiError> = (|| match &command {
        CertCommand::InitCa { ca } => {
            let (_, issued) = Ca::init(ca, now)?;
            println!(
                "created certificate authority {} in {}",
                issued.serial,
                ca.display()
            );
            println!("CA certificate: {}", ca.join("ca.crt").display());
            println!(
                "CA key: {} (0600; keep it off the gateway)",
                ca.join("ca.key").display()
            );
            println!("CRL: {}", ca.join("crl.pem").display());
            Ok(None)
        }
        CertCommand::Server {
            ca,
            out,
            names,
            days,
        } => {
            let names = if names.is_empty() {
                vec!["127.0.0.1".into(), "::1".into(), "localhost".into()]
            } else {
                names.clone()
            };
            if *days < 1 {
                return Err(PkiError::Usage("--days must be at least 1".into()));
            }
            let w = Ca::open(ca)?.server(out, &names, *days, now)?;
            print_written(&w, "server");
            Ok(Some(report_argv("issued", &w.issued)))
        }
        CertCommand::Issue {
            ca,
            service_user,
            role,
            no_role: _,
            not_before,
            not_after,
            days,
            no_client_auth,
            out,
        } => {
            let not_before = not_before
                .as_deref()
                .map(|t| date("--not-before", t))
                .transpose()?;
            let start = not_before.unwrap_or(now);
            let not_after = match (not_after, days) {
                (Some(t), _) => date("--not-after", t)?,
                (None, Some(d)) if *d >= 1 => start + time::Duration::days(*d),
                (None, Some(_)) => return Err(PkiError::Usage("--days must be at least 1".into())),
                (None, None) => start + time::Duration::days(365),
            };
            if role.len() > 1 {
                eprintln!(
                    "warning: a certificate with {} roles: Modbus/TCP Security listeners refuse it (one role per certificate)",
                    role.len()
                );
            }
            if role.is_empty() {
                eprintln!("note: no role: the certificate connects but every request is denied");
            }
            let w = Ca::open(ca)?.issue(
                &ClientRequest {
                    service_user: service_user.clone(),
                    roles: role.clone(),
                    not_before,
                    not_after,
                    client_auth: !no_client_auth,
                },
                out,
                now,
            )?;
            print_written(&w, "client");
            Ok(Some(report_argv("issued", &w.issued)))
        }
        CertCommand::List { ca } => {
            let list = Ca::open(ca)?.list()?;
            if json {
                for c in &list {
                    println!(
                        "{}",
                        serde_json::json!({
                            "serial": c.serial, "kind": c.kind, "name": c.name, "roles": c.roles,
                            "not_before": c.not_before, "not_after": c.not_after,
                            "revoked": c.revoked, "status": c.status(now),
                        })
                    );
                }
            } else {
                println!(
                    "{:<34} {:<7} {:<24} {:<14} {:<21} STATUS",
                    "SERIAL", "KIND", "NAME", "ROLE", "NOT AFTER"
                );
                for c in &list {
                    let roles = if c.roles.is_empty() {
                        "-".to_string()
                    } else {
                        c.roles.join(",")
                    };
                    println!(
                        "{:<34} {:<7} {:<24} {:<14} {:<21} {}",
                        c.serial,
                        c.kind,
                        c.name,
                        roles,
                        c.not_after,
                        c.status(now)
                    );
                }
            }
            Ok(None)
        }
        CertCommand::Revoke { ca, serial } => {
            let ca = Ca::open(ca)?;
            let (issued, already) = ca.revoke(serial, now)?;
            if already {
                println!(
                    "certificate {} was already revoked at {}",
                    issued.serial,
                    issued.revoked.as_deref().unwrap_or("?")
                );
                return Ok(None);
            }
            println!(
                "revoked certificate {} ({} {}); CRL written to {}",
                issued.serial,
                issued.kind,
                issued.name,
                ca.crl().display()
            );
            Ok(Some(report_argv("revoked", &issued)))
        }
    })();
    let argv = match result {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(e.exit_code()));
        }
    };
    if let Some(argv) = argv {
        report_to_daemon(socket, config, argv);
    }
    Ok(ExitCode::SUCCESS)
}

fn report_argv(what: &str, issued: &metergate::pki::ca::Issued) -> Vec<String> {
    let mut argv = vec![
        "certificate-report".to_string(),
        what.into(),
        "--serial".into(),
        issued.serial.clone(),
        "--kind".into(),
        issued.kind.clone(),
        "--name".into(),
        issued.name.clone(),
        "--not-after".into(),
        issued.not_after.clone(),
    ];
    for r in &issued.roles {
        argv.push("--role".into());
        argv.push(r.clone());
    }
    argv
}

/// The CA operation is done either way; the daemon, when reachable, records
/// it in the security log (and reloads its CRL on a revocation).
fn report_to_daemon(socket: Option<PathBuf>, config: Option<&Path>, argv: Vec<String>) {
    let socket = match (socket, config) {
        (Some(s), _) => s,
        (None, Some(c)) => match Config::load(c) {
            Ok((config, _)) => config.control.socket_path(),
            Err(e) => {
                eprintln!("warning: not reported to the daemon: {e}");
                return;
            }
        },
        (None, None) => default_socket(),
    };
    let request = Request {
        argv,
        json: false,
        files: BTreeMap::new(),
    };
    let answer = match runtime() {
        Ok(rt) => rt.block_on(call(&socket, &request)),
        Err(e) => Err(e.to_string()),
    };
    match answer {
        Ok(r) if r.code == 0 => eprintln!("reported to the daemon at {}", socket.display()),
        Ok(r) => eprint!(
            "warning: the daemon at {} did not record it: {}",
            socket.display(),
            r.stderr
        ),
        Err(e) => eprintln!("note: not recorded in the security log: {e}"),
    }
}

/// `audit verify --state-dir DIR --checkpoint FILE`: a stopped daemon's log
/// against a checkpoint kept elsewhere.
fn check_stopped(state_dir: &Path, cp: &Path, key: Option<&str>) -> anyhow::Result<ExitCode> {
    let checkpoint = match std::fs::read_to_string(cp)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(t.trim()).map_err(|e| format!("not a checkpoint: {e}")))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}: {e}", cp.display());
            return Ok(ExitCode::from(2));
        }
    };
    if !state_dir.join("store").is_dir() {
        eprintln!("error: {}: no metergate store here", state_dir.display());
        return Ok(ExitCode::from(2));
    }
    match store::check_stopped(state_dir, &checkpoint, key)? {
        found @ store::checkpoint::Finding::BeforeCut { .. } => {
            println!("ok: {found}");
            Ok(ExitCode::SUCCESS)
        }
        store::checkpoint::Finding::Consistent => {
            println!(
                "ok: the log is consistent with the checkpoint at seq {} and its chain verifies",
                checkpoint.seq
            );
            Ok(ExitCode::SUCCESS)
        }
        other => {
            println!("FAILED: {other}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `audit verify --state-dir DIR`: the chain of a stopped daemon's store.
fn verify_stopped(state_dir: &Path, from: Option<u64>, json: bool) -> anyhow::Result<ExitCode> {
    if !state_dir.join("store").is_dir() {
        eprintln!(
            "error: {}: no metergate store here (expected {}/store)",
            state_dir.display(),
            state_dir.display()
        );
        return Ok(ExitCode::from(2));
    }
    let report = store::verify_stopped(state_dir, from)?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "ok": report.ok(), "events": report.events, "first_seq": report.first_seq, "last_seq": report.last_seq,
                "head_hash": report.head_hash,
                "first_bad_seq": report.problem.as_ref().map(|p| p.0),
                "problem": report.problem.as_ref().map(|p| p.1.clone()),
                "cut_at": report.cut.as_ref().map(|c| c.first_kept_seq), "from": report.from,
            })
        );
    }
    match &report.problem {
        None => {
            if !json {
                println!("ok: {}", report.summary());
            }
            Ok(ExitCode::SUCCESS)
        }
        Some((seq, why)) => {
            if !json {
                println!(
                    "FAILED: first bad seq {seq}: {why}\n{} events before it verified",
                    report.events
                );
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// Sends the command's words (and the files it names) to the daemon.
fn admin(socket: Option<PathBuf>, config: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let socket = match (socket, config) {
        (Some(s), _) => s,
        (None, Some(c)) => match load_config(Some(c), "this command") {
            Ok(config) => config.control.socket_path(),
            Err(code) => return Ok(code),
        },
        (None, None) => default_socket(),
    };
    let (argv, files) = match command_words() {
        Ok(w) => w,
        Err(code) => return Ok(code),
    };
    let request = Request { argv, json, files };
    // Streamed answers (export, tail -f) are printed as they arrive.
    let response = match runtime()?.block_on(call_streaming(&socket, &request, print_chunk)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    show(&response.stdout, &response.stderr);
    Ok(ExitCode::from(response.code))
}

/// The answer's words; a reader that went away (`| head`) is no error.
fn show(stdout: &str, stderr: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(stdout.as_bytes());
    let _ = std::io::stderr().lock().write_all(stderr.as_bytes());
}

fn print_chunk(chunk: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(chunk.as_bytes());
    let _ = out.flush();
}

/// `metergate --api URL …`: the same command through a remote gateway's
/// API; the same output and exit code as through its socket.
fn admin_remote(url: &str, cacert: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    use metergate::remote::{Remote, RemoteError};
    let (argv, files) = match command_words() {
        Ok(w) => w,
        Err(code) => return Ok(code),
    };
    let remote = match Remote::new(url, cacert) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    match runtime()?.block_on(remote.call_streaming(&argv, json, &files, print_chunk)) {
        Ok(answer) => {
            show(&answer.stdout, &answer.stderr);
            Ok(ExitCode::from(answer.code))
        }
        // The API refused the call itself (not Administrator): as the
        // socket shows a denial.
        Err(RemoteError::Refused {
            status: 403,
            detail,
        }) => {
            eprintln!("error: DENY: {detail}");
            Ok(ExitCode::from(2))
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// The command's words as typed (less the options of the CLI itself), and
/// the files they name, read here with the caller's rights.
fn command_words() -> Result<(Vec<String>, BTreeMap<String, String>), ExitCode> {
    let mut argv = Vec::new();
    let mut raw = std::env::args_os().skip(1);
    while let Some(arg) = raw.next() {
        let Some(arg) = arg.to_str().map(str::to_string) else {
            eprintln!("error: an argument is not valid UTF-8");
            return Err(ExitCode::from(2));
        };
        match arg.as_str() {
            "--json" => {}
            "--socket" | "--config" | "--api" | "--cacert" => {
                raw.next();
            }
            a if ["--socket=", "--config=", "--api=", "--cacert="]
                .iter()
                .any(|p| a.starts_with(p)) => {}
            _ => argv.push(arg),
        }
    }
    let mut files = BTreeMap::new();
    let mut read = |path: &str| -> Result<(), ExitCode> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                files.insert(path.to_string(), text);
                Ok(())
            }
            Err(e) => {
                eprintln!("error: {path}: {e}");
                Err(ExitCode::from(2))
            }
        }
    };
    for (i, a) in argv.iter().enumerate() {
        let path = match a
            .strip_prefix("--file=")
            .or_else(|| a.strip_prefix("--checkpoint="))
            .or_else(|| a.strip_prefix("--with-policy="))
        {
            Some(p) => Some(p),
            None if a == "--file" || a == "--checkpoint" || a == "--with-policy" => {
                argv.get(i + 1).map(|s| s.as_str())
            }
            None => a.strip_prefix('@'),
        };
        if let Some(p) = path
            && let Err(code) = read(p)
        {
            return Err(code);
        }
    }
    Ok((argv, files))
}
