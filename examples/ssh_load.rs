//! SSH load generator for the benchmark against OpenSSH's sshd
//! (scripts/bench-ssh.py runs it): the same russh client drives both servers.
//!
//!   ssh_load logins PORT USER KEY COUNT CONCURRENCY COMMAND
//!     COUNT × (connect, ed25519 key login, exec COMMAND, wait for its exit);
//!     prints {"rate":…, "median_ms":…, "p90_ms":…, "login_median_ms":…,
//!     "errors":…} (login: key exchange and key authentication alone)
//!   ssh_load mfa-logins PORT - KEY USERS_FILE
//!     one login after another (key, then the TOTP code by keyboard-
//!     interactive when the line has a secret), each followed by an exec of
//!     `help`; USERS_FILE lines are `USER SECRET` or `USER -`; prints
//!     {"login_median_ms":…, "median_ms":…, "errors":…}. The code is the
//!     next step's (the confirmation used this one; each counts once).
//!   ssh_load console PORT USER KEY METER BYTES ECHOES TYPICAL
//!     one interactive session (pty 80x24) running `connect METER`: ECHOES
//!     keystrokes, each timed from send to its echo (a character, then
//!     Backspace); `cat BYTES` through the console, timed to its prompt;
//!     TYPICAL commands typed key by key (`status`). Prints {"echo_p50_ms",
//!     "echo_p99_ms", "cat_mib_s", "cat_bytes", "typical"}
//!   ssh_load hold PORT USER KEY SESSIONS SECONDS
//!     opens SESSIONS interactive sessions (pty + shell), prints "held N",
//!     keeps them SECONDS, then leaves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::ChannelMsg;
use russh::client::{self, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};

struct Trusting;

impl client::Handler for Trusting {
    type Error = russh::Error;

    // A benchmark on loopback against servers this script started.
    async fn check_server_key(&mut self, _: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

async fn login(port: u16, user: &str, key: &Arc<PrivateKey>) -> anyhow::Result<Handle<Trusting>> {
    // No Nagle: both servers see requests as soon as they are written.
    let config = Arc::new(client::Config {
        nodelay: true,
        ..Default::default()
    });
    let mut h = client::connect(config, ("127.0.0.1", port), Trusting).await?;
    let auth = h
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), None))
        .await?;
    anyhow::ensure!(auth.success(), "the key was refused");
    Ok(h)
}

/// A login with the key, then the code when the server asks for one.
async fn login_with_code(
    port: u16,
    user: &str,
    key: &Arc<PrivateKey>,
    secret: Option<&str>,
) -> anyhow::Result<Handle<Trusting>> {
    let config = Arc::new(client::Config {
        nodelay: true,
        ..Default::default()
    });
    let mut h = client::connect(config, ("127.0.0.1", port), Trusting).await?;
    let auth = h
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), None))
        .await?;
    if auth.success() {
        return Ok(h);
    }
    let secret = secret.ok_or_else(|| anyhow::anyhow!("the key was refused"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let code = metergate::guard::mfa::code_at(secret, now + 30)
        .ok_or_else(|| anyhow::anyhow!("a bad secret"))?;
    use russh::client::KeyboardInteractiveAuthResponse as K;
    let mut reply = h
        .authenticate_keyboard_interactive_start(user, None)
        .await?;
    for _ in 0..3 {
        reply = match reply {
            K::Success => return Ok(h),
            K::InfoRequest { prompts, .. } => {
                h.authenticate_keyboard_interactive_respond(vec![code.clone(); prompts.len()])
                    .await?
            }
            K::Failure { .. } => anyhow::bail!("the code was refused"),
        };
    }
    anyhow::bail!("too many rounds")
}

/// One round trip; returns how long the login alone took (key exchange and
/// key authentication).
async fn one(
    port: u16,
    user: &str,
    key: &Arc<PrivateKey>,
    command: &str,
) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let h = login(port, user, key).await?;
    let logged_in = t0.elapsed();
    let mut ch = h.channel_open_session().await?;
    ch.exec(true, command).await?;
    let mut status = None;
    while let Some(msg) = ch.wait().await {
        match msg {
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    anyhow::ensure!(status == Some(0), "exit status {status:?}");
    h.disconnect(russh::Disconnect::ByApplication, "", "en")
        .await?;
    Ok(logged_in)
}

/// Reads the channel until `until` is in what came since the start;
/// returns the bytes read.
async fn read_until(ch: &mut russh::Channel<client::Msg>, until: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut got = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(60), ch.wait())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the channel closed"))?;
        if let ChannelMsg::Data { data } = msg {
            got.extend_from_slice(&data);
            let tail = got.len().saturating_sub(until.len() + data.len());
            if got[tail..].windows(until.len()).any(|w| w == until) {
                return Ok(got);
            }
        }
    }
}

