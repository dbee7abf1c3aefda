//! Crash campaign load (a program, not a test; `make crash` runs it): submits and stops
//! deployments on one cluster for BENCH_SECONDS while `scripts/crash.sh` kills and restarts
//! workerd and restarts PostgreSQL. Afterwards it checks, against the database itself, that
//! every acknowledged deployment exists, that usage equals the sum over running within
//! capacity, and that the queue drains.
//!
//! Agent faults too: CRASH_AGENTS real `berth agent --driver exec` processes (default 3, each
//! 8 CPU / 16 GiB; BERTH_BIN is the release `berth`) run the deployments (`sleep 1`–`3`),
//! and CRASH_AGENT_KILLS times (default 4) one of them is SIGKILLed and started again after
//! a pause of up to 8 s (the cluster's grace is 5 s: some come back in time, some are lost).
//! Afterwards: no deployment started a second time unless its earlier run ended first (a
//! `started` event only after an `exited` or a `lost`), every deployment's status and
//! placement agree, and the cluster and its agents still answer.

#[path = "support/agents.rs"]
mod agents;

#[path = "support/env.rs"]
mod env;
use env::env_or;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[derive(Default, Debug)]
struct Tally {
    acked: Vec<String>,
    stopped: usize,
    unavailable_503: usize,
    retry_after_missing: usize,
    other_5xx: usize,
    refused: usize,
}

