use anyhow::Context;
use switch_core::{db, Settings};
use switch_server::seed;

fn run(path: &str) -> anyhow::Result<seed::SeedReport> {
    let settings = Settings::from_env()?;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let entries = seed::parse_file(
        &text,
        &switch_core::target::TargetPolicy::from_settings(&settings),
    )?;
    let explicit = seed::explicit_secrets(&text);
    let pool = db::pool(&settings.database_url, 1);
    let mut conn = pool.get().context("cannot connect to the database")?;
    db::migrate(&mut conn)?;
    seed::apply(&mut conn, &entries, &explicit)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path] = args.as_slice() else {
        eprintln!("usage: switch-seed FILE   (a YAML or JSON list of subscribers: topic, target_url, filter_expression, secret, enabled, description)");
        std::process::exit(2);
    };
    match run(path) {
        Ok(r) => println!(
            "seeded {path}: {} created, {} updated, {} unchanged",
            r.created, r.updated, r.unchanged
        ),
        Err(e) => {
            eprintln!("switch-seed: {e:#}");
            std::process::exit(1);
        }
    }
}
