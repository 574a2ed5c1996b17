//! The `metergate` command line: parses commands and runs them. Exit codes:
//! 0 ok, 1 runtime failure, 2 usage or config error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use metergate::config::Config;
use metergate::store;

#[derive(Parser)]
#[command(
    name = "metergate",
    version,
    about = "A gateway in front of fleets of electricity meters: one guard, one tamper-evident log"
)]
struct Cli {
    /// Config file (also names the control socket).
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
    /// Validate a config file and exit (2 with file, line and key on error).
    CheckConfig,
    /// The security log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain and name the first bad event.
    Verify {
        /// State directory of a stopped daemon.
        #[arg(long)]
        state_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig => {
            let Some(path) = cli.config else {
                eprintln!("error: check-config needs --config PATH");
                return Ok(ExitCode::from(2));
            };
            match Config::load(&path) {
                Ok((config, warnings)) => {
                    for w in &warnings {
                        eprintln!("warning: {}:{w}", path.display());
                    }
                    println!(
                        "ok: {} ({} meters, {} profiles, {} Modbus client entries, {} warnings)",
                        path.display(),
                        config.meters.len(),
                        config.profiles.len(),
                        config.modbus_clients.len(),
                        warnings.len()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Audit {
            command: AuditCommand::Verify { state_dir },
        } => {
            if !state_dir.join("store").is_dir() {
                eprintln!(
                    "error: {}: no metergate store here (expected {}/store)",
                    state_dir.display(),
                    state_dir.display()
                );
                return Ok(ExitCode::from(2));
            }
            let report = store::verify_stopped(&state_dir)?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ok": report.ok(),
                        "events": report.events,
                        "first_seq": report.first_seq,
                        "last_seq": report.last_seq,
                        "head_hash": report.head_hash,
                        "first_bad_seq": report.problem.as_ref().map(|p| p.0),
                        "problem": report.problem.as_ref().map(|p| p.1.clone()),
                    })
                );
            }
            match &report.problem {
                None => {
                    if !cli.json {
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
                    if !cli.json {
                        println!("FAILED: first bad seq {seq}: {why}");
                        println!("{} events before it verified", report.events);
                    }
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}
