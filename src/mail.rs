//! Mail: the messages that carry a new user's (or a re-issued) temporary
//! password, sent through an SMTP relay over TLS (lettre, rustls with ring)
//! or written as `.eml` files (the demo). lettre stays behind this module.

use std::path::Path;

use askama::Template;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{MailConfig, MailTls, MailTransport};
use crate::store::secrets::Secret;

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("{0}")]
    Setup(String),
    #[error("`{0}` is not an email address mail can be sent to")]
    Address(String),
    /// What the relay or the file system said; never the message.
    #[error("{0}")]
    Send(String),
}

/// Whether `text` is a mailbox lettre can send from or to.
pub fn is_mailbox(text: &str) -> bool {
    text.parse::<Mailbox>().is_ok()
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Directory(AsyncFileTransport<Tokio1Executor>),
}

/// Sends the password messages; one per gateway, rebuilt on reload.
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    login_url: String,
    /// `mail.template`: the operator's own text.
    template: Option<String>,
    /// Where messages go, as messages and events name it.
    pub destination: String,
    pub print_temporary_password: bool,
}

/// Why a password message is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Occasion {
    /// `user add`: the account was created.
    Welcome,
    /// `user resend-password`: a new temporary password.
    Resend,
}

/// Who gets the message.
pub struct Recipient<'a> {
    pub user: &'a str,
    pub email: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
}

#[derive(Template)]
#[template(path = "mail/password.txt")]
struct Text<'a> {
    welcome: bool,
    greeting: &'a str,
    user: &'a str,
    password: &'a str,
    expires: &'a str,
    login_url: &'a str,
}

/// An operator's own text as the HTML alternative (escaped).
#[derive(Template)]
#[template(path = "mail/custom.html")]
struct CustomHtml<'a> {
    subject: &'a str,
    text: &'a str,
}

#[derive(Template)]
#[template(path = "mail/password.html")]
struct Html<'a> {
    subject: &'a str,
    welcome: bool,
    greeting: &'a str,
    user: &'a str,
    password: &'a str,
    expires: &'a str,
    login_url: &'a str,
}

impl Mailer {
    /// Reads the relay password file and the pinned CA; each problem names
    /// its file.
    pub fn new(c: &MailConfig) -> Result<Mailer, MailError> {
        let from: Mailbox = c
            .from
            .parse()
            .map_err(|_| MailError::Address(c.from.clone()))?;
        let (transport, destination) = match &c.transport {
            MailTransport::Directory(dir) => {
                // The messages carry temporary passwords: the gateway's alone.
                use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
                let setup = |e: std::io::Error| {
                    MailError::Setup(format!("mail.directory {}: {e}", dir.display()))
                };
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(setup)?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(setup)?;
                (
                    Transport::Directory(AsyncFileTransport::new(dir)),
                    format!("the directory {}", dir.display()),
                )
            }
            MailTransport::Smtp {
                host,
                port,
                tls,
                ca,
                username,
                password_file,
                timeout,
            } => {
                let mut params = TlsParameters::builder(host.clone());
                if let Some(ca) = ca {
                    let pem = std::fs::read(ca)
                        .map_err(|e| MailError::Setup(format!("mail.ca {}: {e}", ca.display())))?;
                    let cert = Certificate::from_pem(&pem)
                        .map_err(|e| MailError::Setup(format!("mail.ca {}: {e}", ca.display())))?;
                    // Pinned: only this CA vouches for the relay.
                    params = params
                        .certificate_store(CertificateStore::None)
                        .add_root_certificate(cert);
                }
                let params = params
                    .build_rustls()
                    .map_err(|e| MailError::Setup(format!("mail TLS: {e}")))?;
                let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                    .port(*port)
                    .timeout(Some(*timeout))
                    .tls(match tls {
                        MailTls::Starttls => Tls::Required(params),
                        MailTls::Implicit => Tls::Wrapper(params),
                    });
                if let (Some(user), Some(path)) = (username, password_file) {
                    b = b.credentials(Credentials::new(user.clone(), read_secret(path)?));
                }
                (
                    Transport::Smtp(b.build()),
                    format!("the relay {host}:{port}"),
                )
            }
        };
        Ok(Mailer {
            transport,
            from,
            login_url: c.login_url.clone(),
            template: c.template.clone(),
            destination,
            print_temporary_password: c.print_temporary_password,
        })
    }

