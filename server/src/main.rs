#[global_allocator]
static ALLOC: switch_core::memory::Allocator = switch_core::memory::Allocator;

use switch_core::{telemetry, Settings};
use switch_server::startup::Application;

#[actix_web::main]
async fn main() {
    switch_core::memory::no_huge_pages();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let migrate = !args.iter().any(|a| a == "--no-migrate");
    let print_token = args.iter().any(|a| a == "--print-dev-token");
    if let Some(bad) = args
        .iter()
        .find(|a| *a != "--no-migrate" && *a != "--print-dev-token")
    {
        eprintln!(
            "switch-server: unknown argument `{bad}` (accepted: --no-migrate, --print-dev-token)"
        );
        std::process::exit(2);
    }
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
    if print_token {
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
    let app = match Application::build(settings, migrate).await {
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
