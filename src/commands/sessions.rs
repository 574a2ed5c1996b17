//! `session list|kill`: live sessions on every door (their recordings:
//! recordings.rs).

use super::*;

pub(super) async fn session(
    ctx: &Gateway,
    caller: &Caller,
    cmd: &SessionCommand,
    json_out: bool,
    now: OffsetDateTime,
) -> Result<Done, CommandError> {
    let who = &caller.who;
    match cmd {
        SessionCommand::List => {
            let list = ctx.sessions.list();
            if json_out {
                return Ok(Done::show(to_json(&list)));
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|s| {
                    vec![
                        s.id.to_string(),
                        s.principal.clone(),
                        s.door.clone(),
                        s.source.clone(),
                        rfc3339(s.started),
                    ]
                })
                .collect();
            Ok(Done::show(table(
                &["ID", "PRINCIPAL", "DOOR", "SOURCE", "STARTED"],
                &rows,
            )))
        }
        SessionCommand::Kill { id } => {
            if !ctx.sessions.kill(*id, &format!("ended by {who}")) {
                return Err(CommandError::NotFound(format!("no live session {id}")));
            }
            Ok(Done::changed(
                format!("session {id} ended\n"),
                format!("ended session {id}"),
            ))
        }
        other => recording(ctx, caller, other, json_out, now).await,
    }
}
