use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use switch_core::{db, Settings};
use switch_server::seed;

/// Seeds subscribers (and API keys) from a file into the database named by
/// SWITCH_DATABASE_URL, upserting by (topic, target_url); pending migrations
/// run first.
///
/// The file is YAML or JSON: a list of subscribers (topic, target_url,
/// filter_expression, secret, enabled, description), or an object with
/// `subscribers` and `keys` (name, scope, topics, expires_at). A new key is
/// printed once: only its hash is stored.
#[derive(Parser)]
#[command(name = "switch-seed", version, max_term_width = 100)]
struct Cli {
    /// The YAML or JSON file to seed from.
    file: PathBuf,
}

fn run(path: &std::path::Path) -> anyhow::Result<(seed::SeedReport, Vec<(String, String)>)> {
    let settings = Settings::from_env()?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
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
    let cli = Cli::parse();
    let path = cli.file.as_path();
    match run(path) {
        Ok((r, keys)) => {
            println!(
                "seeded {}: {} created, {} updated, {} unchanged",
                path.display(),
                r.created,
                r.updated,
                r.unchanged
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
