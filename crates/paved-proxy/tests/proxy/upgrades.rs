//! HTTP/1.1 upgrades: a WebSocket handshake goes through to the upstream, the two upgraded
//! connections are joined, the exchange is counted like any request, and a fault's abort
//! answers before the upstream is asked.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use futures::{SinkExt, StreamExt};
use paved_types::{Fault, FaultAction};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::support::*;

/// A WebSocket server that answers each text message with `<task>: <message>` and echoes
/// binary ones; `accepted` counts its handshakes.
struct WsUpstream {
    endpoint: paved_proxy::Endpoint,
    accepted: Arc<AtomicUsize>,
}

impl WsUpstream {
    async fn start(task: &'static str) -> WsUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    counter.fetch_add(1, SeqCst);
                    while let Some(Ok(message)) = ws.next().await {
                        let reply = match message {
                            Message::Text(t) => Message::text(format!("{task}: {t}")),
                            Message::Binary(b) => Message::Binary(b),
                            Message::Close(_) => break,
                            _ => continue,
                        };
                        if ws.send(reply).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let endpoint = paved_proxy::Endpoint {
            task: task.into(),
            addr,
            port_name: "http".into(),
            draining: false,
        };
        WsUpstream { endpoint, accepted }
    }

    fn snapshot(&self, faults: Vec<Fault>) -> paved_proxy::Snapshot {
        paved_proxy::Snapshot {
            routes: vec![route("chat", &[("chat", 1)])],
            endpoints: [("chat".to_owned(), vec![self.endpoint.clone()])].into(),
            faults,
        }
    }
}

#[tokio::test]
async fn a_websocket_exchange_goes_through_and_is_counted() {
    let up = WsUpstream::start("chat-1").await;
    let proxy = Harness::start(up.snapshot(vec![])).await;
    let url = format!("ws://{}/chat", proxy.addr);
    let (mut ws, response) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("the handshake passes");
    assert_eq!(response.status(), 101);
    assert_eq!(up.accepted.load(SeqCst), 1);
    for text in ["hello", "again"] {
        ws.send(Message::text(text)).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(reply, Message::text(format!("chat-1: {text}")));
    }
    let big = vec![7u8; 256 << 10];
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));

    let in_flight = r#"paved_proxy_in_flight_requests{job="chat",route="chat"}"#;
    assert_eq!(proxy.metric(in_flight), 1.0, "an open tunnel is in flight");
    assert_eq!(
        proxy.metric(r#"paved_proxy_requests_total{class="1xx",job="chat",route="chat"}"#),
        1.0
    );
    ws.close(None).await.unwrap();
    // Both ways must end for the tunnel to: read to the end, then close this side too.
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    eventually("the tunnel closes", async || proxy.metric(in_flight) == 0.0).await;
}

#[tokio::test]
async fn a_fault_aborts_the_handshake_before_the_upstream() {
    let up = WsUpstream::start("chat-1").await;
    let abort = Fault {
        id: "f1".into(),
        route: "chat".into(),
        action: FaultAction::Abort(503),
        percent: 100.0,
        header: None,
        expires_at_ms: u64::MAX,
    };
    let proxy = Harness::start(up.snapshot(vec![abort])).await;
    let url = format!("ws://{}/chat", proxy.addr);
    match tokio_tungstenite::connect_async(&url).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("the handshake was not aborted: {other:?}"),
    }
    assert_eq!(up.accepted.load(SeqCst), 0, "the upstream was asked");
    assert_eq!(
        proxy.metric(r#"paved_proxy_injected_faults_total{action="abort",route="chat"}"#),
        1.0
    );
}

#[tokio::test]
async fn a_plain_request_to_a_websocket_upstream_is_not_upgraded() {
    // The upgrade headers are what asks: without them the request is an ordinary GET, and
    // whatever the upstream answers comes back as is.
    let (_up, proxy) = web_proxy().await;
    let (status, _, body) = get(&client(), &proxy.url("/ws")).await;
    assert_eq!(status, 200);
    let echo = echo(&body);
    assert!(echo["headers"].get("upgrade").is_none(), "{echo}");
}
