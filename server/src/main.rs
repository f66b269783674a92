#[global_allocator]
static ALLOC: switch_core::memory::Allocator = switch_core::memory::Allocator;

use clap::Parser;
use switch_core::{telemetry, Settings};
use switch_server::startup::Application;

/// The HTTP API of the Switch webhook hub: publish, subscribers, deliveries,
/// the message log, the live stream and the dashboard.
///
/// Settings come from environment variables (and a `.env` file in the
/// working directory): SWITCH_DATABASE_URL, SWITCH_REDIS_URL,
/// SWITCH_JWT_SECRET, SWITCH_SERVER_ADDR and the others the README lists.
#[derive(Parser)]
#[command(name = "switch-server", version, max_term_width = 100)]
struct Cli {
    /// Start without running pending database migrations.
    #[arg(long)]
    no_migrate: bool,

    /// Print an admin + publish token valid for 30 days, signed with
    /// SWITCH_JWT_SECRET, and exit.
    #[arg(long)]
    print_dev_token: bool,
}

#[actix_web::main]
async fn main() {
    switch_core::memory::no_huge_pages();
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switch-server: {e}");
            std::process::exit(2);
        }
    };
    if settings.jwt_secret.is_none() && settings.jwt_public_keys.is_none() {
        eprintln!("switch-server: SWITCH_JWT_SECRET is not set (nor SWITCH_JWT_PUBLIC_KEYS); it is the HS256 secret publisher tokens are signed with");
        std::process::exit(2);
    }
    if cli.print_dev_token {
        // An admin+publish token for trying the hub locally, valid for 30 days.
        let Some(secret) = settings.jwt_secret.as_deref() else {
            eprintln!("switch-server: --print-dev-token needs SWITCH_JWT_SECRET");
            std::process::exit(2);
        };
        println!("{}", switch_server::auth::dev_token(secret, 30 * 24 * 3600));
        return;
    }
    let log = telemetry::init(settings.log_json);
    let addr = settings.server_addr.clone();
    let app = match Application::build(settings, !cli.no_migrate).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("switch-server: {e:#}");
            drop(log);
            std::process::exit(1);
        }
    };
    tracing::info!(addr = %addr, port = app.port(), "switch-server listening");
    if let Err(e) = app.run_until_stopped().await {
        eprintln!("switch-server: {e}");
        drop(log);
        std::process::exit(1);
    }
}
