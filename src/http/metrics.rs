//! An organization's Prometheus metrics, in the text exposition format 0.0.4: the families
//! are built here and written by the `prometheus` crate's `TextEncoder` (its HELP and TYPE
//! lines, escaping, histogram series). The gauges are read at scrape time, the counters and
//! the queue-wait histogram from `cluster_counters`, which every committed batch adds to.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::TextEncoder;

use super::error::Problem;
use super::extract::{Caller, Ids};
use super::guard::{authorize_in, Declared};
use super::{ApiError, AppState};
use crate::db::agents;
use crate::db::counters::{self, Counted};
use crate::db::deployments::{self, Tally};
use crate::domain::deployment::Status;
use crate::domain::ids::{ClusterId, OrgId};
use crate::domain::resources::Resources;

/// The answer's media type: Prometheus' text format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What one scrape reads of an organization: its clusters with their capacity and counters
/// (by name), its deployments by cluster and status, and its connected agents by cluster.
#[derive(Debug, Default)]
pub struct Scrape {
    pub clusters: Vec<Counted>,
    pub tallies: Vec<Tally>,
    pub agents: Vec<(ClusterId, i64)>,
}

/// The organization's metrics for Prometheus. Role: viewer (an API key of any role too).
#[utoipa::path(get, path = "/v1/orgs/{org_id}/metrics", tag = "metrics",
    params(("org_id" = Uuid, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "Every cluster's capacity, allocation, queued demand, \
          deployments by status, counters, queue-wait histogram and connected agents, in \
          Prometheus' text format 0.0.4", body = String, content_type = CONTENT_TYPE),
        (status = 404, description = "Unknown, or not a member", body = Problem),
    ))]
pub async fn get_metrics(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids(org): Ids<OrgId>,
) -> Result<impl IntoResponse, ApiError> {
    let db = st.db().await?;
    // One round trip: the caller's standing and every read go out together; nothing read is
    // answered unless the caller may see it.
    let (_, clusters, tallies, agents) = tokio::try_join!(
        authorize_in(&st, &db, &caller, org, action, "organization"),
        async { Ok(counters::of_org(&db, org).await?) },
        async { Ok(deployments::tally_of_org(&db, org).await?) },
        async { Ok(agents::connected_of_org(&db, org).await?) },
    )?;
    let body = render(&Scrape {
        clusters,
        tallies,
        agents,
    })?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body))
}

/// The resources' label values, each in the unit its name says.
fn by_resource(r: &Resources) -> [(&'static str, i64); 3] {
    [
        ("cpu_millis", r.cpu_millis),
        ("memory_mib", r.memory_mib),
        ("gpus", r.gpus),
    ]
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| {
            let mut l = LabelPair::default();
            l.set_name((*name).into());
            l.set_value((*value).into());
            l
        })
        .collect()
}

fn gauge(pairs: &[(&str, &str)], value: i64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value as f64);
    let mut m = Metric::from_label(labels(pairs));
    m.set_gauge(g);
    m
}

fn counter(pairs: &[(&str, &str)], value: i64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value as f64);
    let mut m = Metric::from_label(labels(pairs));
    m.set_counter(c);
    m
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.into());
    f.set_help(help.into());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

/// One of a cluster's counts.
type Count = fn(&Counted) -> i64;

/// The counter families: (name, HELP, the count).
const COUNTERS: [(&str, &str, Count); 4] = [
    (
        "berth_admissions_total",
        "Deployments admitted (queued to running) since the cluster was created; a requeued \
         deployment admitted again counts again.",
        |c| c.counters.admissions,
    ),
    (
        "berth_preemptions_total",
        "Running deployments evicted for a higher-priority one and requeued.",
        |c| c.counters.preemptions,
    ),
    (
        "berth_expirations_total",
        "Running deployments failed for running past their max_runtime_seconds.",
        |c| c.counters.expirations,
    ),
    (
        "berth_lost_total",
        "Running deployments requeued because their agent stayed away past the cluster's grace.",
        |c| c.counters.lost,
    ),
];