async fn console(
    port: u16,
    user: &str,
    key: &Arc<PrivateKey>,
    meter: &str,
    bytes: usize,
    echoes: usize,
    typical: usize,
) -> anyhow::Result<()> {
    let h = login(port, user, key).await?;
    let mut ch = h.channel_open_session().await?;
    ch.request_pty(true, "xterm", 80, 24, 0, 0, &[]).await?;
    ch.exec(true, format!("connect {meter}")).await?;
    let prompt = format!("{meter}:");
    read_until(&mut ch, b"> ").await?;
    // Echo: a character, then Backspace; each timed to its echo.
    let mut times = Vec::with_capacity(echoes * 2);
    for _ in 0..echoes {
        for (key, echo) in [(&b"x"[..], &b"x"[..]), (&b"\x7f"[..], &b"\x08 \x08"[..])] {
            let t0 = Instant::now();
            ch.data(key).await?;
            read_until(&mut ch, echo).await?;
            times.push(t0.elapsed());
        }
    }
    times.sort();
    let q = |p: f64| {
        times
            .get(((times.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    // Throughput: a large `cat` to its prompt.
    let mut rate = 0.0;
    let mut got = 0;
    if bytes > 0 {
        let t0 = Instant::now();
        ch.data(format!("cat {bytes}\r").as_bytes()).await?;
        let out = read_until(&mut ch, format!("\n{prompt}").as_bytes()).await?;
        got = out.len();
        rate = got as f64 / t0.elapsed().as_secs_f64() / (1024.0 * 1024.0);
    }
    // A typical interactive use: commands typed key by key.
    for _ in 0..typical {
        for b in b"status" {
            ch.data(&[*b][..]).await?;
            read_until(&mut ch, &[*b]).await?;
        }
        ch.data(&b"\r"[..]).await?;
        read_until(&mut ch, format!("\n{prompt}").as_bytes()).await?;
    }
    ch.data(&b"exit\r"[..]).await?;
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = ch.wait().await {
            if let ChannelMsg::Close = msg {
                break;
            }
        }
    })
    .await;
    println!(
        "{{\"echo_p50_ms\":{:.3},\"echo_p99_ms\":{:.3},\"cat_mib_s\":{rate:.1},\"cat_bytes\":{got},\"typical\":{typical}}}",
        q(0.5),
        q(0.99)
    );
    h.disconnect(russh::Disconnect::ByApplication, "", "en")
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: ssh_load logins PORT USER KEY COUNT CONCURRENCY COMMAND | mfa-logins PORT - KEY USERS_FILE | console PORT USER KEY METER BYTES ECHOES TYPICAL | hold PORT USER KEY SESSIONS SECONDS";
    anyhow::ensure!(args.len() >= 6, "{usage}");
    let port: u16 = args[2].parse()?;
    let user = args[3].clone();
    let key = Arc::new(russh::keys::load_secret_key(&args[4], None)?);
    match args[1].as_str() {
        "logins" => {
            anyhow::ensure!(args.len() == 8, "{usage}");
            let count: usize = args[5].parse()?;
            let concurrency: usize = args[6].parse::<usize>()?.max(1);
            let command = args[7].clone();
            let started = Instant::now();
            let mut tasks = Vec::new();
            for t in 0..concurrency {
                let (user, key, command) = (user.clone(), key.clone(), command.clone());
                let n = count / concurrency + usize::from(t < count % concurrency);
                tasks.push(tokio::spawn(async move {
                    let mut times = Vec::new();
                    let mut errors = 0;
                    for _ in 0..n {
                        let t0 = Instant::now();
                        match one(port, &user, &key, &command).await {
                            Ok(login) => times.push((t0.elapsed(), login)),
                            Err(e) => {
                                errors += 1;
                                eprintln!("{e}");
                            }
                        }
                    }
                    (times, errors)
                }));
            }
            let mut times = Vec::new();
            let mut errors = 0;
            for t in tasks {
                let (mut x, e) = t.await?;
                times.append(&mut x);
                errors += e;
            }
            let wall = started.elapsed().as_secs_f64();
            let pick = |mut xs: Vec<Duration>, q: f64| {
                xs.sort();
                xs.get(((xs.len() as f64 - 1.0) * q).round() as usize)
                    .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
            };
            let whole: Vec<Duration> = times.iter().map(|t| t.0).collect();
            let login: Vec<Duration> = times.iter().map(|t| t.1).collect();
            println!(
                "{{\"rate\":{:.1},\"median_ms\":{:.2},\"p90_ms\":{:.2},\"login_median_ms\":{:.2},\"errors\":{errors}}}",
                times.len() as f64 / wall,
                pick(whole.clone(), 0.5),
                pick(whole, 0.9),
                pick(login, 0.5)
            );
        }
        "mfa-logins" => {
            let lines = std::fs::read_to_string(&args[5])?;
            let (mut logins, mut whole, mut errors) = (Vec::new(), Vec::new(), 0);
            for line in lines.lines() {
                let mut w = line.split_whitespace();
                let (Some(user), Some(secret)) = (w.next(), w.next()) else {
                    continue;
                };
                let secret = (secret != "-").then_some(secret);
                let t0 = Instant::now();
                let h = match login_with_code(port, user, &key, secret).await {
                    Ok(h) => h,
                    Err(e) => {
                        errors += 1;
                        eprintln!("{user}: {e}");
                        continue;
                    }
                };
                logins.push(t0.elapsed());
                let mut ch = h.channel_open_session().await?;
                ch.exec(true, "help").await?;
                while let Some(msg) = ch.wait().await {
                    if let ChannelMsg::Close = msg {
                        break;
                    }
                }
                whole.push(t0.elapsed());
                h.disconnect(russh::Disconnect::ByApplication, "", "en")
                    .await?;
            }
            let median = |mut xs: Vec<Duration>| {
                xs.sort();
                xs.get(xs.len() / 2)
                    .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
            };
            println!(
                "{{\"login_median_ms\":{:.2},\"median_ms\":{:.2},\"errors\":{errors}}}",
                median(logins),
                median(whole)
            );
        }
        "console" => {
            anyhow::ensure!(args.len() == 9, "{usage}");
            let (meter, bytes, echoes, typical) = (
                args[5].clone(),
                args[6].parse::<usize>()?,
                args[7].parse::<usize>()?,
                args[8].parse::<usize>()?,
            );
            console(port, &user, &key, &meter, bytes, echoes, typical).await?;
        }
        "hold" => {
            anyhow::ensure!(args.len() == 7, "{usage}");
            let sessions: usize = args[5].parse()?;
            let seconds: u64 = args[6].parse()?;
            let mut held = Vec::new();
            for _ in 0..sessions {
                let h = login(port, &user, &key).await?;
                let ch = h.channel_open_session().await?;
                ch.request_pty(true, "xterm", 80, 24, 0, 0, &[]).await?;
                ch.request_shell(true).await?;
                held.push((h, ch));
            }
            println!("held {}", held.len());
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            drop(held);
        }
        _ => anyhow::bail!("{usage}"),
    }
    Ok(())
}
