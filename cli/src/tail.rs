//! `switch tail`: the live stream (`GET /stream`, Server-Sent Events), one
//! JSON line per message; a dropped connection is resumed from the last
//! message seen with `Last-Event-ID`.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CACHE_CONTROL};
use reqwest::Method;
use serde_json::Value;

use crate::api::{self, Error, Hub};
use crate::output;

/// The hub sends a comment at least every 15 s; this long without a byte
/// means the connection is dead.
const IDLE_LIMIT: Duration = Duration::from_secs(45);
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// One event of the stream.
#[derive(Debug, Default, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// An incremental Server-Sent Events parser (the WHATWG rules that matter
/// here: `\n`, `\r\n` or `\r` line ends, comments, one optional space after
/// the colon, multi-line data).
#[derive(Default)]
pub struct Parser {
    buf: Vec<u8>,
    current: Event,
    has_data: bool,
    /// A `\r` ended the last line: a `\n` right after it belongs to it.
    after_cr: bool,
}

impl Parser {
    /// Feeds bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.buf);
                    if let Some(ev) = self.line(&String::from_utf8_lossy(&line)) {
                        events.push(ev);
                    }
                }
                _ => self.buf.push(b),
            }
        }
        events
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            let ev = std::mem::take(&mut self.current);
            let had = std::mem::replace(&mut self.has_data, false);
            return had.then_some(ev);
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.current.event = value.to_string(),
            "id" if !value.contains('\0') => self.current.id = Some(value.to_string()),
            _ => {}
        }
        None
    }
}

/// Why one connection ended.
enum Ended {
    /// The hub closed it, or it broke.
    Dropped(String),
    /// The hub sent `event: error` (e.g. `slow_consumer`) and closed it.
    HubError(String),
}

/// Follows the stream until the process is stopped. The first connection
/// failing is an error; later ones are retried with backoff.
pub async fn run(hub: &Hub, pattern: &str, filter: Option<&str>) -> Result<(), Error> {
    let mut last_id: Option<String> = None;
    let mut connected_once = false;
    let mut delay = FIRST_RETRY;
    loop {
        let mut rb = hub
            .request(Method::GET, "/stream")?
            .query(&[("topic", pattern)])
            .header(ACCEPT, "text/event-stream")
            .header(CACHE_CONTROL, "no-cache");
        if let Some(f) = filter.filter(|f| !f.trim().is_empty()) {
            rb = rb.query(&[("filter", f)]);
        }
        if let Some(id) = &last_id {
            rb = rb.header("Last-Event-ID", id.as_str());
        }
        let problem = match rb.send().await {
            Ok(resp) if resp.status().is_success() => {
                if connected_once {
                    eprintln!("switch: stream resumed");
                } else {
                    eprintln!("switch: tailing `{pattern}` on {}", hub.base());
                }
                connected_once = true;
                delay = FIRST_RETRY;
                match follow(resp, &mut last_id).await {
                    Ended::Dropped(why) => format!("stream dropped ({why})"),
                    Ended::HubError(data) => format!("stream closed by the hub: {data}"),
                }
            }
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                let err = api::api_error(status, &text);
                // A refused request will be refused again; so is one the
                // hub cannot serve before the first success.
                if status.is_client_error() || !connected_once {
                    return Err(err);
                }
                err.to_string()
            }
            Err(e) => {
                if !connected_once {
                    return Err(hub.unreachable(&e));
                }
                api::describe(&e)
            }
        };
        eprintln!(
            "switch: {problem}; reconnecting in {} ms",
            delay.as_millis()
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RETRY);
    }
}

/// Prints the messages of one connection until it ends.
async fn follow(resp: reqwest::Response, last_id: &mut Option<String>) -> Ended {
    let mut parser = Parser::default();
    let mut body = resp.bytes_stream();
    loop {
        let chunk = match tokio::time::timeout(IDLE_LIMIT, body.next()).await {
            Err(_) => return Ended::Dropped(format!("nothing received for {IDLE_LIMIT:?}")),
            Ok(None) => return Ended::Dropped("closed by the hub".into()),
            Ok(Some(Err(e))) => return Ended::Dropped(api::describe(&e)),
            Ok(Some(Ok(bytes))) => bytes,
        };
        for ev in parser.feed(&chunk) {
            match ev.event.as_str() {
                "" | "message" => {
                    match serde_json::from_str::<Value>(&ev.data) {
                        Ok(v) => output::json_line(&v),
                        Err(_) => output::line(&ev.data),
                    }
                    if ev.id.is_some() {
                        *last_id = ev.id;
                    }
                }
                "error" => return Ended::HubError(ev.data),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_across_chunks() {
        let mut p = Parser::default();
        assert!(p.feed(b": keep-alive\n\nid: msg_1\nevent: mess").is_empty());
        let evs = p.feed(b"age\ndata: {\"a\":1}\n\n");
        assert_eq!(
            evs,
            vec![Event {
                id: Some("msg_1".into()),
                event: "message".into(),
                data: "{\"a\":1}".into()
            }]
        );
    }

    #[test]
    fn handles_crlf_cr_and_multiline_data() {
        let mut p = Parser::default();
        let evs = p.feed(b"data:a\r\ndata: b\r\rdata:c\r");
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].data, "a\nb");
        let evs = p.feed(b"\n\n");
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].data, "c");
        assert_eq!(evs[0].id, None);
    }

    #[test]
    fn events_without_data_are_skipped() {
        let mut p = Parser::default();
        assert!(p.feed(b"event: message\nid: x\n\n").is_empty());
        let evs = p.feed(b"event: error\ndata: {\"code\": \"slow_consumer\"}\n\n");
        assert_eq!(evs[0].event, "error");
        assert_eq!(evs[0].id, None);
    }
}