/// The text of a scrape: every family with its samples, clusters in the order given (by
/// name); a family without samples (an organization without clusters) is left out.
pub fn render(s: &Scrape) -> Result<String, ApiError> {
    let tally: HashMap<(ClusterId, Status), &Tally> = s
        .tallies
        .iter()
        .map(|t| ((t.cluster, t.status), t))
        .collect();
    let held = |c: ClusterId, status: Status| {
        tally
            .get(&(c, status))
            .map_or(Resources::ZERO, |t| t.resources)
    };
    let agents: HashMap<ClusterId, i64> = s.agents.iter().copied().collect();
    let ids: Vec<String> = s.clusters.iter().map(|c| c.id.0.to_string()).collect();
    let clusters = || s.clusters.iter().zip(&ids);

    let per_resource = |of: &dyn Fn(&Counted) -> Resources| -> Vec<Metric> {
        clusters()
            .flat_map(|(c, id)| {
                by_resource(&of(c)).map(|(resource, value)| {
                    gauge(
                        &[
                            ("cluster_id", id),
                            ("cluster", &c.name),
                            ("resource", resource),
                        ],
                        value,
                    )
                })
            })
            .collect()
    };
    let mut families = vec![
        family(
            "berth_cluster_capacity",
            "What the cluster may allocate, by resource: cpu_millis (thousandths of a CPU), \
             memory_mib (MiB) or gpus.",
            MetricType::GAUGE,
            per_resource(&|c| c.capacity),
        ),
        family(
            "berth_cluster_allocated",
            "What the cluster's running deployments hold together, by resource (units as in \
             berth_cluster_capacity).",
            MetricType::GAUGE,
            per_resource(&|c| held(c.id, Status::Running)),
        ),
        family(
            "berth_cluster_queued_demand",
            "What the cluster's queued deployments ask for together, by resource (units as in \
             berth_cluster_capacity).",
            MetricType::GAUGE,
            per_resource(&|c| held(c.id, Status::Queued)),
        ),
        family(
            "berth_deployments",
            "The cluster's deployments in each status.",
            MetricType::GAUGE,
            clusters()
                .flat_map(|(c, id)| {
                    Status::ALL.map(|status| {
                        let n = tally.get(&(c.id, status)).map_or(0, |t| t.count);
                        gauge(&[("cluster_id", id), ("status", status.as_str())], n)
                    })
                })
                .collect(),
        ),
    ];
    for (name, help, count) in COUNTERS {
        let metrics = clusters()
            .map(|(c, id)| counter(&[("cluster_id", id)], count(c)))
            .collect();
        families.push(family(name, help, MetricType::COUNTER, metrics));
    }
    families.push(family(
        "berth_queue_wait_seconds",
        "How long each admitted deployment waited, from its submission to its admission; a \
         requeued deployment counts from its first submission.",
        MetricType::HISTOGRAM,
        clusters()
            .map(|(c, id)| histogram(&[("cluster_id", id)], c))
            .collect(),
    ));
    families.push(family(
        "berth_agents_connected",
        "Agents connected to the cluster now.",
        MetricType::GAUGE,
        clusters()
            .map(|(c, id)| {
                gauge(
                    &[("cluster_id", id)],
                    agents.get(&c.id).copied().unwrap_or(0),
                )
            })
            .collect(),
    ));
    families.retain(|f| !f.get_metric().is_empty());
    TextEncoder::new()
        .encode_to_string(&families)
        .map_err(|e| ApiError::Internal(format!("encoding the metrics: {e}")))
}

