//! Serves the API on one port: gRPC (with health and reflection) and the JSON API side by side,
//! behind the token check.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::serve::ListenerExt;
use paved_api::v1::{
    jobs_server::JobsServer, metrics_server::MetricsServer, node_store_server::NodeStoreServer,
    nodes_server::NodesServer, routing_server::RoutingServer, system_server::SystemServer,
    tasks_server::TasksServer, tokens_server::TokensServer,
};
use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::api::Api;
use crate::auth::{Tokens, require_token};
use crate::http;
use crate::metrics::record_call;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot build server reflection: {0}")]
    Reflection(String),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The whole API as one router.
pub async fn router(api: Api, tokens: Arc<Tokens>) -> Result<Router, ServeError> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<JobsServer<Api>>().await;
    health_reporter.set_serving::<TasksServer<Api>>().await;
    health_reporter.set_serving::<NodesServer<Api>>().await;
    health_reporter.set_serving::<SystemServer<Api>>().await;
    health_reporter.set_serving::<MetricsServer<Api>>().await;
    health_reporter.set_serving::<RoutingServer<Api>>().await;
    health_reporter.set_serving::<NodeStoreServer<Api>>().await;
    health_reporter.set_serving::<TokensServer<Api>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(paved_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(paved_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let grpc = Routes::new(JobsServer::new(api.clone()))
        .add_service(TasksServer::new(api.clone()))
        .add_service(NodesServer::new(api.clone()))
        .add_service(SystemServer::new(api.clone()))
        .add_service(MetricsServer::new(api.clone()))
        .add_service(RoutingServer::new(api.clone()))
        .add_service(NodeStoreServer::new(api.clone()))
        .add_service(TokensServer::new(api.clone()))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .into_axum_router();
    let registry = api.telemetry().registry.clone();
    Ok(grpc
        .merge(http::routes(api))
        .layer(axum::middleware::from_fn_with_state(tokens, require_token))
        .layer(axum::middleware::from_fn_with_state(registry, record_call)))
}

/// Serves until `shutdown` resolves, then lets in-flight calls finish.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // Without TCP_NODELAY, small responses written in pieces wait on delayed ACKs (~40 ms).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