    /// Sends the temporary password to the user; Ok once the relay
    /// accepted it (or the file is written).
    pub async fn send_password(
        &self,
        occasion: Occasion,
        to: &Recipient<'_>,
        password: &Secret,
        expires: &str,
    ) -> Result<(), MailError> {
        let welcome = occasion == Occasion::Welcome;
        let subject = if welcome {
            format!("Your metergate account {}", to.user)
        } else {
            format!("A new temporary password for {}", to.user)
        };
        let full = format!("{} {}", to.first_name, to.last_name);
        let greeting = match full.trim() {
            "" => to.user,
            name => name,
        };
        if let Some(own) = &self.template {
            // The operator's text, its placeholders filled in.
            let text = fill(
                own,
                &[
                    ("{{ occasion }}", if welcome { "welcome" } else { "resend" }),
                    ("{{ greeting }}", greeting),
                    ("{{ user }}", to.user),
                    ("{{ expires }}", expires),
                    ("{{ login_url }}", &self.login_url),
                    ("{{ password }}", password.expose()),
                ],
            );
            let html = CustomHtml {
                subject: &subject,
                text: &text,
            }
            .render()
            .map_err(|e| MailError::Send(format!("the message template: {e}")))?;
            return self.send(to, full.trim(), subject, text, html).await;
        }
        let text = Text {
            welcome,
            greeting,
            user: to.user,
            password: password.expose(),
            expires,
            login_url: &self.login_url,
        }
        .render()
        .map_err(|e| MailError::Send(format!("the message template: {e}")))?;
        let html = Html {
            subject: &subject,
            welcome,
            greeting,
            user: to.user,
            password: password.expose(),
            expires,
            login_url: &self.login_url,
        }
        .render()
        .map_err(|e| MailError::Send(format!("the message template: {e}")))?;
        self.send(to, full.trim(), subject, text, html).await
    }

    async fn send(
        &self,
        to: &Recipient<'_>,
        full: &str,
        subject: String,
        text: String,
        html: String,
    ) -> Result<(), MailError> {
        let address = to
            .email
            .parse()
            .map_err(|_| MailError::Address(to.email.to_string()))?;
        let name = (!full.is_empty()).then(|| full.to_string());
        let message = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(name, address))
            .subject(subject)
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| MailError::Send(format!("the message: {e}")))?;
        match &self.transport {
            Transport::Smtp(t) => t
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| MailError::Send(format!("{}: {e}", self.destination))),
            Transport::Directory(t) => t
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| MailError::Send(format!("{}: {e}", self.destination))),
        }
    }
}

/// Fills `template`'s placeholders in one pass: what is put in is never
/// read again, so a name that reads `{{ password }}` stays that text.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(at) = rest.find("{{ ") {
        out.push_str(&rest[..at]);
        let here = &rest[at..];
        match values.iter().find(|(k, _)| here.starts_with(k)) {
            Some((k, v)) => {
                out.push_str(v);
                rest = &here[k.len()..];
            }
            None => {
                out.push_str("{{ ");
                rest = &here[3..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The relay password: the file's first line; the file must be private
/// (it opens the relay as the gateway).
fn read_secret(path: &Path) -> Result<String, MailError> {
    crate::store::secrets::read_password_file(path)
        .map_err(|e| MailError::Setup(format!("mail.password_file {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::fill;

    #[test]
    fn placeholders_are_filled_once_and_what_is_put_in_is_not_read_again() {
        let values = [
            ("{{ greeting }}", "{{ password }} at evil.example"),
            ("{{ password }}", "s3cret"),
        ];
        // (template) → the text
        for (template, want) in [
            (
                "Hi {{ greeting }}: {{ password }}",
                "Hi {{ password }} at evil.example: s3cret",
            ),
            ("{{ unknown }} {{ password }}", "{{ unknown }} s3cret"),
            ("no placeholders", "no placeholders"),
            ("{{ ", "{{ "),
        ] {
            assert_eq!(fill(template, &values), want, "{template}");
        }
    }
}