fn histogram(pairs: &[(&str, &str)], c: &Counted) -> Metric {
    let waits = &c.counters;
    let mut h = Histogram::default();
    h.set_bucket(
        waits
            .cumulative_waits()
            .into_iter()
            .map(|(bound, n)| {
                let mut b = Bucket::default();
                b.set_upper_bound(bound);
                b.set_cumulative_count(u64::try_from(n).unwrap_or(0));
                b
            })
            .collect(),
    );
    h.set_sample_count(u64::try_from(waits.wait_count()).unwrap_or(0));
    h.set_sample_sum(waits.wait_sum_micros as f64 / 1e6);
    let mut m = Metric::from_label(labels(pairs));
    m.set_histogram(h);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::counters::Counters;
    use uuid::Uuid;

    fn cluster(n: u128, name: &str, capacity: Resources, counters: Counters) -> Counted {
        Counted {
            id: ClusterId(Uuid::from_u128(n)),
            name: name.into(),
            capacity,
            counters,
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn an_organization_without_clusters_has_no_samples() {
        assert_eq!(render(&Scrape::default()).expect("render"), "");
    }

    #[test]
    fn every_family_has_help_type_and_a_sample_per_cluster() {
        let mut waits = Counters {
            admissions: 3,
            preemptions: 1,
            expirations: 2,
            lost: 4,
            ..Counters::default()
        };
        for micros in [50_000, 2_000_000, 7_200_000_000] {
            waits.observe_wait(micros);
        }
        let a = cluster(1, "gpu \"east\"", Resources::new(16_000, 65_536, 4), waits);
        let b = cluster(2, "idle", Resources::new(1000, 0, 0), Counters::default());
        let scrape = Scrape {
            tallies: vec![
                Tally {
                    cluster: a.id,
                    status: Status::Running,
                    count: 2,
                    resources: Resources::new(8000, 32_768, 2),
                },
                Tally {
                    cluster: a.id,
                    status: Status::Queued,
                    count: 1,
                    resources: Resources::new(500, 0, 1),
                },
                Tally {
                    cluster: a.id,
                    status: Status::Succeeded,
                    count: 7,
                    resources: Resources::ZERO,
                },
            ],
            agents: vec![(a.id, 2)],
            clusters: vec![a, b],
        };
        let text = render(&scrape).expect("render");
        let all = lines(&text);
        let a_id = "00000000-0000-0000-0000-000000000001";
        let b_id = "00000000-0000-0000-0000-000000000002";
        for (name, kind) in [
            ("berth_cluster_capacity", "gauge"),
            ("berth_cluster_allocated", "gauge"),
            ("berth_cluster_queued_demand", "gauge"),
            ("berth_deployments", "gauge"),
            ("berth_admissions_total", "counter"),
            ("berth_preemptions_total", "counter"),
            ("berth_expirations_total", "counter"),
            ("berth_lost_total", "counter"),
            ("berth_queue_wait_seconds", "histogram"),
            ("berth_agents_connected", "gauge"),
        ] {
            assert!(
                all.iter()
                    .any(|l| l.starts_with(&format!("# HELP {name} "))),
                "{name}: no HELP\n{text}"
            );
            assert!(
                all.contains(&format!("# TYPE {name} {kind}").as_str()),
                "{name}: no TYPE {kind}\n{text}"
            );
        }
        for expected in [
            format!(
                r#"berth_cluster_capacity{{cluster_id="{a_id}",cluster="gpu \"east\"",resource="cpu_millis"}} 16000"#
            ),
            format!(
                r#"berth_cluster_capacity{{cluster_id="{a_id}",cluster="gpu \"east\"",resource="memory_mib"}} 65536"#
            ),
            format!(
                r#"berth_cluster_allocated{{cluster_id="{a_id}",cluster="gpu \"east\"",resource="gpus"}} 2"#
            ),
            format!(
                r#"berth_cluster_queued_demand{{cluster_id="{a_id}",cluster="gpu \"east\"",resource="cpu_millis"}} 500"#
            ),
            format!(
                r#"berth_cluster_allocated{{cluster_id="{b_id}",cluster="idle",resource="cpu_millis"}} 0"#
            ),
            format!(r#"berth_deployments{{cluster_id="{a_id}",status="running"}} 2"#),
            format!(r#"berth_deployments{{cluster_id="{a_id}",status="succeeded"}} 7"#),
            format!(r#"berth_deployments{{cluster_id="{a_id}",status="cancelled"}} 0"#),
            format!(r#"berth_deployments{{cluster_id="{b_id}",status="queued"}} 0"#),
            format!(r#"berth_admissions_total{{cluster_id="{a_id}"}} 3"#),
            format!(r#"berth_preemptions_total{{cluster_id="{a_id}"}} 1"#),
            format!(r#"berth_expirations_total{{cluster_id="{a_id}"}} 2"#),
            format!(r#"berth_lost_total{{cluster_id="{a_id}"}} 4"#),
            format!(r#"berth_lost_total{{cluster_id="{b_id}"}} 0"#),
            format!(r#"berth_queue_wait_seconds_bucket{{cluster_id="{a_id}",le="0.1"}} 1"#),
            format!(r#"berth_queue_wait_seconds_bucket{{cluster_id="{a_id}",le="1"}} 1"#),
            format!(r#"berth_queue_wait_seconds_bucket{{cluster_id="{a_id}",le="5"}} 2"#),
            format!(r#"berth_queue_wait_seconds_bucket{{cluster_id="{a_id}",le="3600"}} 2"#),
            format!(r#"berth_queue_wait_seconds_bucket{{cluster_id="{a_id}",le="+Inf"}} 3"#),
            format!(r#"berth_queue_wait_seconds_sum{{cluster_id="{a_id}"}} 7202.05"#),
            format!(r#"berth_queue_wait_seconds_count{{cluster_id="{a_id}"}} 3"#),
            format!(r#"berth_queue_wait_seconds_count{{cluster_id="{b_id}"}} 0"#),
            format!(r#"berth_agents_connected{{cluster_id="{a_id}"}} 2"#),
            format!(r#"berth_agents_connected{{cluster_id="{b_id}"}} 0"#),
        ] {
            assert!(
                all.contains(&expected.as_str()),
                "missing {expected}\n{text}"
            );
        }
        // Six statuses per cluster, three resources per cluster and gauge family.
        let samples = |prefix: &str| all.iter().filter(|l| l.starts_with(prefix)).count();
        assert_eq!(samples("berth_deployments{"), 12);
        assert_eq!(samples("berth_cluster_capacity{"), 6);
        assert_eq!(samples("berth_queue_wait_seconds_bucket{"), 20);
    }
}
