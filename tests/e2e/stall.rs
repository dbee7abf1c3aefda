//! A database connection that stalls cannot hang a cluster: a TCP proxy between the Worker
//! (its Hyperdrive binding, so the cluster's object too) and PostgreSQL accepts and then
//! forwards nothing; requests fail fast with 503 and `retry-after`, and everything recovers
//! when the proxy heals, without a write lost or made twice. Runs after the others (its name
//! matches `outage`): it restarts the Worker behind the proxy, and back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::scheduling::Team;
use crate::support::{database, request, restart_server_with, RestartWhenDone};

/// The proxy's switch: stalled, it forwards nothing (it still accepts); healed, it drops
/// the connections of the stall and forwards again.
#[derive(Clone, Default)]
struct Switch {
    stalled: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
}

impl Switch {
    fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }
    fn heal(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.stalled.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` chunk by chunk, holding each chunk while stalled; ends when either
/// side closes or when the connection belongs to a stall that healed.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    switch: Switch,
    born: u64,
) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while switch.stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if switch.generation.load(Ordering::SeqCst) != born {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A proxy on a port of its own to `target`; answers its port.
async fn proxy(target: String, switch: Switch) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (target, switch) = (target.clone(), switch.clone());
            tokio::spawn(async move {
                let born = switch.generation.load(Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(&target).await else {
                    return;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::select! {
                    () = pump(cr, sw, switch.clone(), born) => {}
                    () = pump(sr, cw, switch, born) => {}
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn outage_a_stalled_database_connection_fails_fast_and_recovers() {
    let direct = std::env::var("BERTH_E2E_DATABASE_URL").expect("BERTH_E2E_DATABASE_URL");
    let url: reqwest::Url = direct.parse().expect("database url");
    let target = format!(
        "{}:{}",
        url.host_str().expect("host"),
        url.port().unwrap_or(5432)
    );
    let switch = Switch::default();
    let port = proxy(target, switch.clone()).await;
    let mut via = url.clone();
    via.set_port(Some(port)).expect("port");
    let _restore = RestartWhenDone;
    restart_server_with(&[("E2E_DATABASE_URL", via.as_str())]).await;

    let t = Team::new().await;
    let cluster = t.cluster(1000, 0, 0, false).await;
    let first = t.cpu_job(&cluster, "before", 10, 500).await;
    let keyed = |key: &'static str| {
        let mut req = request(
            Method::POST,
            &format!("/v1/clusters/{cluster}/deployments"),
            Some(&t.admin),
            Some("application/json"),
            json!({"name": "during", "image": "ghcr.io/acme/job:1",
                "resources": {"cpu_millis": 10, "memory_mib": 0, "gpus": 0}})
            .to_string()
            .into_bytes(),
        );
        req.headers_mut().insert(
            "idempotency-key",
            reqwest::header::HeaderValue::from_static(key),
        );
        t.c.send(req)
    };

    switch.stall();
    // The object's kept connection stalls: the submission fails fast, retryably.
    let started = Instant::now();
    let r = keyed("during-the-stall").await;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
    assert!(took < Duration::from_secs(8), "answered in {took:?}");
    // A read the object answers, and one the Worker answers on a new connection.
    for path in [
        format!("/v1/clusters/{cluster}"),
        format!("/v1/deployments/{}", first["id"].as_str().expect("id")),
    ] {
        let started = Instant::now();
        let r = t.c.call(Method::GET, &path, Some(&t.admin), None).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {}",
            r.body
        );
        assert!(r.headers.contains_key("retry-after"));
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{path}: {:?}",
            started.elapsed()
        );
    }

    switch.heal();
    // Recovered: the retry with the same key lands once, the reads answer again.
    let mut retried = keyed("during-the-stall").await;
    for _ in 0..20 {
        if retried.status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        retried = keyed("during-the-stall").await;
    }
    assert_eq!(retried.status, StatusCode::CREATED, "{}", retried.body);
    let usage = t.get(&format!("/v1/clusters/{cluster}")).await;
    assert_eq!(usage["usage"]["running"], 2, "{usage}");

    let db = database().await;
    let id: uuid::Uuid = cluster.parse().expect("uuid");
    let rows = db
        .query(
            "select name, idempotency_key from deployments where cluster_id = $1 order by id",
            &[&id],
        )
        .await
        .expect("rows");
    let names: Vec<(String, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        names,
        [
            ("before".to_string(), None),
            ("during".to_string(), Some("during-the-stall".to_string()))
        ],
        "nothing lost, nothing twice"
    );
}
