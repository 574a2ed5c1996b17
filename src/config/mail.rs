//! `[mail]`: how temporary passwords reach new users — an SMTP relay over
//! TLS, or (the demo, a newcomer's machine) files in a directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::errors::{ConfigError, Key, Source};
use super::interval::Interval;

/// How the relay's connection is protected. There is no plain mode:
/// the messages carry temporary passwords.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MailTls {
    /// STARTTLS on the submission port (587), required: a relay that does
    /// not offer it is refused, never used in clear.
    #[default]
    Starttls,
    /// TLS from the first byte (465).
    Implicit,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMail {
    pub host: Option<String>,
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: MailTls,
    /// PEM file of the CA that signed the relay's certificate (pinned);
    /// without it the system's CA bundle is trusted.
    pub ca: Option<PathBuf>,
    pub username: Option<String>,
    /// A file holding the relay password (0600), never the password itself.
    pub password_file: Option<PathBuf>,
    pub from: Option<String>,
    /// Where people log in, named in the message (the web console's URL).
    pub login_url: Option<String>,
    /// Instead of a relay: write each message as a file here (the demo).
    pub directory: Option<PathBuf>,
    /// Also print the temporary password to the administrator. Off by
    /// default: with mail configured only the user should see it.
    #[serde(default)]
    pub print_temporary_password: bool,
    /// A relay that does not answer within this is a failed send.
    pub timeout: Option<Interval>,
    /// A plain-text template of one's own for the message (its HTML
    /// alternative is the same text); `{{ password }}` must be in it.
    pub template: Option<PathBuf>,
}

/// Where messages go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailTransport {
    Smtp {
        host: String,
        port: u16,
        tls: MailTls,
        ca: Option<PathBuf>,
        username: Option<String>,
        password_file: Option<PathBuf>,
        timeout: Duration,
    },
    Directory(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailConfig {
    pub transport: MailTransport,
    pub from: String,
    pub login_url: String,
    pub print_temporary_password: bool,
    /// The text of `mail.template`, read and checked at load.
    pub template: Option<String>,
}

pub(super) fn mail(
    raw: &Option<RawMail>,
    base: &Path,
    src: &Source,
) -> Result<Option<MailConfig>, ConfigError> {
    let Some(m) = raw else { return Ok(None) };
    let key = |k: &str| Key::new("mail").at(k);
    let abs = |p: &PathBuf| {
        if p.is_relative() {
            base.join(p)
        } else {
            p.clone()
        }
    };
    let transport = match (&m.host, &m.directory) {
        (Some(_), Some(_)) => {
            return Err(src.err(
                &key("directory"),
                "give either host (an SMTP relay) or directory (files), not both",
            ));
        }
        (None, None) => {
            return Err(src.err(
                &key("host"),
                "is missing: give the SMTP relay's host (or directory, to write messages as files)",
            ));
        }
        (None, Some(d)) => MailTransport::Directory(abs(d)),
        (Some(host), None) => {
            if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(src.err(&key("host"), "must be a host name or address"));
            }
            if m.username.is_some() != m.password_file.is_some() {
                return Err(src.err(
                    &key("password_file"),
                    "username and password_file come together (relay authentication)",
                ));
            }
            let timeout = m.timeout.map(|t| t.0).unwrap_or(Duration::from_secs(10));
            if !(1..=120).contains(&timeout.as_secs()) {
                return Err(src.err(&key("timeout"), "must be between 1s and 2m"));
            }
            MailTransport::Smtp {
                host: host.clone(),
                port: m.port.unwrap_or(match m.tls {
                    MailTls::Starttls => 587,
                    MailTls::Implicit => 465,
                }),
                tls: m.tls,
                ca: m.ca.as_ref().map(abs),
                username: m.username.clone(),
                password_file: m.password_file.as_ref().map(abs),
                timeout,
            }
        }
    };
    let from = m.from.clone().ok_or_else(|| {
        src.err(
            &key("from"),
            "is missing: give the sender, e.g. \"metergate <gateway@example.org>\"",
        )
    })?;
    if !crate::mail::is_mailbox(&from) {
        return Err(src.err(
            &key("from"),
            format!("`{from}` is not a mailbox (\"Name <user@example.org>\" or user@example.org)"),
        ));
    }
    let login_url = m.login_url.clone().unwrap_or_default();
    if login_url.chars().any(char::is_control) {
        return Err(src.err(&key("login_url"), "must be one line"));
    }
    let template = match &m.template {
        None => None,
        Some(p) => {
            let path = abs(p);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                src.err(
                    &key("template"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            if !text.contains("{{ password }}") {
                return Err(src.err(
                    &key("template"),
                    format!(
                        "{} has no {{{{ password }}}}: the user would never get the password",
                        path.display()
                    ),
                ));
            }
            Some(text)
        }
    };
    Ok(Some(MailConfig {
        transport,
        from,
        login_url,
        print_temporary_password: m.print_temporary_password,
        template,
    }))
}
