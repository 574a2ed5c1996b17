//! The shapes of every command of the contract (DESIGN §3), as clap parses
//! them: the CLI parses these and sends the words; the core parses them again
//! with the same definitions, whichever door they came through.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Every admin command. The CLI parses these and sends the words to the
/// daemon, which parses them again with the same definitions.
#[derive(Subcommand, Debug, Clone)]
pub enum AdminCommand {
    /// People: accounts, passwords, keys, roles, policies.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Automated processes (SCADA pollers, integrations) and their access keys.
    ServiceUser {
        #[command(subcommand)]
        command: ServiceUserCommand,
    },
    /// Named sets of users; a group's policies apply to every member.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Named, reusable sets of permissions.
    Role {
        #[command(subcommand)]
        command: RoleCommand,
    },
    /// Permission policies (Administrator and ReadOnly are managed and immutable).
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The vendor's time-bound support access.
    Support {
        #[command(subcommand)]
        command: SupportCommand,
    },
    /// Live sessions on every door.
    Session {
        #[command(subcommand)]
        command: SessionCommand,
    },
    /// The security log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Where identities and policies live: this gateway's store, or
    /// PostgreSQL shared by many gateways.
    Directory {
        #[command(subcommand)]
        command: DirectoryCommand,
    },
    /// Prove your second factor in this session (step up) with a code from
    /// your authenticator app or a recovery code.
    Mfa { code: String },
    /// What the guard would decide for a principal, with the reason.
    Check(CheckArgs),
    /// Every principal allowed a permission (on a meter), and through what.
    WhoCan(WhoCanArgs),
    /// Who can do what where, and what needs attention.
    Review {
        /// Record that a review was done (who, when).
        #[arg(long)]
        ack: bool,
    },
    /// Sent by `metergate cert issue|server|revoke` so the security log
    /// records what the certificate authority did.
    #[command(hide = true)]
    CertificateReport(CertificateReport),
}

#[derive(Args, Debug, Clone)]
pub struct QueryArgs {
    /// From this time: RFC 3339 (2026-11-23T08:00:00Z) or back from now (90s, 15m, 2h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Up to this time, in the same forms.
    #[arg(long)]
    pub until: Option<String>,
    /// Typed id (user:alice, svc:scada-1, support, local:root) or a bare user name.
    #[arg(long)]
    pub principal: Option<String>,
    #[arg(long)]
    pub meter: Option<String>,
    /// An event code from the catalogue (login.deny, write-registers.allow, …).
    #[arg(long)]
    pub code: Option<String>,
    #[arg(long, value_parser = ["allow", "deny", "success", "failure"])]
    pub outcome: Option<String>,
    /// modbus, mbaps, ssh, sftp, control-socket.
    #[arg(long)]
    pub door: Option<String>,
    /// At most this many (the newest), up to 10000.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Only events older than this seq (the next page back).
    #[arg(long)]
    pub before: Option<u64>,
}

