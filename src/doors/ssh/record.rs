//! Starts the recording of a shell or exec channel, and shows the recorded
//! person the notices meant for them (someone started or stopped watching).

use super::terminal::Io;
use crate::commands::{Caller, Gateway};
use crate::recording::{Started, Subject};

/// Starts recording `io` (a `shell` or `exec` channel). False when the
/// session must not go on: it cannot be recorded and `fail-closed` says
/// so (the client was told why).
pub async fn begin(gw: &Gateway, caller: &mut Caller, io: &mut Io, kind: &'static str) -> bool {
    let pty = io.pty.clone();
    let principal = caller.who.to_string();
    let subject = Subject {
        principal: &principal,
        source: &caller.source,
        session: caller.session,
        kind,
        term: pty.as_ref().map(|p| (p.term.as_str(), p.cols, p.rows)),
    };
    match gw.recordings.start(subject).await {
        Started::Recording(mut recorder) => {
            if let Some(mut notices) = recorder.take_notices() {
                let (handle, channel) = (io.handle().clone(), io.channel);
                tokio::spawn(async move {
                    while let Some(text) = notices.recv().await {
                        if handle.data(channel, text.into_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
            io.record(recorder);
            caller.recorded = true;
            true
        }
        Started::Off | Started::Unrecorded(_) => true,
        Started::Refused(why) => {
            io.err(&format!("error: {why}\n")).await;
            false
        }
    }
}
