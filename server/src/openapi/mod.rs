//! The API's OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! annotations and the types they read and answer with, so it cannot drift
//! from the code. Served at `GET /openapi.json`; `GET /docs` reads it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;
use crate::shapes::{
    BadRequest, Conflict, FilterExpression, Forbidden, HeaderMap, HttpMethodIn, Internal, NotFound,
    ParamMap, PayloadTooLarge, RequestTimeout, Secret, TargetUrl, Topic, TopicPattern,
    Unauthorized, Unavailable,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switch",
        description = "A webhook fan-out hub: publishers post messages on topics; every matching subscriber gets a signed HTTP delivery, retried until it succeeds or becomes a dead letter.\n\nErrors are JSON `{\"error\": {\"code\", \"message\"}}` with a stable `code`. Text fields never hold NUL (U+0000): the databases cannot store it, so it is refused with `400`."
    ),
    paths(
        routes::health::ping,
        routes::health::health,
        routes::health::metrics,
        routes::docs::openapi,
        routes::docs::docs,
        routes::publish::publish,
        routes::publish::publish_batch,
        routes::publish::refresh,
        routes::publish::refresh_legacy,
        routes::subscribers::list,
        routes::subscribers::create,
        routes::subscribers::get,
        routes::subscribers::update,
        routes::subscribers::delete,
        routes::subscribers::rotate_secret,
        routes::filters::test_filter,
        routes::deliveries::list,
        routes::dead_letters::list,
        routes::dead_letters::replay_all,
        routes::dead_letters::replay_one,
        routes::messages::list,
        routes::messages::replay,
        routes::messages::get,
        routes::stream::sse,
        routes::stream::ws,
        routes::keys::list,
        routes::keys::create,
        routes::keys::revoke,
    ),
    components(
        schemas(Topic, TopicPattern, FilterExpression, Secret, TargetUrl, ParamMap, HeaderMap, HttpMethodIn),
        responses(BadRequest, Unauthorized, Forbidden, NotFound, Conflict, PayloadTooLarge, RequestTimeout, Unavailable, Internal),
    ),
    modifiers(&Security),
    tags(
        (name = "publishing", description = "Publish messages; every matching subscriber gets a delivery."),
        (name = "subscribers", description = "Who gets what: topic patterns, target URLs, filters, secrets. Scope `admin`."),
        (name = "filters", description = "Try a filter expression. Scope `admin`."),
        (name = "messages", description = "The message log, replays and the live stream."),
        (name = "deliveries", description = "Every delivery attempt. Scope `admin`."),
        (name = "dead-letters", description = "Deliveries that gave up, and their replay. Scope `admin`."),
        (name = "keys", description = "API keys: scoped, revocable credentials. Scope `admin`."),
        (name = "operations", description = "Health, metrics and this document. No authentication."),
    )
)]
pub struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}

/// The document as JSON, serialized once.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        // Serializing plain data with string keys cannot fail.
        let mut doc = serde_json::to_value(document()).unwrap_or_default();
        allow_empty_query_values(&mut doc);
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    })
}

/// Every optional query parameter given empty (`?limit=`) counts as absent,
/// so `GET /deliveries?subscriber_id=&outcome=&since=` lists everything.
/// utoipa has no field for OpenAPI's `allowEmptyValue`, which says so.
fn allow_empty_query_values(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for operation in paths
        .values_mut()
        .filter_map(|i| i.as_object_mut())
        .flat_map(|i| i.values_mut())
    {
        let Some(parameters) = operation
            .get_mut("parameters")
            .and_then(|p| p.as_array_mut())
        else {
            continue;
        };
        for parameter in parameters.iter_mut().filter_map(|p| p.as_object_mut()) {
            let optional_query = parameter.get("in").and_then(|v| v.as_str()) == Some("query")
                && parameter.get("required").and_then(|v| v.as_bool()) != Some(true);
            if optional_query {
                parameter.insert("allowEmptyValue".into(), serde_json::Value::Bool(true));
            }
        }
    }
}