#[derive(Args, Debug, Clone)]
pub struct CertificateReport {
    #[arg(value_parser = ["issued", "revoked"])]
    pub what: String,
    #[arg(long)]
    pub serial: String,
    /// `server` or `client`.
    #[arg(long)]
    pub kind: String,
    /// The service user or the server's name.
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub role: Vec<String>,
    #[arg(long)]
    pub not_after: String,
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Typed id (user:alice, svc:scada-1, support) or a bare user name.
    #[arg(long)]
    pub principal: String,
    /// As in the product documents ("Peak Demand Reset") or kebab form.
    #[arg(long)]
    pub permission: Option<String>,
    /// Meter id (needed for meter permissions and Modbus requests).
    #[arg(long)]
    pub meter: Option<String>,
    /// A concrete Modbus request: the function code (3, 4, 6, 8 or 16)…
    #[arg(long)]
    pub function: Option<u8>,
    /// …its first register…
    #[arg(long)]
    pub register: Option<u16>,
    /// …the value written (FC 6: one; FC 16: one per register)…
    #[arg(long = "value")]
    pub values: Vec<u16>,
    /// …or how many registers are read (FC 3 and 4; default 1).
    #[arg(long)]
    pub count: Option<u16>,
    /// A concrete file operation: the path as SFTP shows it (/METER/…).
    #[arg(long)]
    pub path: Option<String>,
    /// With --path: list, stat, read, write, create, rename, remove, mkdir, rmdir or setstat.
    #[arg(long)]
    pub op: Option<String>,
    /// A console session on --meter.
    #[arg(long)]
    pub console: bool,
    /// Decide as if this policy file were attached to the principal (nothing is created).
    #[arg(long)]
    pub with_policy: Option<PathBuf>,
    /// Decide at another time (end dates, support access): a date or RFC 3339.
    #[arg(long)]
    pub as_of: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct WhoCanArgs {
    /// As in the product documents ("Peak Demand Reset") or kebab form.
    #[arg(long)]
    pub permission: String,
    /// Meter id (needed for meter permissions).
    #[arg(long)]
    pub meter: Option<String>,
    /// Decide at another time (end dates, support access): a date or RFC 3339.
    #[arg(long)]
    pub as_of: Option<String>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum UserCommand {
    /// Effective access: every permission allowed or explicitly denied, per
    /// group of meters decided alike, with the statement behind each.
    Permissions {
        name: String,
        #[arg(long)]
        meter: Option<String>,
        /// Decide at another time (end dates, support access): a date or RFC 3339.
        #[arg(long)]
        as_of: Option<String>,
    },
    /// Create a user; prints the temporary password once.
    Add {
        name: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        first: Option<String>,
        #[arg(long)]
        last: Option<String>,
        /// Access ends at 00:00 UTC at the start of this date (YYYY-MM-DD).
        #[arg(long)]
        end_date: Option<String>,
    },
    List,
    Show {
        name: String,
    },
    /// Change email or names.
    Edit {
        name: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        first: Option<String>,
        #[arg(long)]
        last: Option<String>,
    },
    /// Remove the account (its events stay).
    Delete {
        name: String,
    },
    /// Keep the account but let nothing in; ends live sessions.
    Deactivate {
        name: String,
    },
    Activate {
        name: String,
    },
    /// Issue a new temporary password (Administrator only).
    ResendPassword {
        name: String,
    },
    /// Set (YYYY-MM-DD) or clear (`none`) the access end date.
    SetEndDate {
        name: String,
        date: String,
    },
    /// Add an OpenSSH public key (the line itself, or @FILE).
    AddKey {
        name: String,
        key: String,
    },
    /// Remove a public key (the line, its base64 part, or its comment).
    RemoveKey {
        name: String,
        key: String,
    },
    /// Allow a role on meters (adds a statement to the user's inline policy).
    GrantRole {
        name: String,
        role: String,
        #[arg(long, default_value = "*")]
        meters: String,
    },
    /// End a password lockout.
    Unlock {
        name: String,
    },
    /// The person's second factor (TOTP).
    Mfa {
        #[command(subcommand)]
        command: MfaCommand,
    },
    Attach {
        name: String,
        policy: String,
    },
    Detach {
        name: String,
        policy: String,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum MfaCommand {
    /// Start enrolling a TOTP factor: prints the otpauth:// URI and a QR
    /// code once; `confirm` with one code makes it active. Yourself, or
    /// anyone with User Management.
    Enroll { name: String },
    /// Activate the enrolled factor with one code from the app; prints ten
    /// single-use recovery codes once.
    Confirm { name: String, code: String },
    /// Remove the factor (User Management): the person enrols again.
    Reset { name: String },
}

#[derive(Subcommand, Debug, Clone)]
pub enum ServiceUserCommand {
    /// Effective access: every permission allowed or explicitly denied, per
    /// group of meters decided alike, with the statement behind each.
    Permissions {
        name: String,
        #[arg(long)]
        meter: Option<String>,
        /// Decide at another time (end dates, support access): a date or RFC 3339.
        #[arg(long)]
        as_of: Option<String>,
    },
    Add {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    List,
    Show {
        name: String,
    },
    Edit {
        name: String,
        #[arg(long)]
        description: String,
    },
    Delete {
        name: String,
    },
    /// Let nothing in; ends its live sessions and Modbus connections.
    Deactivate {
        name: String,
    },
    Activate {
        name: String,
    },
    /// Access keys (key id + secret; the secret is shown once).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    Attach {
        name: String,
        policy: String,
    },
    Detach {
        name: String,
        policy: String,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum KeyCommand {
    Create { name: String },
    List { name: String },
    Deactivate { name: String, key_id: String },
    Delete { name: String, key_id: String },
}

#[derive(Subcommand, Debug, Clone)]
pub enum GroupCommand {
    /// What the group's policies give its members, per group of meters.
    Permissions {
        name: String,
        #[arg(long)]
        meter: Option<String>,
    },
    Add {
        name: String,
    },
    List,
    Show {
        name: String,
    },
    Rename {
        name: String,
        new_name: String,
    },
    /// Members stay users; they lose the group's policies.
    Delete {
        name: String,
    },
    AddMember {
        name: String,
        user: String,
    },
    RemoveMember {
        name: String,
        user: String,
    },
    Attach {
        name: String,
        policy: String,
    },
    Detach {
        name: String,
        policy: String,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum RoleCommand {
    List,
    Show {
        name: String,
    },
    /// A new role has no permission unless given some.
    Create {
        name: String,
        #[arg(long = "permission")]
        permissions: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    Edit {
        name: String,
        #[arg(long = "add")]
        add: Vec<String>,
        #[arg(long = "remove")]
        remove: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum PolicyCommand {
    List,
    Show {
        name: String,
    },
    /// From a TOML policy file (DESIGN §3).
    Create {
        #[arg(long)]
        file: PathBuf,
    },
    /// Replace a custom policy's description and statements with a policy
    /// file's (which must name it); the version goes up by one.
    Edit {
        name: String,
        #[arg(long)]
        file: PathBuf,
        /// Only if the policy is still at this version (`policy show`).
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Every earlier version: its statements, who made it and when, who
    /// replaced it and when.
    History {
        name: String,
    },
    /// Refused while attached, unless `--detach`: then detached from every
    /// holder in the same change, and the answer names them.
    Delete {
        name: String,
        #[arg(long)]
        detach: bool,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum SupportCommand {
    Show,
    /// Effective access of support staff (within the config's boundary).
    Permissions {
        #[arg(long)]
        meter: Option<String>,
        /// Decide at another time: a date or RFC 3339.
        #[arg(long)]
        as_of: Option<String>,
    },
    /// Grant access until a date (earliest: tomorrow); Administrator by default.
    Grant {
        #[arg(long)]
        until: String,
        #[arg(long = "policy")]
        policies: Vec<String>,
    },
    Update {
        #[arg(long)]
        until: String,
    },
    Attach {
        policy: String,
    },
    Detach {
        policy: String,
    },
    /// End support access now; ends support's live sessions.
    Revoke,
}

#[derive(Subcommand, Debug, Clone)]
pub enum SessionCommand {
    List,
    Kill {
        id: u64,
    },
    /// Session recordings, oldest first (Security Logs Access).
    Recordings {
        /// Only this principal's (`alice`, `user:alice`, `support`).
        #[arg(long)]
        principal: Option<String>,
        /// Only those that reached this meter's console.
        #[arg(long)]
        meter: Option<String>,
        /// Started at or after: RFC 3339 or back from now (90s, 15m, 2h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Started at or before.
        #[arg(long)]
        until: Option<String>,
    },
    /// Replays a recording's output in the terminal, paced as it happened.
    Play {
        id: String,
        /// Times as fast (2 = twice as fast).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// No pause longer than this many seconds.
        #[arg(long)]
        idle_limit: Option<f64>,
    },
    /// The recording as an asciicast v2 file (`asciinema play` reads it).
    Export {
        id: String,
    },
    /// Follows a live session's output, read-only; the watched person is
    /// told. Ctrl-C stops.
    Watch {
        id: String,
    },
    /// Checks a recording against the chunk hashes the audit log holds.
    Verify {
        id: String,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum AuditCommand {
    /// The newest events; with -f, then every new event as it is logged.
    Tail {
        #[arg(short = 'n', long, default_value_t = 20)]
        count: usize,
        /// Keep printing new events until interrupted.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Every event (or those since a time or seq) in a format for other
    /// tools: JSON lines, ArcSight CEF or syslog RFC 5424.
    Export {
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "cef", "rfc5424"])]
        format: String,
        /// From this time: RFC 3339 or back from now (90s, 15m, 2h, 7d).
        #[arg(long, conflicts_with = "from")]
        since: Option<String>,
        /// From this seq.
        #[arg(long)]
        from: Option<u64>,
    },
    /// Capacity, forwarding, the chain check at start, failures.
    Status,
    /// Events matching every filter given: the newest --limit, oldest first.
    Query(QueryArgs),
    /// Walk the hash chain and name the first bad event; with --checkpoint,
    /// also check the log against a checkpoint kept elsewhere.
    Verify {
        /// State directory of a stopped daemon (checked here, not by the daemon).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// A file from `audit checkpoint`, kept off this machine.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The audit-signing public key the checkpoint must be signed with
        /// (from `audit public-key`, recorded elsewhere).
        #[arg(long, requires = "checkpoint")]
        public_key: Option<String>,
        /// Start the walk at this seq, taking its prev_hash as given (a
        /// partial check of recent events; the full walk proves more).
        #[arg(long, conflicts_with = "checkpoint")]
        from: Option<u64>,
        /// Only what was logged since this daemon's last whole walk (which
        /// must still hold at its end); the whole log the first time. Quick
        /// enough for every look at the log; the whole walk proves more.
        #[arg(long, conflicts_with_all = ["checkpoint", "from", "state_dir"])]
        incremental: bool,
    },
    /// Print a checkpoint of the log's head (seq, hash, time) signed with the
    /// audit-signing key; keep it off this machine.
    Checkpoint,
    /// Print the audit-signing key's public half (hex), to check checkpoints.
    PublicKey,
}

/// The words the daemon parses: `metergate <AdminCommand …>`.
#[derive(clap::Parser, Debug)]
#[command(
    name = "metergate",
    no_binary_name = false,
    disable_help_subcommand = true
)]
pub struct AdminLine {
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum DirectoryCommand {
    /// The backend, this gateway's snapshot version and lag, the server's
    /// health and the gateways seen.
    Status,
    /// Everything the directory holds, as JSON on standard output (hashes
    /// as they are; second-factor secrets are left out).
    Export,
    /// Loads an export into this gateway's directory (local or shared).
    Import {
        /// The JSON written by `directory export`.
        #[arg(long)]
        file: String,
        /// Replace a directory that already holds users, groups or
        /// policies (otherwise only one holding the example roles).
        #[arg(long)]
        replace: bool,
    },
}
