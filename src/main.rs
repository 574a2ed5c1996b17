//! The `metergate` command line: runs the daemon or the demo, validates
//! configs, and sends admin commands to the running daemon. Exit codes:
//! 0 ok, 1 runtime failure, 2 usage or config error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use metergate::config::Config;
use metergate::doors::admin::protocol::Request;
use metergate::doors::admin::server::{call, default_socket};
use metergate::doors::admin::{AdminCommand, AuditCommand};
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
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
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
    #[command(flatten)]
    Admin(AdminCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Admin(_)) {
        init_logging();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn load_config(path: Option<&Path>, what: &str) -> Result<Config, ExitCode> {
    let Some(path) = path else {
        eprintln!("error: {what} needs --config PATH");
        return Err(ExitCode::from(2));
    };
    match Config::load(path) {
        Ok((config, warnings)) => {
            for w in &warnings {
                eprintln!("warning: {}:{w}", path.display());
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
            let config = match load_config(cli.config.as_deref(), "serve") {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            runtime()?.block_on(daemon::run(config, |r| {
                tracing::info!(socket = %r.socket.display(), "metergate ready");
            }))?;
            Ok(ExitCode::SUCCESS)
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
            if base_port as u32 + 15_521 > 65_535 {
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
            let text = demo::instructions(&demo);
            let rt = runtime()?;
            let _meters = rt.block_on(demo::start_meters(&demo.config, &demo.dir))?;
            rt.block_on(daemon::run(demo.config, |_| {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "{text}\nmetergate demo ready\n");
                let _ = out.flush();
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin(AdminCommand::Audit {
            command: AuditCommand::Verify {
                state_dir: Some(dir),
            },
        }) => verify_stopped(&dir, cli.json),
        Command::Admin(_) => admin(cli.socket, cli.config.as_deref(), cli.json),
    }
}

/// `audit verify --state-dir DIR`: the chain of a stopped daemon's store.
fn verify_stopped(state_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    if !state_dir.join("store").is_dir() {
        eprintln!(
            "error: {}: no metergate store here (expected {}/store)",
            state_dir.display(),
            state_dir.display()
        );
        return Ok(ExitCode::from(2));
    }
    let report = store::verify_stopped(state_dir)?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "ok": report.ok(), "events": report.events, "first_seq": report.first_seq, "last_seq": report.last_seq,
                "head_hash": report.head_hash,
                "first_bad_seq": report.problem.as_ref().map(|p| p.0),
                "problem": report.problem.as_ref().map(|p| p.1.clone()),
            })
        );
    }
    match &report.problem {
        None => {
            if !json {
                println!(
                    "ok: {} events verified (seq {}..{}), head hash {}",
                    report.events,
                    report.first_seq.unwrap_or(0),
                    report.last_seq.unwrap_or(0),
                    report.head_hash
                );
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
    let mut argv = Vec::new();
    let mut raw = std::env::args_os().skip(1);
    while let Some(arg) = raw.next() {
        let Some(arg) = arg.to_str().map(str::to_string) else {
            eprintln!("error: an argument is not valid UTF-8");
            return Ok(ExitCode::from(2));
        };
        match arg.as_str() {
            "--json" => {}
            "--socket" | "--config" => {
                raw.next();
            }
            a if a.starts_with("--socket=") || a.starts_with("--config=") => {}
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
        let path = match a.strip_prefix("--file=") {
            Some(p) => Some(p),
            None if a == "--file" => argv.get(i + 1).map(|s| s.as_str()),
            None => a.strip_prefix('@'),
        };
        if let Some(p) = path
            && let Err(code) = read(p)
        {
            return Ok(code);
        }
    }
    let request = Request { argv, json, files };
    let response = match runtime()?.block_on(call(&socket, &request)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    print!("{}", response.stdout);
    eprint!("{}", response.stderr);
    Ok(ExitCode::from(response.code))
}
