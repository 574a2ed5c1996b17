//! Answers too long or too open-ended for one frame: `audit export` (the
//! whole log, page by page) and `audit tail -f` (new events as they come).
//! The producer writes chunks into a bounded channel; any door relays them
//! (the control socket as frames) and stops the producer by dropping it.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::guard::Guard;
use crate::recording::Watch;
use crate::recording::cast::{Pace, Utf8Carry, shown};
use crate::store::export::{Format, Origin, format};
use crate::store::log::SecurityEvent;

/// Events read per page.
const PAGE: usize = 2000;
/// A chunk is sent once it is about this large.
const CHUNK: usize = 256 * 1024;
/// How often a follower looks for new events.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// What remains to be sent after the first frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Stream {
    /// Events `from..=to`, formatted.
    Export { format: Format, from: u64, to: u64 },
    /// Every event after `after`, as `audit tail` prints them, until the
    /// reader leaves.
    Follow { after: u64, json: bool },
    /// A session recording: its asciicast file as it is, or (`pace`) its
    /// output replayed as it happened.
    Recording {
        path: std::path::PathBuf,
        pace: Option<Pace>,
    },
    /// A live session's output until it ends or the reader leaves.
    Watch(Arc<Watch>),
    /// A long text made at once (`directory export`), sent in chunks.
    Text(Arc<String>),
}

/// Produces the stream's chunks into `tx` until it is done or the reader
/// has gone (`tx` closed). Returns an error text for the last frame.
pub async fn produce(
    guard: Arc<Guard>,
    stream: Stream,
    tx: mpsc::Sender<String>,
) -> Result<(), String> {
    let store = guard.store().clone();
    match stream {
        Stream::Export {
            format: f,
            from,
            to,
        } => {
            let origin = Origin::here(13);
            let mut next = from;
            while next <= to {
                let s = store.clone();
                let page = tokio::task::spawn_blocking(move || s.log().range(next, PAGE))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("reading the log: {e}"))?;
                if page.is_empty() {
                    break;
                }
                let mut chunk = String::new();
                for ev in page.iter().filter(|e| e.seq <= to) {
                    chunk.push_str(&format(f, ev, &origin));
                    chunk.push('\n');
                    if chunk.len() >= CHUNK {
                        tx.send(std::mem::take(&mut chunk))
                            .await
                            .map_err(|_| "the reader left".to_string())?;
                    }
                }
                if !chunk.is_empty() {
                    tx.send(chunk)
                        .await
                        .map_err(|_| "the reader left".to_string())?;
                }
                next = page.last().map(|e| e.seq + 1).unwrap_or(to + 1);
            }
            Ok(())
        }
        Stream::Recording { path, pace: None } => export_recording(&path, &tx).await,
        Stream::Recording {
            path,
            pace: Some(pace),
        } => play(&path, pace, &tx).await,
        Stream::Watch(watch) => follow_live(&watch, &tx).await,
        Stream::Text(text) => {
            let mut rest = text.as_str();
            while !rest.is_empty() {
                let mut end = rest.len().min(CHUNK);
                while !rest.is_char_boundary(end) {
                    end -= 1;
                }
                if tx.send(rest[..end].to_string()).await.is_err() {
                    return Ok(());
                }
                rest = &rest[end..];
            }
            Ok(())
        }
        Stream::Follow { mut after, json } => loop {
            if tx.is_closed() {
                return Ok(());
            }
            let s = store.clone();
            let from = after + 1;
            let page = tokio::task::spawn_blocking(move || s.log().range(from, PAGE))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("reading the log: {e}"))?;
            if let Some(last) = page.last() {
                after = last.seq;
                let text = if json {
                    json_lines(&page)
                } else {
                    event_lines(&page)
                };
                if tx.send(text).await.is_err() {
                    return Ok(());
                }
            } else {
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        },
    }
}

