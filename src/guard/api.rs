//! The HTTPS API's two questions to the guard: a bearer token for an access
//! key (OAuth 2.0 client credentials, one login), and whether a presented
//! token may make an API call now. Every answer is the guard's, and every
//! issuance is an event.

use std::net::IpAddr;
use std::time::Duration;

use time::OffsetDateTime;

use super::login::{Attempt, Proof, Verdict};
use super::tokens::Token;
use super::{Action, Guard, Request};
use crate::model::{ADMINISTRATOR, PrincipalId, Status, micros};
use crate::store::secrets::Secret;
use crate::store::{Category, EventDraft, Outcome};

const DOOR: &str = "api";

/// What `POST /oauth/token` comes to.
pub enum Grant {
    Issued {
        token: String,
        expires_in: Duration,
    },
    /// The key id or secret is wrong, or its service user may not log in.
    Rejected,
    /// The hash pool is full: try again (never a wrong secret).
    Busy,
    /// The key got as many tokens as it may this second (the secret was
    /// right: only issued tokens count toward the rate).
    TooMany,
    /// The secret was right, but its service user does not hold the
    /// Administrator policy: a token would be refused at every call.
    NotAdministrator,
}

/// Why a presented token may not make a call.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BearerRefusal {
    #[error("the token is unknown or has expired: ask /oauth/token for a new one")]
    Unknown,
    #[error("the token's access key was deleted or deactivated")]
    KeyGone,
    #[error("the token's service user may no longer log in: {0}")]
    PrincipalRefused(String),
    #[error("API calls need the Administrator policy")]
    NotAdministrator,
}

impl Guard {
    /// Client credentials: the access key `key_id` with `secret`, from
    /// `source`. A token lives `lifetime` at most; `may_issue` is asked
    /// once the secret is right, just before the token is made (the door's
    /// rate per key, counted at the moment of issue).
    pub async fn grant_token(
        &self,
        key_id: &str,
        secret: Secret,
        source: IpAddr,
        lifetime: Duration,
        may_issue: impl FnOnce() -> bool,
    ) -> Grant {
        let attempt = Attempt {
            claimed: key_id,
            source,
            door: DOOR,
            proof: Proof::AccessKey(secret),
            max_sessions: None,
        };
        let who = match self.attempt(attempt).await {
            Verdict::Accepted { who, .. } => who,
            Verdict::Busy => return Grant::Busy,
            // Service users have no second factor: a code is never asked.
            Verdict::Rejected | Verdict::MustChangePassword(_) | Verdict::NeedsCode { .. } => {
                return Grant::Rejected;
            }
        };
        // Only Administrator holders make API calls: no token for others
        // (one would only wait to be ended by the next change).
        if !self
            .store
            .directory()
            .policy_sources(&who)
            .0
            .iter()
            .any(|p| p == ADMINISTRATOR)
        {
            let ev = EventDraft::new("token.refused", Category::Authentication, Outcome::Failure)
                .principal(&who)
                .source(source)
                .door(DOOR)
                .reason(BearerRefusal::NotAdministrator.to_string())
                .detail("key_id", key_id);
            self.record(ev).await;
            return Grant::NotAdministrator;
        }
        if !may_issue() {
            return Grant::TooMany;
        }
        let now = micros(OffsetDateTime::now_utc());
        let expires = now.saturating_add(lifetime.as_micros() as i64);
        let Ok(token) = self.tokens.issue(who.clone(), key_id, now, expires) else {
            return Grant::Busy;
        };
        let ev = EventDraft::new("token.issued", Category::Authentication, Outcome::Success)
            .principal(&who)
            .source(source)
            .door(DOOR)
            .reason(format!(
                "a bearer token for access key {key_id}, valid {} s",
                lifetime.as_secs()
            ))
            .detail("key_id", key_id)
            .detail("expires", crate::model::rfc3339(expires));
        self.record(ev).await;
        Grant::Issued {
            token,
            expires_in: lifetime,
        }
    }

    /// Who a presented token stands for, if it may make an API call now:
    /// live, its access key still there and active, its service user still
    /// allowed to log in (active, before its end date), and holding the
    /// Administrator policy. A token whose access is gone is ended.
    pub fn bearer(
        &self,
        presented: &str,
        source: IpAddr,
        now: OffsetDateTime,
    ) -> Result<Token, BearerRefusal> {
        let token = self
            .tokens
            .check(presented, micros(now))
            .ok_or(BearerRefusal::Unknown)?;
        match self.token_standing(&token, Some(source), now) {
            Ok(()) => Ok(token),
            Err(refusal) => {
                if refusal != BearerRefusal::NotAdministrator {
                    self.tokens.revoke(presented);
                }
                Err(refusal)
            }
        }
    }

    /// Whether the access a token stood for when a stream began is still
    /// there (its expiry or eviction since does not matter: what began
    /// under it may finish while the access stands).
    pub fn token_stands(&self, token: &Token, now: OffsetDateTime) -> bool {
        self.token_standing(token, None, now).is_ok()
    }

    /// Whether the access `token` stands for is still there: its key
    /// present and active, its service user allowed to log in, holding
    /// Administrator.
    fn token_standing(
        &self,
        token: &Token,
        source: Option<IpAddr>,
        now: OffsetDateTime,
    ) -> Result<(), BearerRefusal> {
        let dir = self.store.directory();
        let key_active = match &token.principal {
            PrincipalId::Service(name) => dir.service_users.get(name).is_some_and(|s| {
                s.keys
                    .iter()
                    .any(|k| k.id == token.key_id && k.status == Status::Active)
            }),
            _ => false,
        };
        if !key_active {
            return Err(BearerRefusal::KeyGone);
        }
        let login = Request {
            principal: token.principal.clone(),
            source: source.map(|s| s.to_string()),
            door: DOOR,
            action: Action::Login,
            read_only: false,
            certificate: None,
            second_factor: false,
            recorded: false,
        };
        let d = self.decide(&login, now);
        if !d.allowed {
            return Err(BearerRefusal::PrincipalRefused(d.reason.to_string()));
        }
        if !dir
            .policy_sources(&token.principal)
            .0
            .iter()
            .any(|p| p == ADMINISTRATOR)
        {
            return Err(BearerRefusal::NotAdministrator);
        }
        Ok(())
    }

    /// Ends every token whose access is gone (its key deactivated or
    /// deleted, its service user deactivated, past its end date, or
    /// without Administrator), so that no token comes back to life when
    /// the access does. Run after every change and by the access watcher.
    pub fn sweep_tokens(&self, now: OffsetDateTime) -> usize {
        self.tokens
            .retain(micros(now), |t| self.token_standing(t, None, now).is_ok())
    }

    /// Live bearer tokens.
    pub fn live_tokens(&self) -> usize {
        self.tokens.len()
    }
}
