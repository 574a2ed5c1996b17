//! `certificate-report`: records what the certificate authority did.

use super::*;

/// Records what the certificate authority did; a revocation also ends the
/// certificate's live connections and reloads the CRL at once.
pub(super) async fn certificate_report(
    ctx: &Gateway,
    caller: &Caller,
    r: &CertificateReport,
) -> Result<Done, CommandError> {
    let serial = crate::pki::normalize_serial(&r.serial)
        .ok_or_else(|| CommandError::Refused(format!("`{}` is not a serial number", r.serial)))?;
    let roles = if r.role.is_empty() {
        "no role".to_string()
    } else {
        format!("role {}", r.role.join(", "))
    };
    let (code, reason) = if r.what == "revoked" {
        let ended = ctx
            .sessions
            .kill_credential(&format!("cert:{serial}"), "certificate revoked");
        if let Some(n) = &ctx.crl_changed {
            n.notify_one();
        }
        (
            "cert.revoked",
            format!(
                "{} certificate {serial} of {} revoked; {ended} live connection(s) ended",
                r.kind, r.name
            ),
        )
    } else {
        (
            "cert.issued",
            format!(
                "{} certificate {serial} issued for {} ({roles}), valid until {}",
                r.kind, r.name, r.not_after
            ),
        )
    };
    let ev = EventDraft::new(code, Category::Admin, EventOutcome::Success)
        .principal(&caller.who)
        .door(caller.door)
        .reason(&reason)
        .detail("certificate_serial", &serial)
        .detail("certificate_kind", &r.kind)
        .detail("certificate_name", &r.name)
        .detail("certificate_role", r.role.join(","));
    if ctx.guard.record(ev).await.is_none() {
        return Err(CommandError::Failed("the event could not be logged".into()));
    }
    Ok(Done::show(format!("recorded: {reason}\n")))
}
