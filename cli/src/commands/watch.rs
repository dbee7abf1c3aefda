//! `berth watch CLUSTER`: the cluster's changes as they happen, from its event stream
//! (`GET /v1/clusters/{id}/watch`), one line per event, or one JSON object per line with
//! `-o json`. A stream that breaks or that the server ends (its access token expired) is
//! opened again with `Last-Event-ID`, so no change is missed; a revoked access or a deleted
//! cluster ends the command.

use std::time::Duration;

use berth::http::wire::{Agent, Deployment, QueueEntry, UsageView};
use eventsource_stream::{Event, Eventsource};
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::{Ctx, Result};
use crate::args::Output;
use crate::error::CliError;
use crate::output::{self, wire_name};

/// Why a stream stopped, and what to do next.
enum Stopped {
    /// Broken or ended by the server for a reason a reconnect fixes.
    Reconnect,
    /// Over for good (revoked, or the cluster is gone), with the reason.
    Done(Option<String>),
}

pub async fn watch(ctx: &Ctx, cluster: &str) -> Result {
    let c = ctx.cluster(cluster).await?;
    let path = format!("/v1/clusters/{}/watch", c.id);
    let mut last: Option<String> = None;
    let mut failures = 0u32;
    loop {
        let resp = match ctx.client.stream(&path, last.as_deref()).await {
            Ok(resp) => resp,
            // Unreachable for now: try again, a little later each time.
            Err(CliError::Unreachable { .. }) if failures < 10 => {
                failures += 1;
                reconnecting(failures).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut events = resp.bytes_stream().eventsource();
        let stopped = loop {
            match events.next().await {
                Some(Ok(e)) => {
                    failures = 0;
                    if !e.id.is_empty() {
                        last = Some(e.id.clone());
                    }
                    if let Some(stop) = show(ctx.out, &e) {
                        break stop;
                    }
                }
                Some(Err(_)) | None => break Stopped::Reconnect,
            }
        };
        match stopped {
            Stopped::Reconnect => {
                failures += 1;
                if failures > 10 {
                    return Err(CliError::Other(
                        "the stream kept breaking; giving up after 10 tries".into(),
                    ));
                }
                reconnecting(failures).await;
            }
            Stopped::Done(Some(reason)) => return Err(CliError::Other(reason)),
            Stopped::Done(None) => return Ok(()),
        }
    }
}

async fn reconnecting(attempt: u32) {
    let wait = Duration::from_millis(250 * u64::from(attempt.min(8)));
    anstream::eprintln!(
        "(the stream broke; reconnecting in {:.1} s)",
        wait.as_secs_f64()
    );
    tokio::time::sleep(wait).await;
}

/// Prints one event; answers whether the stream is over.
fn show(out: Output, e: &Event) -> Option<Stopped> {
    let data: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
    let stop = match e.event.as_str() {
        // The server ends a stream whose access token expired: the next one has a fresh one.
        "end" => {
            let reason = data["reason"]
                .as_str()
                .unwrap_or("the server ended the stream");
            Some(if reason.contains("expired") {
                Stopped::Reconnect
            } else {
                Stopped::Done(Some(format!("the server ended the stream: {reason}")))
            })
        }
        "deleted" => Some(Stopped::Done(None)),
        _ => None,
    };
    if out == Output::Json {
        // One object per line (`output::json` is for one document, pretty).
        let line = json!({"event": e.event, "id": e.id, "data": data});
        anstream::println!("{line}");
        return stop;
    }
    let now = chrono::Utc::now().format("%H:%M:%S");
    match e.event.as_str() {
        "snapshot" => snapshot(&data),
        "deployment" => {
            if let Ok(d) = serde_json::from_value::<Deployment>(data.clone()) {
                let event = data["event"].as_str().unwrap_or("changed");
                anstream::println!("{now}  {event:<10} {}", deployment(&d));
            }
        }
        "usage" => {
            if let Ok(u) = serde_json::from_value::<UsageView>(data) {
                anstream::println!("{now}  {:<10} {}", "usage", usage(&u));
            }
        }
        "agent" => {
            if let Ok(a) = serde_json::from_value::<Agent>(data) {
                anstream::println!("{now}  {:<10} {} {}", "agent", a.name, a.status);
            }
        }
        "deleted" => anstream::println!("{now}  the cluster was deleted"),
        "end" => {}
        other => anstream::println!("{now}  {other}"),
    }
    stop
}

fn snapshot(data: &Value) {
    let name = data["cluster"]["name"].as_str().unwrap_or("?");
    anstream::println!("Watching {} (Ctrl-C stops).", output::bold(name));
    if let Ok(u) = serde_json::from_value::<UsageView>(data["usage"].clone()) {
        anstream::println!("  usage    {}", usage(&u));
    }
    let queue: Vec<QueueEntry> = serde_json::from_value(data["queue"].clone()).unwrap_or_default();
    for q in &queue {
        anstream::println!(
            "  queued   #{} {} ({}, {})",
            q.position,
            q.name,
            output::resources(&q.resources),
            wire_name(&q.reason)
        );
    }
    let agents: Vec<Agent> = serde_json::from_value(data["agents"].clone()).unwrap_or_default();
    for a in &agents {
        anstream::println!("  agent    {} {}", a.name, a.status);
    }
}

fn deployment(d: &Deployment) -> String {
    let mut line = format!("{} {}", output::clean(&d.name), output::status(d.status));
    if let Some(p) = d.position {
        line.push_str(&format!(" #{p}"));
    }
    if let Some(a) = &d.agent {
        line.push_str(&format!(" on {}", a.name));
    }
    if let Some(m) = &d.message {
        line.push_str(&format!(": {}", output::clean(m)));
    }
    format!("{line}  {}", d.id)
}

fn usage(u: &UsageView) -> String {
    let line = format!(
        "cpu {}/{}, memory {}/{}, gpus {}/{}; {} running, {} queued",
        output::cpu(u.allocated.cpu_millis),
        output::cpu(u.capacity.cpu_millis),
        output::memory(u.allocated.memory_mib),
        output::memory(u.capacity.memory_mib),
        u.allocated.gpus,
        u.capacity.gpus,
        u.running,
        u.queued,
    );
    if u.queued == 0 {
        return line;
    }
    format!("{line} asking {}", output::resources(&u.queued_demand))
}
