//! The admin door: the control socket (a Unix socket for the gateway's own
//! console and the CLI) and its framed protocol. Commands run in the core.

pub mod protocol;
pub mod server;
