//! One SSH channel as a small terminal: what the client typed arrives as
//! [`Input`], output goes back through russh's handle. With a pty it edits
//! lines (cursor keys, history, Ctrl-C/D/U/A/E) and echoes; without one it
//! reads plain lines, so scripts can pipe into `passwd`.

use russh::ChannelId;
use russh::server::Handle;
use tokio::sync::mpsc;

/// Longest line the editor keeps.
const MAX_LINE: usize = 4096;
/// Lines of history a shell keeps.
const HISTORY: usize = 200;

/// What the client sent on the channel.
#[derive(Debug)]
pub enum Input {
    Data(Vec<u8>),
    Eof,
    Resize { cols: u32, rows: u32 },
}

/// The pty the client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pty {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
}

/// What reading a line gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Text(String),
    /// Ctrl-C: the line was dropped.
    Interrupted,
    /// Ctrl-D on an empty line, EOF, or the channel went away.
    End,
}

pub struct Io {
    handle: Handle,
    pub channel: ChannelId,
    input: mpsc::Receiver<Input>,
    pub pty: Option<Pty>,
    /// Bytes received but not read yet.
    pending: std::collections::VecDeque<u8>,
    eof: bool,
    history: Vec<String>,
    /// Where what this channel shows (and, if configured, what is typed)
    /// is recorded.
    recorder: Option<crate::recording::Recorder>,
    /// Output not recorded for now (a secret shown once).
    withholding: std::sync::atomic::AtomicBool,
    /// Input not recorded for now (a password or code being typed).
    secret_input: bool,
}

impl Io {
    pub fn new(
        handle: Handle,
        channel: ChannelId,
        input: mpsc::Receiver<Input>,
        pty: Option<Pty>,
    ) -> Io {
        Io {
            handle,
            channel,
            input,
            pty,
            pending: Default::default(),
            eof: false,
            history: Vec::new(),
            recorder: None,
            withholding: std::sync::atomic::AtomicBool::new(false),
            secret_input: false,
        }
    }

    /// Whether what runs on this channel now is being recorded.
    pub fn recorded(&self) -> bool {
        self.recorder.as_ref().is_some_and(|r| r.healthy())
    }

    /// Keeps the output from here until [`Io::record_again`] out of the
    /// recording, with a note saying why in its place.
    pub async fn withhold(&self, why: &str) {
        if let Some(r) = &self.recorder {
            r.withheld(why).await;
        }
        self.withholding
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn record_again(&self) {
        self.withholding
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    fn recording(&self) -> Option<&crate::recording::Recorder> {
        if self.withholding.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        self.recorder.as_ref()
    }

    /// Records input the client sent (unless a secret is being typed).
    fn typed(&self, d: &[u8]) {
        if let (Some(r), false) = (&self.recorder, self.secret_input) {
            r.input(d);
        }
    }

    /// Records this channel from now on.
    pub fn record(&mut self, recorder: crate::recording::Recorder) {
        self.recorder = Some(recorder);
    }

    pub fn recorder(&self) -> Option<&crate::recording::Recorder> {
        self.recorder.as_ref()
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Text for the client's terminal: with a pty, `\n` becomes `\r\n`.
    fn cooked(&self, text: &str) -> Vec<u8> {
        if self.pty.is_some() {
            text.replace("\r\n", "\n")
                .replace('\n', "\r\n")
                .into_bytes()
        } else {
            text.as_bytes().to_vec()
        }
    }

    /// Writes to the client's standard output; false once it is gone.
    pub async fn out(&self, text: &str) -> bool {
        if text.is_empty() {
            return true;
        }
        self.raw(self.cooked(text)).await
    }

    /// Writes to the client's standard error; with a pty, to the terminal
    /// (as sshd does: the pty has one output).
    pub async fn err(&self, text: &str) -> bool {
        if text.is_empty() {
            return true;
        }
        if self.pty.is_some() {
            return self.out(text).await;
        }
        let bytes = self.cooked(text);
        if let Some(r) = self.recording() {
            r.output(&bytes).await;
        }
        self.handle
            .extended_data(self.channel, 1, bytes)
            .await
            .is_ok()
    }

    /// Bytes for the client's terminal as they are; recorded first.
    pub async fn raw(&self, bytes: Vec<u8>) -> bool {
        if let Some(r) = self.recording() {
            r.output(&bytes).await;
        }
        self.handle.data(self.channel, bytes).await.is_ok()
    }

    /// The next thing the client sent (None once the channel is done).
    pub async fn next(&mut self) -> Option<Input> {
        if !self.pending.is_empty() {
            return Some(Input::Data(self.pending.drain(..).collect()));
        }
        if self.eof {
            return None;
        }
        let i = self.input.recv().await;
        match &i {
            None | Some(Input::Eof) => self.eof = true,
            Some(Input::Resize { cols, rows }) => {
                if let Some(p) = &mut self.pty {
                    p.cols = *cols;
                    p.rows = *rows;
                }
                if let Some(r) = &self.recorder {
                    r.resize(*cols, *rows).await;
                }
            }
            Some(Input::Data(d)) => self.typed(d),
        }
        i
    }

    async fn byte(&mut self) -> Option<u8> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some(b);
            }
            match self.next().await? {
                Input::Data(d) => self.pending.extend(d),
                Input::Eof => return None,
                Input::Resize { .. } => {}
            }
        }
    }