/// Sends a recording's file as it is, in whole lines.
async fn export_recording(path: &std::path::Path, tx: &mpsc::Sender<String>) -> Result<(), String> {
    use tokio::io::AsyncBufReadExt;
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("reading the recording: {e}"))?;
    let mut lines = tokio::io::BufReader::new(file).lines();
    let mut chunk = String::new();
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| format!("reading the recording: {e}"))?
    {
        chunk.push_str(&line);
        chunk.push('\n');
        if chunk.len() >= CHUNK {
            tx.send(std::mem::take(&mut chunk))
                .await
                .map_err(|_| "the reader left".to_string())?;
        }
    }
    if !chunk.is_empty() {
        tx.send(chunk)
            .await
            .map_err(|_| "the reader left".to_string())?;
    }
    Ok(())
}

/// Replays a recording's output with its pauses (scaled by `pace`).
async fn play(path: &std::path::Path, pace: Pace, tx: &mpsc::Sender<String>) -> Result<(), String> {
    use tokio::io::AsyncBufReadExt;
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("reading the recording: {e}"))?;
    let mut lines = tokio::io::BufReader::new(file).lines();
    let mut last = 0.0f64;
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| format!("reading the recording: {e}"))?
    {
        let Some(out) = shown(&line) else { continue };
        tokio::select! {
            _ = tokio::time::sleep(pace.pause(out.time - last)) => {}
            _ = tx.closed() => return Ok(()),
        }
        last = out.time;
        tx.send(out.text)
            .await
            .map_err(|_| "the reader left".to_string())?;
    }
    Ok(())
}

/// Relays a live session's output until it ends or the watcher leaves.
async fn follow_live(watch: &Watch, tx: &mpsc::Sender<String>) -> Result<(), String> {
    let Some(mut feed) = watch.take_feed() else {
        return Err("this watch was already used".into());
    };
    let mut ended = watch.ended();
    let mut text = Utf8Carry::default();
    loop {
        let chunk = tokio::select! {
            biased;
            r = feed.recv() => match r {
                Ok(bytes) => text.push(&bytes),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    format!("\r\n[metergate: {n} outputs skipped: this watcher fell behind]\r\n")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            _ = ended.wait_for(|e| *e) => break,
            _ = tx.closed() => return Ok(()),
        };
        if !chunk.is_empty() && tx.send(chunk).await.is_err() {
            return Ok(());
        }
    }
    let _ = tx
        .send("\r\n[metergate: the watched session ended]\r\n".into())
        .await;
    Ok(())
}

/// One JSON object per line, as `--json` prints events.
pub fn json_lines(events: &[SecurityEvent]) -> String {
    let mut out = String::new();
    for e in events {
        out += &serde_json::to_string(e).unwrap_or_default();
        out.push('\n');
    }
    out
}

/// Text from the outside as one line shows it: control characters (a
/// newline that would forge a line, an escape that would drive the
/// reader's terminal) escaped.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

/// One line per event, as `audit tail` and `audit query` print them.
pub fn event_lines(events: &[SecurityEvent]) -> String {
    let mut out = String::new();
    for e in events {
        let _ = writeln!(
            out,
            "{} {} {} {:?} {} {}{}{}",
            e.seq,
            crate::model::rfc3339(e.time),
            e.code,
            e.outcome,
            one_line(e.principal.as_deref().unwrap_or("-")),
            one_line(e.action.as_deref().unwrap_or("-")),
            e.meter
                .as_ref()
                .map(|m| format!(" meter={}", one_line(m)))
                .unwrap_or_default(),
            e.reason
                .as_ref()
                .map(|r| format!(": {}", one_line(r)))
                .unwrap_or_default(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_of_the_log_cannot_be_forged_by_a_name_with_a_newline() {
        assert_eq!(one_line("plain"), "plain");
        assert_eq!(
            one_line("x\n1 2026-01-01 admin.change\u{1b}[2J"),
            "x\\n1 2026-01-01 admin.change\\u{1b}[2J"
        );
    }
}
