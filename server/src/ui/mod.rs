//! The dashboard at `/ui`: pages for operators, rendered by the server.
//!
//! Nothing runs or builds beside the server: the pages are maud templates in
//! these modules, and the stylesheet and the one small script are embedded
//! (`assets/`). A person signs in with an admin token (a JWT with the
//! `admin` scope, or an admin API key); see [`session`] for how the session
//! cookie and the CSRF tokens of its forms work across several servers.
//!
//! Handlers reuse the API's own validation and database code (the
//! `routes` modules and `switch_core::db::repo`); the keyset-paged lists
//! the API does not have live in [`queries`].

mod assets;
mod dead_letters;
mod error;
mod form;
mod keyset;
mod layout;
mod messages;
mod overview;
mod queries;
mod session;
mod subscriber;
mod subscribers;
mod tail;

use actix_web::middleware::DefaultHeaders;
use actix_web::web;

pub use session::{csrf_token, COOKIE};

/// Pages load their own script and stylesheet only, cannot be framed, and
/// post forms only to themselves.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/ui")
            .wrap(
                DefaultHeaders::new()
                    .add(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
                    .add(("X-Frame-Options", "DENY"))
                    .add(("X-Content-Type-Options", "nosniff"))
                    .add(("Referrer-Policy", "same-origin")),
            )
            .route("", web::get().to(overview::page))
            .route("/", web::get().to(overview::page))
            .route("/login", web::get().to(session::to_sign_in))
            .route("/login", web::post().to(session::sign_in))
            .route("/logout", web::post().to(session::sign_out))
            .route("/overview/stats", web::get().to(overview::stats))
            .route("/subscribers", web::get().to(subscribers::list))
            .route("/subscribers", web::post().to(subscribers::create))
            .route("/subscribers/new", web::get().to(subscribers::new_form))
            .route("/subscribers/{id}", web::get().to(subscriber::show))
            .route("/subscribers/{id}", web::post().to(subscriber::update))
            .route(
                "/subscribers/{id}/enabled",
                web::post().to(subscriber::set_enabled),
            )
            .route(
                "/subscribers/{id}/rotate-secret",
                web::post().to(subscriber::rotate_secret),
            )
            .route(
                "/subscribers/{id}/test-filter",
                web::post().to(subscriber::test_filter),
            )
            .route(
                "/subscribers/{id}/delete",
                web::post().to(subscriber::delete),
            )
            .route("/messages", web::get().to(messages::list))
            .route("/messages/{id}", web::get().to(messages::show))
            .route("/dead-letters", web::get().to(dead_letters::list))
            .route(
                "/dead-letters/replay",
                web::post().to(dead_letters::replay_all),
            )
            .route(
                "/dead-letters/{id}/replay",
                web::post().to(dead_letters::replay_one),
            )
            .route("/tail", web::get().to(tail::page))
            .route("/tail/stream", web::get().to(tail::stream))
            .route("/assets/{name}", web::get().to(assets::serve))
            .default_service(web::to(error::not_found)),
    );
}