    /// Whether the client pressed Ctrl-C (or left) since the last look,
    /// without waiting; other input stays queued.
    pub fn interrupted(&mut self) -> bool {
        while let Ok(i) = self.input.try_recv() {
            match i {
                Input::Data(d) => {
                    self.typed(&d);
                    self.pending.extend(d)
                }
                Input::Eof => self.eof = true,
                Input::Resize { .. } => {}
            }
        }
        let hit = self.pending.contains(&3);
        if hit {
            self.pending.clear();
        }
        hit
    }

    /// Waits until the client presses Ctrl-C or the channel is gone. The
    /// end of its input is not an interrupt (`ssh HOST audit tail -f <
    /// /dev/null` goes on); a closed channel or connection is.
    pub async fn until_interrupt(&mut self) {
        loop {
            if self.interrupted() {
                return;
            }
            match self.input.recv().await {
                // The client closed the channel or the connection went.
                None => return,
                Some(Input::Data(d)) => {
                    self.typed(&d);
                    if d.contains(&3) {
                        return;
                    }
                }
                Some(Input::Eof) => self.eof = true,
                Some(Input::Resize { cols, rows }) => {
                    if let Some(p) = &mut self.pty {
                        p.cols = cols;
                        p.rows = rows;
                    }
                }
            }
        }
    }

    /// Reads one line. With a pty the line is edited in place (echoed
    /// unless `secret`); without one, bytes are read up to a newline.
    pub async fn read_line(&mut self, prompt: &str, secret: bool) -> Line {
        // A password or code typed here never reaches the recording.
        self.secret_input = secret;
        let line = self.edit_line(prompt, secret).await;
        self.secret_input = false;
        line
    }

