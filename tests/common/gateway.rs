//! The application core as the control socket drives it: a gateway over a
//! fixture's guard, and one command run as any principal, rendered with the
//! CLI's exit codes and words.
#![allow(dead_code)]

use std::sync::Arc;

use metergate::commands::{Caller, Gateway, Input, ReviewSettings, execute};
use metergate::model::PrincipalId;

use super::{Fixture, NOW};

/// What the control socket answers: exit code, stdout, stderr.
#[derive(Debug)]
pub struct Reply {
    pub code: u8,
    pub stdout: String,
    pub stderr: String,
}

impl Reply {
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

pub fn gateway(f: &Fixture) -> Gateway {
    let day = std::time::Duration::from_secs(86_400);
    Gateway {
        guard: f.guard.clone(),
        sessions: f.guard.sessions().clone(),
        hashes: f.guard.hashes().clone(),
        review: ReviewSettings {
            interval: day * 90,
            unused_after: day * 90,
        },
        crl_changed: None,
        fleet: Arc::new(arc_swap::ArcSwap::from_pointee(Vec::new())),
        passwords: Arc::new(Default::default()),
        consoles: Default::default(),
        mfa_issuer: "metergate".into(),
        mail: None,
        recordings: metergate::recording::Recordings::open(
            f.guard.clone(),
            f.guard.sessions().clone(),
            f.guard.store().state_dir(),
            Default::default(),
            false,
        )
        .expect("the recordings open"),
    }
}

/// Runs `line` (words split on spaces) as `who`.
pub async fn run(ctx: &Gateway, who: &PrincipalId, line: &str) -> Reply {
    let input = Input {
        argv: line.split(' ').map(String::from).collect(),
        ..Default::default()
    };
    run_input(ctx, who, &input).await
}

pub async fn run_input(ctx: &Gateway, who: &PrincipalId, input: &Input) -> Reply {
    let caller = Caller {
        who: who.clone(),
        source: "test".into(),
        addr: None,
        door: "test",
        session: 0,
        factor: Default::default(),
        recorded: false,
    };
    // The command line's own rendering, as the control socket sends it.
    let (answer, _) = execute(ctx, &caller, input, NOW).await.cli();
    Reply {
        code: answer.code,
        stdout: answer.stdout,
        stderr: answer.stderr,
    }
}

/// Runs the words `argv` as `who`.
pub async fn run_argv(ctx: &Gateway, who: &PrincipalId, argv: &[&str]) -> Reply {
    let input = Input {
        argv: argv.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    };
    run_input(ctx, who, &input).await
}
