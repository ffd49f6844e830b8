//! Protocols: bodies stream both ways without buffering, gRPC (h2c to the upstream, trailers
//! included) passes through, and TLS is terminated with HTTP/1.1 and HTTP/2 by ALPN.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use paved_proxy::{Endpoint, ProxyConfig, Snapshot, TlsConfig};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::*;

#[tokio::test]
async fn bodies_stream_through_without_buffering() {
    let (up, proxy) = web_proxy().await;
    let response = client()
        .request(Request::get(proxy.url("/stream")).body(full("")).unwrap())
        .await
        .unwrap();
    let mut body = response.into_body();
    // The upstream holds its second chunk until released: the first must arrive on its own.
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first;");
    up.release.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second");

    // A chunked upload of unknown length passes whole.
    let chunks = ["one,", "two,", "three"].map(|c| Ok::<_, hyper::Error>(Frame::data(Bytes::from(c))));
    let upload = StreamBody::new(futures_lite(chunks)).boxed();
    let (status, _, text) = send(
        &client(),
        Request::post(proxy.url("/upload")).body(upload).unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(echo(&text)["body"], "one,two,three");
}

/// A stream of ready items (what `futures::stream::iter` does), without another dependency.
fn futures_lite<T: Unpin>(items: impl IntoIterator<Item = T>) -> tokio_stream::Iter<std::vec::IntoIter<T>> {
    tokio_stream::iter(items.into_iter().collect::<Vec<_>>())
}

#[tokio::test]
async fn grpc_health_checks_pass_through() {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("app.Sick", tonic_health::ServingStatus::NotServing)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    let mut s = Snapshot {
        routes: vec![route("grpc", &[("hello", 1)])],
        ..Snapshot::default()
    };
    let endpoint = Endpoint {
        task: "hello-1".into(),
        addr,
        port_name: "grpc".into(),
        draining: false,
    };
    s.endpoints.insert("hello".into(), vec![endpoint]);
    let proxy = Harness::start(s).await;

    let channel = tonic::transport::Channel::from_shared(proxy.url(""))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let check = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    let whole = health.check(check("")).await.unwrap().into_inner();
    assert_eq!(whole.status, ServingStatus::Serving as i32);
    let sick = health.check(check("app.Sick")).await.unwrap().into_inner();
    assert_eq!(sick.status, ServingStatus::NotServing as i32);
    // An error travels as grpc-status in the trailers.
    let unknown = health.check(check("app.Nope")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    assert_eq!(
        proxy.metric(r#"paved_proxy_requests_total{class="2xx",job="hello",route="grpc"}"#),
        3.0
    );
}

#[tokio::test]
async fn terminates_tls_for_http1_and_http2() {
    let up = Upstream::start("web-1").await;
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let config = ProxyConfig {
        tls: Some(TlsConfig {
            cert_chain: cert_path,
            private_key: key_path,
        }),
        ..ProxyConfig::default()
    };
    let proxy = Harness::with_config(
        snapshot(vec![route("web", &[("web", 1)])], &[("web", &[&up])], vec![]),
        config,
    )
    .await;
    let cert = CertificateDer::from(certified.cert.der().to_vec());

    for alpn in ["http/1.1", "h2"] {
        let tls = tls_connect(proxy.addr, &cert, alpn).await;
        let negotiated = tls
            .get_ref()
            .1
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        assert_eq!(negotiated.as_deref(), Some(alpn));
        let io = TokioIo::new(tls);
        let url = format!("https://localhost:{}/secure?x=1", proxy.addr.port());
        let response = if alpn == "h2" {
            let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            sender
                .send_request(Request::get(&url).body(full("")).unwrap())
                .await
                .unwrap()
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            let req = Request::get("/secure?x=1")
                .header("host", "localhost")
                .body(full(""))
                .unwrap();
            sender.send_request(req).await.unwrap()
        };
        assert_eq!(response.status(), 200, "{alpn}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let echo = echo(&String::from_utf8_lossy(&body));
        assert_eq!(echo["uri"], "/secure?x=1");
        assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
        assert!(
            echo["headers"]["host"].as_str().unwrap().starts_with("localhost"),
            "{echo}"
        );
        let via = if alpn == "h2" { "2 paved" } else { "1.1 paved" };
        assert_eq!(echo["headers"]["via"], via);
    }
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    cert: &CertificateDer<'static>,
    alpn: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}
