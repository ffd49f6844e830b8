//! `tracing` spans to an OTLP collector, for `paved up --otlp-endpoint`: the same endpoint as
//! the metrics push, batched by the OpenTelemetry SDK on the tokio runtime.

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::{Resource, runtime};
use tracing_subscriber::registry::LookupSpan;

/// The exporting provider (keep it, and shut it down at exit to send what is batched) and the
/// layer that hands it every span. Must be called within the tokio runtime.
pub fn otlp<S>(endpoint: &str) -> anyhow::Result<(SdkTracerProvider, impl tracing_subscriber::Layer<S>)>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .with_context(|| format!("invalid --otlp-endpoint {endpoint:?}"))?;
    let processor = BatchSpanProcessor::builder(exporter, runtime::Tokio).build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(Resource::builder().with_service_name("paved").build())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("paved"));
    Ok((provider, layer))
}