#[tokio::main]
async fn main() {
    let base = std::env::var("BERTH_URL").expect("BERTH_URL");
    let db_url = std::env::var("BERTH_DB").expect("BERTH_DB");
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    let email = format!("crash-{}@example.com", uuid::Uuid::new_v4().simple());
    let pw = "correct horse battery";
    http.post(format!("{base}/v1/auth/register"))
        .json(&json!({"email": email, "password": pw, "name": "Crash"}))
        .send()
        .await
        .expect("register");
    let login: Value = http
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": email, "password": pw}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = login["access_token"].as_str().expect("token").to_string();
    let org: Value = http
        .post(format!("{base}/v1/orgs"))
        .bearer_auth(&token)
        .json(&json!({"name": "crash"}))
        .send()
        .await
        .expect("org")
        .json()
        .await
        .expect("json");
    let cluster: Value = http.post(format!("{base}/v1/orgs/{}/clusters", org["id"].as_str().expect("org"))).bearer_auth(&token)
        .json(&json!({"name": "crash", "capacity": {"cpu_millis": 32_000, "memory_mib": 65_536, "gpus": 8}}))
        .send().await.expect("cluster").json().await.expect("json");
    let cluster = cluster["id"].as_str().expect("cluster").to_string();
    let ok = |r: reqwest::Response| {
        assert!(r.status().is_success(), "{}: {}", r.url(), r.status());
        r
    };
    ok(http
        .patch(format!("{base}/v1/clusters/{cluster}"))
        .bearer_auth(&token)
        .json(&json!({"agent_grace_seconds": 5}))
        .send()
        .await
        .expect("grace"));
    let agent_token: Value = ok(http
        .post(format!("{base}/v1/clusters/{cluster}/agent-tokens"))
        .bearer_auth(&token)
        .json(&json!({"name": "crash"}))
        .send()
        .await
        .expect("agent token"))
    .json()
    .await
    .expect("json");
    let agent_token = agent_token["token"].as_str().expect("token").to_string();
    let n_agents: usize = env_or("CRASH_AGENTS", 3);
    let agent_kills: usize = env_or("CRASH_AGENT_KILLS", 4);
    let mut fleet = agents::Agents::spawn(
        n_agents,
        "crash",
        (&base, &cluster, &agent_token),
        "8",
        "16Gi",
    );
    let up = agents::connected(
        &http,
        &base,
        &token,
        &cluster,
        n_agents,
        Duration::from_secs(20),
    )
    .await;
    assert!(up, "the agents did not connect (their logs: BENCH_LOG_DIR)");

    let tally = Arc::new(Mutex::new(Tally::default()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for w in 0..16u64 {
        let (http, base, token, cluster, tally) = (
            http.clone(),
            base.clone(),
            token.clone(),
            cluster.clone(),
            tally.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut i = 0u64;
            let mut mine: Vec<String> = Vec::new();
            while Instant::now() < deadline {
                i += 1;
                let r = (w * 1_000_003 + i).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20;
                let req = if i.is_multiple_of(4) && !mine.is_empty() {
                    let id = mine.swap_remove((r as usize) % mine.len());
                    http.post(format!("{base}/v1/deployments/{id}/stop")).bearer_auth(&token)
                } else {
                    http.post(format!("{base}/v1/clusters/{cluster}/deployments")).bearer_auth(&token).json(&json!({
                        "name": format!("w{w}-{i}"), "image": "nginx:1.27", "priority": r % 1001,
                        "command": ["sleep", (1 + r % 3).to_string()],
                        "resources": {"cpu_millis": 500 + r % 4000, "memory_mib": 256 + r % 8192, "gpus": r % 2}}))
                };
                let stop = i.is_multiple_of(4);
                match req.send().await {
                    Ok(res) => {
                        let status = res.status().as_u16();
                        let retry = res.headers().contains_key("retry-after");
                        let body: Value = res.json().await.unwrap_or(Value::Null);
                        let mut t = tally.lock().expect("tally");
                        match status {
                            201 => {
                                let id = body["id"].as_str().unwrap_or_default().to_string();
                                mine.push(id.clone());
                                t.acked.push(id);
                            }
                            200 if stop => t.stopped += 1,
                            503 => {
                                t.unavailable_503 += 1;
                                if !retry { t.retry_after_missing += 1; }
                            }
                            s if s >= 500 => t.other_5xx += 1,
                            _ => {}
                        }
                    }
                    // The server is down (being restarted): nothing was acknowledged.
                    Err(_) => {
                        tally.lock().expect("tally").refused += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    // The agent faults, spread over the load: SIGKILL one, pause (sometimes past the grace),
    // start it again.
    let faults = tokio::spawn(async move {
        let every =
            Duration::from_secs(seconds.saturating_sub(6).max(1)) / agent_kills.max(1) as u32;
        let mut pauses = vec![];
        for k in 0..agent_kills {
            let r = (k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33;
            tokio::time::sleep(every * 3 / 10).await;
            let i = (r as usize) % n_agents;
            fleet.kill(i).await;
            let pause = Duration::from_millis(200 + r % 7800).min(every * 7 / 10);
            tokio::time::sleep(pause).await;
            fleet.start(i);
            pauses.push((fleet.name(i), pause));
        }
        (fleet, pauses)
    });
    for w in workers {
        w.await.expect("worker");
    }
    let (mut fleet, pauses) = faults.await.expect("agent faults");

    // Wait until the service answers again (the campaign may have just restarted it).
    for _ in 0..100 {
        if http
            .get(format!("{base}/health?deep=1"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let t = std::mem::take(&mut *tally.lock().expect("tally"));
    let (db, conn) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls)
        .await
        .expect("db");
    tokio::spawn(conn);
    let cid: uuid::Uuid = cluster.parse().expect("uuid");
    let stored: HashSet<String> = db
        .query(
            "select id::text from deployments where cluster_id = $1",
            &[&cid],
        )
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost = t.acked.iter().filter(|id| !stored.contains(*id)).count();

    let usage = async || -> Value {
        let v: Value = http
            .get(format!("{base}/v1/clusters/{cluster}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("cluster")
            .json()
            .await
            .expect("json");
        v["usage"].clone()
    };
    let u = usage().await;
    let row = db.query_one("select coalesce(sum(cpu_millis),0)::int8, coalesce(sum(memory_mib),0)::int8, coalesce(sum(gpus),0)::int8 \
        from deployments where cluster_id = $1 and status = 'running'", &[&cid]).await.expect("sum");
    let exact = ["cpu_millis", "memory_mib", "gpus"]
        .iter()
        .enumerate()
        .all(|(i, k)| {
            let s: i64 = row.get(i);
            u["allocated"][k].as_i64() == Some(s) && s <= u["capacity"][k].as_i64().unwrap_or(-1)
        });

    // The queue drains: stop whatever runs, round after round, until nothing waits; every
    // round must admit something (a queue that stops moving is stuck).
    let mut rounds = 0;
    let drain_deadline = Instant::now() + Duration::from_secs(600);
    let mut stuck = false;
    loop {
        let queued = usage().await["queued"].as_i64().unwrap_or(-1);
        if queued == 0 || Instant::now() > drain_deadline {
            break;
        }
        rounds += 1;
        let running: Value = http
            .get(format!(
                "{base}/v1/clusters/{cluster}/deployments?status=running&limit=200"
            ))
            .bearer_auth(&token)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        let items = running["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            stuck = true;
            break;
        }
        // The round's stops at once (one after another, a large backlog takes minutes).
        let stops = items.iter().map(|d| {
            http.post(format!(
                "{base}/v1/deployments/{}/stop",
                d["id"].as_str().unwrap_or_default()
            ))
            .bearer_auth(&token)
            .send()
        });
        futures::future::join_all(stops).await;
    }
    let drained = !stuck && usage().await["queued"].as_i64() == Some(0);

    // Agents: every deployment's runs one after another (a second `started` only after an
    // `exited` or a `lost`), status and placement agree, the cluster's agents still answer.
    let events = db
        .query(
            "select e.deployment_id::text, e.kind from deployment_events e \
             join deployments d on d.id = e.deployment_id where d.cluster_id = $1 order by e.id",
            &[&cid],
        )
        .await
        .expect("events");
    let mut running_now: HashMap<String, bool> = HashMap::new();
    let mut starts: HashMap<String, usize> = HashMap::new();
    let (mut twice, mut lost_events, mut exited_events) = (vec![], 0, 0);
    for e in &events {
        let (id, kind): (String, &str) = (e.get(0), e.get(1));
        match kind {
            "started" => {
                if running_now.insert(id.clone(), true) == Some(true) {
                    twice.push(id.clone());
                }
                *starts.entry(id).or_default() += 1;
            }
            "exited" | "lost" => {
                if kind == "lost" {
                    lost_events += 1;
                } else {
                    exited_events += 1;
                }
                running_now.insert(id, false);
            }
            _ => {}
        }
    }
    let rerun = starts.values().filter(|n| **n > 1).count();
    // A queued deployment has no container; an ended one none that is to run (a stopping
    // one may still be reported); a running one is awaiting an agent or placed on one.
    let inconsistent: i64 = db
        .query_one(
            "select count(*) from deployments where cluster_id = $1 and not ( \
               (status = 'queued' and placement is null) \
               or (status = 'running' and (placement is null or agent_id is not null)) \
               or (status in ('succeeded', 'failed', 'stopped', 'cancelled') \
                   and (placement is null or placement = 'stopping')))",
            &[&cid],
        )
        .await
        .expect("consistency")
        .get(0);
    let by_status: Vec<(String, i64)> = db
        .query(
            "select status || coalesce('/' || placement, ''), count(*) from deployments \
             where cluster_id = $1 group by 1 order by 1",
            &[&cid],
        )
        .await
        .expect("statuses")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let listed = agents::list(&http, &base, &token, &cluster).await;
    let agents_answer = listed.len() == n_agents;
    fleet.kill_all().await;

    println!(
        "crash campaign load: {} acknowledged, {} stops, {} requests refused while down",
        t.acked.len(),
        t.stopped,
        t.refused
    );
    println!(
        "  503 while unavailable: {} (without retry-after: {}), other 5xx: {}",
        t.unavailable_503, t.retry_after_missing, t.other_5xx
    );
    println!("  acknowledged but lost: {lost}; usage = sum over running within capacity: {exact}; queue drained: {drained} ({rounds} rounds)");
    println!(
        "  agents: {n_agents}, SIGKILLed and restarted {} times (paused {}); {} starts, {exited_events} exits, \
         {lost_events} lost, {rerun} deployments run again after a loss",
        pauses.len(),
        pauses
            .iter()
            .map(|(n, p)| format!("{n} {:.1} s", p.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", "),
        starts.values().sum::<usize>(),
    );
    println!(
        "  started twice at once: {}; status and placement disagree: {inconsistent}; the cluster's agents answer: {agents_answer} ({} listed)",
        twice.len(),
        listed.len()
    );
    println!(
        "  deployments by status/placement: {}",
        by_status
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for id in twice.iter().take(5) {
        println!("    started twice: {id}");
    }
    let ok = lost == 0
        && exact
        && drained
        && t.other_5xx == 0
        && t.retry_after_missing == 0
        && twice.is_empty()
        && inconsistent == 0
        && agents_answer;
    println!("  verdict: {}", if ok { "PASS" } else { "FAIL" });
    if !ok {
        std::process::exit(1);
    }
}
