use anyhow::Context;
use switch_core::{db, Settings};
use switch_server::seed;

fn run(path: &str) -> anyhow::Result<(seed::SeedReport, Vec<(String, String)>)> {
    let settings = Settings::from_env()?;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let entries = seed::parse_file(
        &text,
        &switch_core::target::TargetPolicy::from_settings(&settings),
    )?;
    let explicit = seed::explicit_secrets(&text);
    let keys = seed::parse_keys(&text)?;
    let pool = db::pool(&settings.database_url, 1);
    let mut conn = pool.get().context("cannot connect to the database")?;
    db::migrate(&mut conn)?;
    let report = seed::apply(&mut conn, &entries, &explicit)?;
    let created = seed::apply_keys(&mut conn, keys)?;
    Ok((report, created))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path] = args.as_slice() else {
        eprintln!("usage: switch-seed FILE   (a YAML or JSON list of subscribers: topic, target_url, filter_expression, secret, enabled, description)");
        std::process::exit(2);
    };
    match run(path) {
        Ok((r, keys)) => {
            println!(
                "seeded {path}: {} created, {} updated, {} unchanged",
                r.created, r.updated, r.unchanged
            );
            // Shown this once: only a hash is stored.
            for (name, key) in keys {
                println!("API key {name}: {key}");
            }
        }
        Err(e) => {
            eprintln!("switch-seed: {e:#}");
            std::process::exit(1);
        }
    }
}
