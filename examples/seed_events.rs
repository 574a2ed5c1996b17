//! Appends N events to a stopped gateway's security log, for the console
//! benchmark (scripts/bench-console.py --events): Modbus reads allowed and,
//! one in fifty, writes denied, as SCADA pollers make them, through the
//! log's own writer (chained, group-committed).
//!
//! usage: seed_events STATE_DIR N

use metergate::store::{Category, EventDraft, Outcome};

/// Appending tasks at once: the writer commits what they queue together.
const WRITERS: usize = 2048;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 3, "usage: seed_events STATE_DIR N");
    let n: usize = args[2].parse()?;
    let store = std::sync::Arc::new(metergate::store::Store::open(std::path::Path::new(
        &args[1],
    ))?);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..WRITERS {
            let store = store.clone();
            tasks.spawn(async move {
                let mut i = w;
                while i < n {
                    let meter = format!("meter-{}", i % 3 + 1);
                    let draft = if i % 50 == 0 {
                        EventDraft::new("write-registers.deny", Category::Modbus, Outcome::Deny)
                            .principal("svc:scada-operator")
                            .action(format!("write FC 6 registers 5000..5001 values [{i}]"))
                            .reason("no statement allows it")
                    } else {
                        EventDraft::new("read-registers.allow", Category::Modbus, Outcome::Allow)
                            .principal("svc:scada-viewer")
                            .action("read FC 3 registers 3000..3010")
                            .reason("allowed by policy `scada` statement 1")
                    };
                    let draft = draft.source("127.0.0.2").door("modbus").meter(meter);
                    store.log().append(draft).await?;
                    i += WRITERS;
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        anyhow::Ok(())
    })?;
    println!("{} events in the log", store.log().last_seq());
    Ok(())
}
