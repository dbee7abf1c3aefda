//! What a watch stream carries, through the engine on a real database: the changes a watched
//! writer describes after each commit, and a new watcher's opening (a snapshot, or the events
//! it missed). The stream itself is served by the cluster's object (tests/e2e/watch.rs).

use berth::auth::Caller;
use berth::domain::ids::{ClusterId, UserId};
use berth::engine::{Changed, EngineError, Shown};
use berth::http::Platform;
use serde_json::json;

use crate::support::TestApp;

async fn setup() -> (TestApp, String, ClusterId, Caller) {
    let app = TestApp::spawn().await;
    let (admin, _) = app.user_as("admin@example.com").await;
    let org = app.org_id(&admin, "Acme").await;
    let body =
        json!({"name": "c", "capacity": {"cpu_millis": 1000, "memory_mib": 1024, "gpus": 0}});
    let cluster = ClusterId::parse(&app.cluster(&admin, &org, body).await).expect("id");
    let me = app.me(&admin).await;
    let user = UserId(
        me["user"]["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid"),
    );
    (app, admin, cluster, Caller::User(user))
}

fn job(cpu: i64) -> serde_json::Value {
    json!({"name": "j", "image": "nginx", "resources": {"cpu_millis": cpu, "memory_mib": 0, "gpus": 0}})
}

/// The cluster's event ids and kinds in commit order, as stored.
async fn stored(app: &TestApp, cluster: ClusterId) -> Vec<(i64, String)> {
    let (db, conn) = tokio_postgres::connect(&app.db_url, tokio_postgres::NoTls)
        .await
        .expect("db");
    tokio::spawn(conn);
    db.query(
        "select id, kind from deployment_events where cluster_id = $1 order by id",
        &[&cluster.0],
    )
    .await
    .expect("events")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[tokio::test]
async fn a_watched_writer_describes_every_committed_change_in_commit_order() {
    let (app, admin, cluster, _) = setup().await;
    let writer = app.platform.writer(cluster);
    // Unwatched, batches describe nothing.
    assert_eq!(
        app.deploy(&admin, &cluster.to_string(), job(600))
            .await
            .status,
        201
    );
    assert!(writer.take_changes().is_empty());

    writer.set_watched(true);
    assert_eq!(
        app.deploy(&admin, &cluster.to_string(), job(600))
            .await
            .status,
        201
    );
    let changes = writer.take_changes();
    let kinds: Vec<String> = changes
        .iter()
        .map(|c| match &c.what {
            Changed::Deployment { kind, position, .. } => format!("{}:{position:?}", kind.as_str()),
            Changed::Usage { usage, .. } => format!("usage:{}", usage.queued_demand.cpu_millis),
            other => format!("{other:?}"),
        })
        .collect();
    // The second waits at the head of the queue; its demand shows in the usage.
    assert_eq!(kinds, ["created:Some(1)", "usage:600"]);
    let events = stored(&app, cluster).await;
    assert_eq!(changes[0].event, events.last().expect("event").0);
    assert_eq!(
        changes[1].event, changes[0].event,
        "usage names the latest event"
    );
    assert!(changes.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert!(changes[0].seq >= 1);
}

#[tokio::test]
async fn a_new_watcher_gets_a_snapshot_or_the_events_it_missed() {
    let (app, admin, cluster, me) = setup().await;
    let writer = app.platform.writer(cluster);
    writer.set_watched(true);
    for cpu in [700, 700, 200] {
        assert_eq!(
            app.deploy(&admin, &cluster.to_string(), job(cpu))
                .await
                .status,
            201
        );
    }
    let last_seq = writer.take_changes().last().expect("changes").seq;
    let events = stored(&app, cluster).await;
    let open = |after| {
        let (writer, me) = (writer.clone(), me.clone());
        let platform = app.platform.clone();
        async move {
            writer
                .open_watch(
                    cluster,
                    &me,
                    after,
                    || platform.connect(),
                    chrono::Utc::now(),
                )
                .await
        }
    };
    // No id, an unknown one: the cluster now.
    for after in [None, Some(0), Some(i64::MAX)] {
        let opening = open(after).await.expect("opening");
        assert_eq!(opening.seq, last_seq, "{after:?}");
        match opening.shown {
            Shown::Snapshot {
                event,
                usage,
                queue,
                ..
            } => {
                assert_eq!(event, events.last().expect("event").0);
                assert_eq!(usage.allocated.cpu_millis, 900);
                assert_eq!(queue.len(), 1, "one waits");
            }
            other => panic!("{after:?}: {other:?}"),
        }
    }
    // The first event's id: every later one, then the usage.
    let opening = open(Some(events[0].0)).await.expect("opening");
    let Shown::Missed(missed) = opening.shown else {
        panic!("a replay");
    };
    let replayed: Vec<(i64, &str)> = missed
        .iter()
        .filter_map(|c| match &c.what {
            Changed::Deployment { kind, .. } => Some((c.event, kind.as_str())),
            _ => None,
        })
        .collect();
    let want: Vec<(i64, &str)> = events[1..].iter().map(|(i, k)| (*i, k.as_str())).collect();
    assert_eq!(replayed, want);
    assert!(matches!(
        missed.last().map(|c| &c.what),
        Some(Changed::Usage { .. })
    ));

    // An outsider learns nothing of the cluster.
    let (outsider, _) = app.user_as("out@example.com").await;
    let out = app.me(&outsider).await;
    let out = Caller::User(UserId(
        out["user"]["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid"),
    ));
    let refused = writer
        .open_watch(
            cluster,
            &out,
            None,
            || app.platform.connect(),
            chrono::Utc::now(),
        )
        .await;
    assert!(
        matches!(refused, Err(EngineError::NotFound(_))),
        "{refused:?}"
    );
}
