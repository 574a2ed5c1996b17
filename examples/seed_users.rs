//! Puts N users (u00000…) straight into a stopped gateway's store, for the
//! console benchmark (scripts/bench-console.py): 10k temporary passwords
//! through argon2 would take minutes.
//!
//! usage: seed_users STATE_DIR N

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 3, "usage: seed_users STATE_DIR N");
    let n: usize = args[2].parse()?;
    let store = metergate::store::Store::open(std::path::Path::new(&args[1]))?;
    let ops = (0..n)
        .map(|i| {
            let name = format!("u{i:05}");
            metergate::store::Op::Put(
                metergate::store::Entity::User(metergate::model::User::new(
                    &name,
                    &format!("{name}@example.net"),
                )),
                metergate::store::Expect::New,
            )
        })
        .collect();
    store.apply(ops, "local:bench", time::OffsetDateTime::now_utc(), &[])?;
    Ok(())
}