    async fn edit_line(&mut self, prompt: &str, secret: bool) -> Line {
        if self.pty.is_none() {
            return self.plain_line().await;
        }
        self.out(prompt).await;
        let mut line: Vec<char> = Vec::new();
        let mut cursor = 0usize;
        // Where in the history Up/Down stand; the line being typed is kept.
        let mut browsing = self.history.len();
        let mut typed: Vec<char> = Vec::new();
        loop {
            let Some(b) = self.byte().await else {
                return Line::End;
            };
            let mut redraw = true;
            match b {
                b'\r' | b'\n' => {
                    // A CR LF pair counts once.
                    if b == b'\r' && self.pending.front() == Some(&b'\n') {
                        self.pending.pop_front();
                    }
                    self.out("\n").await;
                    let text: String = line.into_iter().collect();
                    if !secret && !text.trim().is_empty() && self.history.last() != Some(&text) {
                        if self.history.len() == HISTORY {
                            self.history.remove(0);
                        }
                        self.history.push(text.clone());
                    }
                    return Line::Text(text);
                }
                3 => {
                    self.out("^C\n").await;
                    return Line::Interrupted;
                }
                4 if line.is_empty() => {
                    self.out("\n").await;
                    return Line::End;
                }
                4 => {
                    if cursor < line.len() {
                        line.remove(cursor);
                    }
                }
                0x7f | 0x08 => {
                    if cursor > 0 {
                        cursor -= 1;
                        line.remove(cursor);
                    }
                }
                1 => cursor = 0,
                5 => cursor = line.len(),
                0x15 => {
                    line.drain(..cursor);
                    cursor = 0;
                }
                0x1b => {
                    let seq = self.escape().await;
                    match seq.as_slice() {
                        b"[A" | b"OA" if !secret && browsing > 0 => {
                            if browsing == self.history.len() {
                                typed = line.clone();
                            }
                            browsing -= 1;
                            line = self.history[browsing].chars().collect();
                            cursor = line.len();
                        }
                        b"[B" | b"OB" if !secret && browsing < self.history.len() => {
                            browsing += 1;
                            line = match self.history.get(browsing) {
                                Some(h) => h.chars().collect(),
                                None => typed.clone(),
                            };
                            cursor = line.len();
                        }
                        b"[C" | b"OC" => cursor = (cursor + 1).min(line.len()),
                        b"[D" | b"OD" => cursor = cursor.saturating_sub(1),
                        b"[H" | b"OH" | b"[1~" => cursor = 0,
                        b"[F" | b"OF" | b"[4~" => cursor = line.len(),
                        b"[3~" => {
                            if cursor < line.len() {
                                line.remove(cursor);
                            }
                        }
                        _ => redraw = false,
                    }
                }
                b if b >= 0x20 => {
                    // A UTF-8 sequence is gathered whole before it is shown.
                    let mut bytes = vec![b];
                    let want = match b {
                        0xc0..=0xdf => 1,
                        0xe0..=0xef => 2,
                        0xf0..=0xf7 => 3,
                        _ => 0,
                    };
                    for _ in 0..want {
                        match self.byte().await {
                            Some(c) => bytes.push(c),
                            None => return Line::End,
                        }
                    }
                    if let Ok(s) = std::str::from_utf8(&bytes)
                        && line.len() < MAX_LINE
                    {
                        let at_end = cursor == line.len();
                        for c in s.chars() {
                            line.insert(cursor, c);
                            cursor += 1;
                        }
                        // Typing at the end needs only the echo.
                        if at_end {
                            if !secret {
                                self.raw(bytes).await;
                            }
                            redraw = false;
                        }
                    }
                }
                _ => redraw = false,
            }
            if redraw {
                self.redraw(prompt, &line, cursor, secret).await;
            }
        }
    }

    /// The rest of an escape sequence (CSI or SS3).
    async fn escape(&mut self) -> Vec<u8> {
        let mut seq = Vec::new();
        while seq.len() < 8 {
            let Some(b) = self.byte().await else { break };
            seq.push(b);
            let done = match seq.as_slice() {
                [b'['] | [b'O'] => false,
                [b'O', _] => true,
                [b'[', .., last] => (0x40..=0x7e).contains(last),
                _ => true,
            };
            if done {
                break;
            }
        }
        seq
    }

    async fn redraw(&self, prompt: &str, line: &[char], cursor: usize, secret: bool) {
        let shown: String = if secret {
            String::new()
        } else {
            line.iter().collect()
        };
        let mut out = format!("\r\x1b[K{prompt}{shown}");
        if !secret && cursor < line.len() {
            out.push_str(&format!("\x1b[{}D", line.len() - cursor));
        }
        self.raw(out.into_bytes()).await;
    }

    async fn plain_line(&mut self) -> Line {
        let mut bytes = Vec::new();
        loop {
            match self.byte().await {
                None if bytes.is_empty() => return Line::End,
                None | Some(b'\n') => break,
                Some(b'\r') => {}
                Some(b) if bytes.len() < MAX_LINE => bytes.push(b),
                Some(_) => {}
            }
        }
        Line::Text(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Ends the channel with an exit status.
    pub async fn finish(&self, code: u32) {
        let _ = self.handle.exit_status_request(self.channel, code).await;
        let _ = self.handle.eof(self.channel).await;
        let _ = self.handle.close(self.channel).await;
    }
}
