//! `switch listen`: a local receiver behind a temporary subscriber. Each
//! delivery's signature is verified, printed as one JSON line and, when
//! asked, forwarded; the subscriber is deleted on SIGINT or SIGTERM.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use reqwest::Url;
use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};

use crate::api::{describe, Error, Hub};
use crate::{output, signature};

/// Largest delivery the receiver takes (the hub's default publish limit, with room).
const MAX_BODY: usize = 8 * 1024 * 1024;
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers that describe one hop, not the message; never forwarded.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

pub struct Options {
    pub pattern: String,
    pub port: u16,
    pub forward_to: Option<String>,
    pub filter: Option<String>,
    pub secret: Option<String>,
    pub description: Option<String>,
}

struct Receiver {
    /// The subscriber's signing key, known once it is registered.
    key: OnceLock<Vec<u8>>,
    forward_to: Option<Url>,
    client: reqwest::Client,
}

pub async fn run(hub: &Hub, opts: Options) -> Result<(), Error> {
    // Signals are caught from here on, so one arriving while the subscriber
    // is being registered still removes it.
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Error::other(format!("catching SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Error::other(format!("catching SIGINT: {e}")))?;

    let forward_to = match &opts.forward_to {
        None => None,
        Some(u) => Some(
            Url::parse(u)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    Error::other(format!("--forward-to: `{u}` is not an http(s) URL"))
                })?,
        ),
    };
    let client = reqwest::Client::builder()
        .timeout(FORWARD_TIMEOUT)
        .build()
        .map_err(|e| Error::other(format!("HTTP client: {}", describe(&e))))?;
    let state = web::Data::new(Receiver {
        key: OnceLock::new(),
        forward_to,
        client,
    });

    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .default_service(web::to(receive))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5)
    .bind(("127.0.0.1", opts.port))
    .map_err(|e| Error::other(format!("cannot listen on 127.0.0.1:{}: {e}", opts.port)))?;
    let port = server
        .addrs()
        .first()
        .map(|a| a.port())
        .ok_or_else(|| Error::other("the receiver has no address"))?;
    let receiver_url = format!("http://127.0.0.1:{port}/");
    let server = server.run();
    let handle = server.handle();
    let mut serving = actix_web::rt::spawn(server);

    let mut body = json!({
        "topic": opts.pattern,
        "target_url": receiver_url,
        "description": opts.description.clone().unwrap_or_else(|| format!(
            "switch listen (temporary, pid {})",
            std::process::id()
        )),
    });
    if let Some(f) = opts.filter.as_deref().filter(|f| !f.trim().is_empty()) {
        body["filter_expression"] = json!(f);
    }
    if let Some(s) = &opts.secret {
        body["secret"] = json!(s);
    }
    let subscriber = match hub.post("/subscribers", &body).await {
        Ok(s) => s,
        Err(e) => {
            handle.stop(false).await;
            return Err(e);
        }
    };
    let id = subscriber["id"].clone();
    let id_text = match &id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let secret = subscriber["secret"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let registered = match signature::decode_secret(&secret) {
        Some(key) => {
            let _ = state.key.set(key);
            Ok(())
        }
        None => Err(Error::other(format!(
            "subscriber {id_text} has no usable secret; it is deleted"
        ))),
    };

    let outcome = match registered {
        Err(e) => Err(e),
        Ok(()) => {
            eprintln!(
                "switch: subscriber {id_text} (topic `{}`) delivers to {receiver_url}",
                opts.pattern
            );
            eprintln!("switch: signing secret {secret}");
            if let Some(f) = &state.forward_to {
                eprintln!("switch: forwarding verified deliveries to {f}");
            }
            eprintln!("switch: listening; Ctrl-C removes the subscriber and exits");
            tokio::select! {
                _ = term.recv() => Ok(()),
                _ = int.recv() => Ok(()),
                r = &mut serving => Err(Error::other(match r {
                    Ok(Ok(())) => "the receiver stopped".to_string(),
                    Ok(Err(e)) => format!("the receiver failed: {e}"),
                    Err(e) => format!("the receiver failed: {e}"),
                })),
            }
        }
    };

    handle.stop(true).await;
    let removed = hub.delete(&format!("/subscribers/{id_text}")).await;
    match (&outcome, removed) {
        (_, Ok(_)) => eprintln!("switch: subscriber {id_text} deleted"),
        (Err(_), Err(e)) => eprintln!("switch: deleting subscriber {id_text}: {e}"),
        (Ok(()), Err(e)) => {
            return Err(Error::other(format!("deleting subscriber {id_text}: {e}")))
        }
    }
    outcome
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One delivery: verify, print, forward, answer.
async fn receive(req: HttpRequest, body: web::Bytes, st: web::Data<Receiver>) -> HttpResponse {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let id = header("webhook-id");
    let verified = match (
        st.key.get(),
        id,
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) {
        (Some(key), Some(id), Some(ts), Some(sig)) => {
            signature::verify(key, id, ts, &body, sig, now())
        }
        _ => false,
    };
    let body_json = serde_json::from_slice::<Value>(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    output::json_line(&json!({
        "webhook_id": id,
        "topic": header("x-switch-topic"),
        "verified": verified,
        "body": body_json,
    }));
    let shown_id = id.unwrap_or("?");
    if !verified {
        eprintln!("switch: delivery {shown_id}: signature not verified; answered 401");
        return HttpResponse::Unauthorized()
            .json(json!({"error": {"code": "unauthorized", "message": "signature not verified"}}));
    }
    if let Some(target) = &st.forward_to {
        match forward(&st.client, target, &req, body).await {
            Ok(status) => eprintln!("switch: delivery {shown_id} forwarded to {target}: {status}"),
            Err(e) => eprintln!("switch: delivery {shown_id} not forwarded to {target}: {e}"),
        }
    }
    HttpResponse::Ok().finish()
}

/// Re-sends a delivery (method, headers, body; its query string added to the
/// target's) and returns the answer's status.
async fn forward(
    client: &reqwest::Client,
    target: &Url,
    req: &HttpRequest,
    body: web::Bytes,
) -> Result<reqwest::StatusCode, String> {
    let mut url = target.clone();
    let query = req.query_string();
    if !query.is_empty() {
        let joined = match url.query() {
            Some(q) if !q.is_empty() => format!("{q}&{query}"),
            _ => query.to_string(),
        };
        url.set_query(Some(&joined));
    }
    let method =
        reqwest::Method::from_bytes(req.method().as_str().as_bytes()).map_err(|e| e.to_string())?;
    let mut rb = client.request(method, url);
    for (name, value) in req.headers() {
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        rb = rb.header(name.as_str(), value.as_bytes());
    }
    let resp = rb
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| describe(&e))?;
    Ok(resp.status())
}
