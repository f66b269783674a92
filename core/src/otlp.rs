//! Optional export of spans to an OpenTelemetry collector over OTLP/HTTP
//! (JSON), when `SWITCH_OTLP_ENDPOINT` is set: the server's `publish` span of
//! each accepted message, and the worker's `deliver` span of each attempt, all
//! in the message's trace. A delivery's span is the one its `traceparent`
//! header names, and its parent is the publish span, whose id the worker
//! derives from the message id ([`SpanId::of_message_id`]).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
pub use opentelemetry::trace::SpanKind;
use opentelemetry::trace::{
    SpanContext, TraceContextExt, TraceFlags, TraceState, Tracer, TracerProvider as _,
};
pub use opentelemetry::KeyValue;
use opentelemetry::{trace, Context};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;

use crate::trace::{SpanId, TraceId};

/// How long spans wait to be sent in a batch.
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// Longest an export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// One finished span.
#[derive(Debug, Clone)]
pub struct Span {
    pub name: &'static str,
    pub kind: SpanKind,
    pub trace: TraceId,
    pub id: SpanId,
    /// Its parent, a span of another process (none: the trace's root here).
    pub parent: Option<SpanId>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
}

/// Where finished spans go: nowhere when no endpoint is configured, else to
/// a batch processor that sends them from a thread of its own.
#[derive(Clone, Default)]
pub struct Spans(Option<Exporting>);

#[derive(Clone)]
struct Exporting {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Spans {
    /// Exports the spans of `service` to `<endpoint>/v1/traces`; no endpoint,
    /// nothing is started.
    pub fn start(endpoint: Option<&url::Url>, service: &'static str) -> anyhow::Result<Spans> {
        let Some(endpoint) = endpoint else {
            return Ok(Spans(None));
        };
        let traces = format!("{}/v1/traces", endpoint.as_str().trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(traces)
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(Client::start()?)
            .build()?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(BATCH_DELAY)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(Resource::builder().with_service_name(service).build())
            .build();
        let tracer = provider.tracer("switch");
        Ok(Spans(Some(Exporting { provider, tracer })))
    }

    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Queues `span` for export (nothing when export is off).
    pub fn export(&self, span: Span) {
        let Some(e) = &self.0 else { return };
        let trace_id = trace::TraceId::from_bytes(span.trace.to_bytes());
        let parent = match span.parent {
            Some(parent) => Context::new().with_remote_span_context(SpanContext::new(
                trace_id,
                trace::SpanId::from_bytes(parent.to_bytes()),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        // Ended (and queued) when dropped, at the end time given.
        let _span = e
            .tracer
            .span_builder(span.name)
            .with_kind(span.kind)
            .with_trace_id(trace_id)
            .with_span_id(trace::SpanId::from_bytes(span.id.to_bytes()))
            .with_start_time(span.start)
            .with_end_time(span.end)
            .with_attributes(span.attributes)
            .start_with_context(&e.tracer, &parent);
    }

    /// Sends the spans still waiting and stops exporting: at shutdown.
    pub async fn shutdown(&self) {
        let Some(e) = self.0.clone() else { return };
        // Waits for the export thread: never on a runtime thread.
        match tokio::task::spawn_blocking(move || e.provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "spans not all exported at shutdown"),
            Err(err) => tracing::warn!(error = %err, "span export shutdown failed"),
        }
    }
}

/// Sends the exporter's requests with the HTTP client the hub uses, on a
/// runtime of its own: the batch processor exports from its own thread, and
/// must not depend on the runtime that shuts it down (or has gone).
#[derive(Debug)]
struct Client {
    http: reqwest::Client,
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl Client {
    fn start() -> anyhow::Result<Client> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("switch-otlp")
            .enable_all()
            .build()?;
        Ok(Client {
            http: reqwest::Client::builder().timeout(EXPORT_TIMEOUT).build()?,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Allowed wherever the exporter is dropped, a runtime thread included.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let request = self
            .http
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body);
        let (status, headers, body) = self
            .handle
            .spawn(async move {
                let response = request.send().await?;
                let (status, headers) = (response.status(), response.headers().clone());
                Ok::<_, reqwest::Error>((status, headers, response.bytes().await?))
            })
            .await??;
        let mut response = http::Response::builder().status(status).body(body)?;
        *response.headers_mut() = headers;
        Ok(response)
    }
}
