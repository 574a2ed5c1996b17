//! asciicast v2, the format Debian's `asciinema play`/`cat` and the web
//! player read: a JSON header line, then one `[time, type, data]` line per
//! output, input or resize. Also the reading side: playback pacing.

use serde::Serialize;
use serde_json::Value;

/// The header line (asciicast v2).
#[derive(Serialize)]
struct Header<'a> {
    version: u8,
    width: u32,
    height: u32,
    timestamp: i64,
    title: &'a str,
    env: Env<'a>,
}

#[derive(Serialize)]
struct Env<'a> {
    #[serde(rename = "TERM")]
    term: &'a str,
    #[serde(rename = "SHELL")]
    shell: &'a str,
}

/// The header line, newline included.
pub fn header(width: u32, height: u32, started_secs: i64, term: &str, title: &str) -> Vec<u8> {
    let h = Header {
        version: 2,
        width,
        height,
        timestamp: started_secs,
        title,
        env: Env {
            term,
            shell: "metergate",
        },
    };
    let mut line = serde_json::to_vec(&h).unwrap_or_default();
    line.push(b'\n');
    line
}

/// One event line, newline included: `[1.234567, "o", "text"]`.
pub fn event(time: f64, kind: &str, data: &str) -> Vec<u8> {
    let mut line = Vec::new();
    event_into(&mut line, time, kind, data);
    line
}

/// Appends one event line to `out`, JSON-escaping `data` straight into it.
/// The escaping is json-escape-simd's (sonic-rs' kernel): serde_json's
/// byte-at-a-time loop was the largest part of what recording a busy
/// console cost. Its lines are checked to read back with serde_json (unit
/// test and the `cast_line` fuzz target).
pub fn event_into(out: &mut Vec<u8>, time: f64, kind: &str, data: &str) {
    use std::io::Write;
    let _ = write!(out, "[{time:.6}, \"{kind}\", ");
    json_escape_simd::escape_into(data, out);
    out.extend_from_slice(b"]\n");
}

/// Turns a byte stream into text without splitting a UTF-8 sequence: an
/// incomplete one at the end waits for the next bytes (as asciinema's own
/// recorder decodes); bytes that are never valid become U+FFFD.
#[derive(Default)]
pub struct Utf8Carry {
    carry: Vec<u8>,
}

impl Utf8Carry {
    /// As [`Utf8Carry::push`], taking the bytes (valid UTF-8 is not copied).
    pub fn take(&mut self, bytes: Vec<u8>) -> String {
        let mut all = if self.carry.is_empty() {
            bytes
        } else {
            let mut a = std::mem::take(&mut self.carry);
            a.extend_from_slice(&bytes);
            a
        };
        let keep = incomplete_tail(&all);
        self.carry = all.split_off(all.len() - keep);
        match String::from_utf8(all) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    pub fn push(&mut self, bytes: &[u8]) -> String {
        let mut all = std::mem::take(&mut self.carry);
        all.extend_from_slice(bytes);
        let keep = incomplete_tail(&all);
        self.carry = all.split_off(all.len() - keep);
        String::from_utf8_lossy(&all).into_owned()
    }
}

/// How many bytes at the end of `b` start a UTF-8 sequence that is not
/// complete yet (0 to 3).
fn incomplete_tail(b: &[u8]) -> usize {
    for back in 1..=3.min(b.len()) {
        let c = b[b.len() - back];
        if c & 0xc0 == 0x80 {
            continue;
        }
        let need = match c {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => 1,
        };
        return if need > back { back } else { 0 };
    }
    0
}

/// An output event read back: when, and what was shown.
#[derive(Debug, PartialEq)]
pub struct Shown {
    pub time: f64,
    pub text: String,
}

/// The output events of one asciicast line (None for the header, input,
/// resizes, markers and lines that do not parse).
pub fn shown(line: &str) -> Option<Shown> {
    let v: Value = serde_json::from_str(line).ok()?;
    let a = v.as_array()?;
    if a.get(1)?.as_str()? != "o" {
        return None;
    }
    Some(Shown {
        time: a.first()?.as_f64()?,
        text: a.get(2)?.as_str()?.to_string(),
    })
}

/// How a recording is played back: `speed` times as fast, with no pause
/// longer than `idle_limit` seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pace {
    pub speed: f64,
    pub idle_limit: Option<f64>,
}

impl Pace {
    /// The pause before an event `gap` seconds after the one before.
    pub fn pause(&self, gap: f64) -> std::time::Duration {
        let gap = gap.max(0.0);
        let gap = self.idle_limit.map_or(gap, |l| gap.min(l));
        std::time::Duration::from_secs_f64((gap / self.speed).min(3600.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_utf8_sequence_waits_for_its_end() {
        let mut c = Utf8Carry::default();
        let euro = "€".as_bytes();
        assert_eq!(c.push(&[b'a', euro[0]]), "a");
        assert_eq!(c.push(&euro[1..]), "€");
        assert_eq!(c.push(&[0xff, b'b']), "\u{fffd}b");
    }

    #[test]
    fn event_lines_read_back() {
        let line = event(1.5, "o", "hi\x1b[0m\r\n");
        let text = std::str::from_utf8(&line).unwrap();
        assert!(text.ends_with('\n'));
        let s = shown(text.trim_end()).unwrap();
        assert_eq!(s.time, 1.5);
        assert_eq!(s.text, "hi\x1b[0m\r\n");
        assert_eq!(shown("[1.0, \"i\", \"x\"]"), None);
    }

    #[test]
    fn every_character_reads_back_as_it_was_shown() {
        // Each ASCII byte (controls, quote, backslash, DEL), multi-byte
        // characters, and runs long enough for the SIMD kernel's blocks.
        let mut text: String = (0u8..=0x7f).map(char::from).collect();
        text.push_str("€ü😀\u{2028}\u{fffd}");
        let long = text.repeat(40);
        for data in [text.as_str(), long.as_str(), "", "\"\\", "plain"] {
            let line = event(0.5, "o", data);
            let line = std::str::from_utf8(&line).unwrap();
            assert_eq!(shown(line.trim_end()).unwrap().text, data);
            // A line is one line: every control byte was escaped.
            assert!(!line.trim_end().bytes().any(|b| b < 0x20));
        }
    }

    #[test]
    fn pauses_follow_speed_and_idle_limit() {
        let p = Pace {
            speed: 2.0,
            idle_limit: Some(1.0),
        };
        assert_eq!(p.pause(10.0), std::time::Duration::from_millis(500));
        assert_eq!(p.pause(0.5), std::time::Duration::from_millis(250));
    }
}