/// The security schemes operations refer to.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or sk_ API key")
                    .description(Some(
                        "`Authorization: Bearer <credential>` (the scheme word in any case). The credential is a JWT \
                         (HS256 with `SWITCH_JWT_SECRET`; EdDSA, ES256 or RS256 with `SWITCH_JWT_PUBLIC_KEYS`) with claims \
                         `author`, `scope` (space-separated `publish`, `admin`; none means publish and refresh only) and \
                         `topics` (patterns it may publish to), or an API key `sk_…` from `POST /keys`. The names in an \
                         operation's requirement are the scopes it needs.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "The same credential as a query parameter, for browsers' EventSource and WebSocket, which cannot set headers. Only on the live stream.",
            ))),
        );
    }
}

/// The methods the document gives each path, to answer a request for a known
/// path with another method `405` and `Allow`.
pub struct RouteTable {
    routes: Vec<(Vec<Segment>, Vec<&'static str>)>,
}

enum Segment {
    Literal(String),
    Param,
}

impl RouteTable {
    fn from_document(doc: &utoipa::openapi::OpenApi) -> Self {
        let routes = doc
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let segments = path
                    .trim_start_matches('/')
                    .split('/')
                    .map(|s| {
                        if s.starts_with('{') && s.ends_with('}') {
                            Segment::Param
                        } else {
                            Segment::Literal(s.to_string())
                        }
                    })
                    .collect();
                (segments, methods_of(item))
            })
            .collect();
        RouteTable { routes }
    }

    /// The table of the served document.
    pub fn get() -> &'static RouteTable {
        static TABLE: OnceLock<RouteTable> = OnceLock::new();
        TABLE.get_or_init(|| RouteTable::from_document(document()))
    }

    /// The methods of the path `path` is, in a stable order; empty when it
    /// is none of the API's. As OpenAPI reads paths, a concrete one wins
    /// over a template (`/messages/replay` is not `/messages/{id}`).
    pub fn allowed(&self, path: &str) -> Vec<&'static str> {
        let wanted: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let literals = |segments: &[Segment]| {
            segments
                .iter()
                .filter(|s| matches!(s, Segment::Literal(_)))
                .count()
        };
        let matching: Vec<&(Vec<Segment>, Vec<&'static str>)> = self
            .routes
            .iter()
            .filter(|(segments, _)| {
                segments.len() == wanted.len()
                    && segments.iter().zip(&wanted).all(|(s, w)| match s {
                        Segment::Literal(l) => l == w,
                        Segment::Param => !w.is_empty(),
                    })
            })
            .collect();
        let most_concrete = matching.iter().map(|(s, _)| literals(s)).max();
        let mut methods: Vec<&'static str> = Vec::new();
        for (segments, route_methods) in matching {
            if Some(literals(segments)) != most_concrete {
                continue;
            }
            for m in route_methods {
                if !methods.contains(m) {
                    methods.push(m);
                }
            }
        }
        methods.sort_by_key(|m| METHODS.iter().position(|x| x == m));
        methods
    }
}

const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
];

/// The methods of one path item, as HTTP writes them.
pub fn methods_of(item: &utoipa::openapi::path::PathItem) -> Vec<&'static str> {
    [
        ("GET", item.get.is_some()),
        ("HEAD", item.head.is_some()),
        ("POST", item.post.is_some()),
        ("PUT", item.put.is_some()),
        ("PATCH", item.patch.is_some()),
        ("DELETE", item.delete.is_some()),
        ("OPTIONS", item.options.is_some()),
        ("TRACE", item.trace.is_some()),
    ]
    .into_iter()
    .filter(|(_, present)| *present)
    .map(|(m, _)| m)
    .collect()
}

/// Every (method, path) the document describes.
pub fn operations() -> BTreeMap<String, Vec<&'static str>> {
    document()
        .paths
        .paths
        .iter()
        .map(|(path, item)| (path.clone(), methods_of(item)))
        .collect()
}

#[cfg(test)]
mod tests;
