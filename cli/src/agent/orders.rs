//! The server's orders carried out on the [`Driver`], and the reports they yield: `run`
//! answered by `started` (or by `exited` alone when the deployment never ran), `stop` by the
//! `exited` that follows, `forget` by nothing (what is left of the deployment goes).
//!
//! Nothing here waits on the driver in the caller's stead: each start, stop and removal is a
//! task of its own whose result comes back on a channel, so that the connection keeps
//! reading frames and pinging while an image is pulled or a deployment is given its grace.
//! [`Orders::step`] is where those results, and the driver's exits, become reports.
//!
//! Every exit is kept, unacknowledged, until the server's `forget`: it is reported when it
//! happens, listed in the next hello (`exited`) and reported again after the welcome, across
//! any number of reconnections. The exits the driver finds at start ([`Driver::reconcile`]:
//! those of an earlier agent, say) join them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use berth::domain::agent::protocol::{MAX_RUNNING, VERSION};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::connection::{clean, log};
use super::driver::{
    tail_output, DeploymentId, Driver, DriverError, Exit, ExitReceiver, RunSpec, OUTPUT_LIMIT,
};

/// A report for the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// A `run` order's deployment is running.
    Started(DeploymentId),
    /// A deployment ended (or never ran).
    Exited(Exit),
}

impl Report {
    /// As the text frame to send.
    pub fn to_text(&self) -> String {
        match self {
            Report::Started(id) => json!({"v": VERSION, "type": "started", "deployment_id": id}),
            Report::Exited(exit) => {
                let mut m = json!({
                    "v": VERSION,
                    "type": "exited",
                    "deployment_id": exit.deployment_id,
                    "exit_code": exit.exit_code,
                    "output": exit.output,
                });
                if exit.abandoned {
                    m["abandoned"] = json!(true);
                }
                m
            }
        }
        .to_string()
    }
}

/// What a driver task came back with.
#[derive(Debug)]
enum Done {
    Start(DeploymentId, Result<(), DriverError>),
    /// `Ok(false)`: the deployment was not running here.
    Stop(DeploymentId, Result<bool, DriverError>),
    Forget(DeploymentId, Result<(), DriverError>),
}

/// The agent's deployments as the server sees them, across reconnections.
pub struct Orders {
    driver: Arc<dyn Driver>,
    /// The driver's exits as they happen; `None` once the driver has dropped its end.
    exits: Option<ExitReceiver>,
    /// Exits the server has not yet acknowledged with `forget`.
    unacknowledged: BTreeMap<DeploymentId, Exit>,
    /// Deployments whose start is under way.
    starting: HashSet<DeploymentId>,
    /// Stops that came while their deployment was starting: sent once it has started.
    stop_after_start: HashMap<DeploymentId, Duration>,
    /// Reports to hand out before anything else.
    ready: VecDeque<Report>,
    /// Whether the driver's `reconcile` has answered (it is asked again until it has).
    reconciled: bool,
    /// How long the server lets this agent stay away before its deployments go elsewhere
    /// (from the last welcome).
    pub away_grace: Option<Duration>,
    /// Deployments it stops itself, away from the server too long: their exits say so.
    abandoning: HashSet<DeploymentId>,
    tasks: JoinSet<()>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
}

impl Orders {
    /// Takes the driver's exit channel, for good, and the exits it has kept
    /// ([`Driver::reconcile`]).
    pub async fn new(driver: Arc<dyn Driver>) -> Result<Self, String> {
        let exits = driver
            .take_exits()
            .ok_or("the driver's exits are already being read elsewhere")?;
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let mut orders = Orders {
            driver,
            exits: Some(exits),
            unacknowledged: BTreeMap::new(),
            starting: HashSet::new(),
            stop_after_start: HashMap::new(),
            ready: VecDeque::new(),
            reconciled: false,
            away_grace: None,
            abandoning: HashSet::new(),
            tasks: JoinSet::new(),
            done_tx,
            done_rx,
        };
        orders.reconcile().await;
        Ok(orders)
    }

    async fn reconcile(&mut self) {
        if self.reconciled {
            return;
        }
        match self.driver.reconcile().await {
            Ok(exits) => {
                self.reconciled = true;
                for exit in exits {
                    self.exited(exit);
                }
            }
            Err(e) => log(format_args!(
                "cannot look for the exits this machine kept: {e} (trying again at the next \
                 connection)"
            )),
        }
    }

    /// The hello's `running` and `exited` lists, from what the driver runs now and the
    /// exits not yet acknowledged ([`hello_lists`]). Reports not yet handed out are dropped:
    /// the lists say it all, and the unacknowledged exits follow the welcome
    /// ([`Orders::unacknowledged`]).
    pub async fn hello_lists(
        &mut self,
    ) -> Result<(Vec<DeploymentId>, Vec<DeploymentId>), DriverError> {
        self.reconcile().await;
        self.drain();
        let running = self.driver.running().await?;
        // An exit that came meanwhile is in `exited`, whichever list `running` put it in.
        self.drain();
        self.ready.clear();
        Ok(hello_lists(running, &self.unacknowledged))
    }

    /// The `exited` reports to send after a welcome.
    pub fn unacknowledged(&self) -> Vec<Report> {
        self.unacknowledged
            .values()
            .cloned()
            .map(Report::Exited)
            .collect()
    }

    /// The ids of the exits not yet acknowledged.
    pub fn unacknowledged_ids(&self) -> Vec<DeploymentId> {
        self.unacknowledged.keys().copied().collect()
    }

    /// A `run` order: starts the deployment unless it is starting already; one that has
    /// ended, its exit not yet acknowledged, is answered with that exit again.
    pub fn run(&mut self, spec: RunSpec) {
        let id = spec.deployment_id;
        if let Some(exit) = self.unacknowledged.get(&id) {
            log(format_args!(
                "run {id}: it has already exited; reporting it again"
            ));
            self.ready.push_back(Report::Exited(exit.clone()));
            return;
        }
        if !self.starting.insert(id) {
            return;
        }
        log(format_args!("starting {id} ({})", clean(&spec.image, 200)));
        let driver = self.driver.clone();
        let done = self.done_tx.clone();
        self.tasks.spawn(async move {
            let result = driver.start(&spec).await;
            let _ = done.send(Done::Start(id, result));
        });
    }

    /// A `stop` order: SIGTERM, then SIGKILL after `grace`; the exit comes as any other.
    pub fn stop(&mut self, id: DeploymentId, grace: Duration) {
        if self.unacknowledged.contains_key(&id) {
            log(format_args!("stop {id}: it has already exited"));
            return;
        }
        if self.starting.contains(&id) {
            self.stop_after_start.insert(id, grace);
            log(format_args!("stop {id}: stopping it once it has started"));
            return;
        }
        let driver = self.driver.clone();
        let done = self.done_tx.clone();
        self.tasks.spawn(async move {
            let result = match driver.running().await {
                Ok(running) if !running.contains(&id) => Ok(false),
                Ok(_) => {
                    log(format_args!(
                        "stopping {id} (SIGTERM, then SIGKILL after {} s)",
                        grace.as_secs()
                    ));
                    driver.stop(id, grace).await.map(|()| true)
                }
                Err(e) => Err(e),
            };
            let _ = done.send(Done::Stop(id, result));
        });
    }

    /// Stops everything the driver runs (the agent has been away too long); answers how many.
    /// Their exits are reported at the next connection, as any other.
    pub async fn stop_all(&mut self, grace: Duration) -> usize {
        let running = match self.driver.running().await {
            Ok(r) => r,
            Err(e) => {
                log(format_args!("cannot list what runs here to stop it: {e}"));
                return 0;
            }
        };
        let n = running.len();
        for id in running {
            self.abandoning.insert(id);
            self.stop(id, grace);
        }
        n
    }

    /// A `forget` order: the exit is recorded by the server; what is left of the deployment
    /// goes.
    pub fn forget(&mut self, id: DeploymentId) {
        self.unacknowledged.remove(&id);
        self.stop_after_start.remove(&id);
        let driver = self.driver.clone();
        let done = self.done_tx.clone();
        self.tasks.spawn(async move {
            let result = driver.forget(id).await;
            let _ = done.send(Done::Forget(id, result));
        });
    }

    /// Waits for the next exit or driver result and records it; `Some` when the server is
    /// to be told. Safe to cancel (a `select!` branch): what has been received is recorded.
    pub async fn step(&mut self) -> Option<Report> {
        if let Some(report) = self.ready.pop_front() {
            return Some(report);
        }
        while self.tasks.try_join_next().is_some() {}
        // Exits first: a start that failed sends its exit before its result comes back.
        tokio::select! {
            biased;
            exit = recv(&mut self.exits) => match exit {
                Some(exit) => self.exited(exit),
                None => {
                    self.exits = None;
                    None
                }
            },
            done = self.done_rx.recv() => match done {
                Some(done) => self.done(done),
                None => None,
            },
        }
    }

    /// Records what is ready now without reporting it (the hello will say it).
    fn drain(&mut self) {
        while let Some(exit) = self.exits.as_mut().and_then(|rx| rx.try_recv().ok()) {
            self.exited(exit);
        }
        while let Ok(done) = self.done_rx.try_recv() {
            self.done(done);
        }
        while let Some(exit) = self.exits.as_mut().and_then(|rx| rx.try_recv().ok()) {
            self.exited(exit);
        }
    }

    fn exited(&mut self, exit: Exit) -> Option<Report> {
        let mut exit = bounded(exit);
        exit.abandoned |= self.abandoning.remove(&exit.deployment_id);
        let id = exit.deployment_id;
        match exit.exit_code {
            Some(code) => log(format_args!("exited {id} with code {code}")),
            None => log(format_args!(
                "{id} did not run: {}",
                first_line(&exit.output)
            )),
        }
        self.stop_after_start.remove(&id);
        self.unacknowledged.insert(id, exit.clone());
        Some(Report::Exited(exit))
    }

    fn done(&mut self, done: Done) -> Option<Report> {
        match done {
            Done::Start(id, Ok(())) => {
                self.starting.remove(&id);
                // Its exit came first (it could not be pulled, say): that is the report.
                if self.unacknowledged.contains_key(&id) {
                    return None;
                }
                log(format_args!("started {id}"));
                if let Some(grace) = self.stop_after_start.remove(&id) {
                    self.stop(id, grace);
                }
                Some(Report::Started(id))
            }
            Done::Start(id, Err(e)) => {
                self.starting.remove(&id);
                self.stop_after_start.remove(&id);
                let why = format!("the agent cannot run it: {e}");
                log(format_args!("cannot start {id}: {}", first_line(&why)));
                let exit = Exit {
                    deployment_id: id,
                    exit_code: None,
                    output: cut(why, OUTPUT_LIMIT),
                    abandoned: false,
                };
                self.unacknowledged.insert(id, exit.clone());
                Some(Report::Exited(exit))
            }
            Done::Stop(id, Ok(false)) => {
                log(format_args!("stop {id}: it is not running here"));
                None
            }
            Done::Stop(_, Ok(true)) => None,
            Done::Stop(id, Err(e)) => {
                log(format_args!("cannot stop {id}: {e}"));
                None
            }
            Done::Forget(id, Ok(())) => {
                log(format_args!("forgot {id}"));
                None
            }
            Done::Forget(id, Err(e)) => {
                log(format_args!("cannot forget {id}: {e}"));
                None
            }
        }
    }

    /// Ends the driver tasks still under way (the agent is stopping), so that nothing holds
    /// the driver any longer.
    pub async fn shutdown(&mut self) {
        self.tasks.shutdown().await;
    }
}

async fn recv(exits: &mut Option<ExitReceiver>) -> Option<Exit> {
    match exits {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The hello's lists: `running` without the deployments whose exit is unacknowledged, and
/// those as `exited`; together at most [`MAX_RUNNING`] ids (the running ones first: a
/// deployment the hello leaves out of `running` counts as lost, one left out of `exited` is
/// still reported after the welcome).
pub fn hello_lists(
    running: Vec<DeploymentId>,
    unacknowledged: &BTreeMap<DeploymentId, Exit>,
) -> (Vec<DeploymentId>, Vec<DeploymentId>) {
    let mut seen = HashSet::new();
    let mut running: Vec<DeploymentId> = running
        .into_iter()
        .filter(|id| !unacknowledged.contains_key(id) && seen.insert(*id))
        .collect();
    running.truncate(MAX_RUNNING);
    let exited = unacknowledged
        .keys()
        .copied()
        .take(MAX_RUNNING - running.len())
        .collect();
    (running, exited)
}

/// The hello, with [`hello_lists`]' lists.
pub fn hello(
    name: &str,
    capacity: &berth::domain::resources::Resources,
    running: &[DeploymentId],
    exited: &[DeploymentId],
) -> Value {
    json!({
        "v": VERSION,
        "type": "hello",
        "agent": {"name": name, "version": env!("CARGO_PKG_VERSION")},
        "capacity": capacity,
        "running": running,
        "exited": exited,
    })
}

/// The exit with its output at most [`OUTPUT_LIMIT`] bytes (its last lines).
fn bounded(mut exit: Exit) -> Exit {
    if exit.output.len() > OUTPUT_LIMIT {
        exit.output = tail_output(exit.output.as_bytes(), OUTPUT_LIMIT);
    }
    exit
}

/// The start of `text`, at most `limit` bytes, cut on a character boundary.
fn cut(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The first non-empty line of an output, as a log line shows it.
fn first_line(output: &str) -> String {
    let line = output
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no reason given");
    clean(line, 200)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::exec::ExecDriver;
    use async_trait::async_trait;
    use berth::domain::agent::protocol::{self, AgentMessage};
    use berth::domain::resources::Resources;
    use std::sync::Mutex;
    use tokio::time::timeout;

    const IN_TIME: Duration = Duration::from_secs(10);

    fn sh(script: &str) -> RunSpec {
        RunSpec {
            deployment_id: DeploymentId::new(),
            image: String::new(),
            resources: Resources::new(100, 64, 0),
            command: Some(vec!["sh".into(), "-c".into(), script.into()]),
            env: Default::default(),
        }
    }

    async fn exec() -> (Orders, Arc<ExecDriver>) {
        let driver = Arc::new(ExecDriver::new());
        let orders = Orders::new(driver.clone()).await.expect("orders");
        (orders, driver)
    }

    /// The next report, skipping results that yield none.
    async fn report(orders: &mut Orders) -> Report {
        timeout(IN_TIME, async {
            loop {
                if let Some(r) = orders.step().await {
                    return r;
                }
            }
        })
        .await
        .expect("a report in time")
    }

    /// No report within `wait` (results that yield none may come).
    async fn no_report(orders: &mut Orders, wait: Duration) {
        let got = timeout(wait, async {
            loop {
                if let Some(r) = orders.step().await {
                    return r;
                }
            }
        })
        .await;
        assert!(got.is_err(), "unexpected {got:?}");
    }

    fn exit_of(report: Report) -> Exit {
        match report {
            Report::Exited(exit) => exit,
            other => panic!("not an exit: {other:?}"),
        }
    }

    #[tokio::test]
    async fn run_is_answered_by_started_then_exited_with_its_code() {
        let (mut orders, _driver) = exec().await;
        let spec = sh("sleep 0.3; echo hi; exit 3");
        let id = spec.deployment_id;
        orders.run(spec);
        assert_eq!(report(&mut orders).await, Report::Started(id));
        assert_eq!(
            orders.hello_lists().await.expect("lists"),
            (vec![id], vec![])
        );
        let exit = exit_of(report(&mut orders).await);
        assert_eq!(
            exit,
            Exit {
                deployment_id: id,
                exit_code: Some(3),
                output: "hi\n".into(),
                abandoned: false
            }
        );
        // Kept, across any number of hellos, until `forget`.
        for _ in 0..2 {
            assert_eq!(
                orders.hello_lists().await.expect("lists"),
                (vec![], vec![id])
            );
            assert_eq!(orders.unacknowledged(), vec![Report::Exited(exit.clone())]);
        }
    }

    #[tokio::test]
    async fn stop_ends_it_by_sigterm() {
        let (mut orders, driver) = exec().await;
        let spec = sh("sleep 30");
        let id = spec.deployment_id;
        orders.run(spec);
        assert_eq!(report(&mut orders).await, Report::Started(id));
        let asked = std::time::Instant::now();
        orders.stop(id, Duration::from_secs(5));
        let exit = exit_of(report(&mut orders).await);
        assert_eq!((exit.deployment_id, exit.exit_code), (id, Some(143)));
        assert!(asked.elapsed() < Duration::from_secs(5), "not by SIGKILL");
        assert!(driver.running().await.expect("running").is_empty());
        // A stop of what has ended, or of what is not here, changes nothing.
        orders.stop(id, Duration::from_secs(5));
        orders.stop(DeploymentId::new(), Duration::from_secs(5));
        no_report(&mut orders, Duration::from_millis(300)).await;
        assert_eq!(orders.unacknowledged_ids(), vec![id]);
    }

    /// Reports until the deployment's exit; whether it was seen to start first.
    async fn until_exit(orders: &mut Orders, id: DeploymentId) -> (bool, Exit) {
        let mut started = false;
        loop {
            match report(orders).await {
                Report::Started(i) if i == id && !started => started = true,
                Report::Exited(exit) if exit.deployment_id == id => return (started, exit),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn forget_drops_the_exit_and_the_deployment() {
        let dir = tempfile::tempdir().expect("a directory");
        let runs = dir.path().join("runs");
        let spec = sh(&format!("echo run >> '{}'", runs.display()));
        let id = spec.deployment_id;
        let (mut orders, _driver) = exec().await;
        orders.run(spec.clone());
        assert_eq!(until_exit(&mut orders, id).await.1.exit_code, Some(0));
        orders.forget(id);
        assert!(orders.unacknowledged().is_empty());
        // The driver's removal comes back without a report.
        let removed = timeout(IN_TIME, orders.step()).await.expect("in time");
        assert_eq!(removed, None);
        assert_eq!(orders.hello_lists().await.expect("lists"), (vec![], vec![]));
        // The driver has forgotten it too: the same order runs it anew.
        orders.run(spec);
        assert_eq!(until_exit(&mut orders, id).await.1.exit_code, Some(0));
        assert_eq!(std::fs::read_to_string(&runs).expect("runs"), "run\nrun\n");
    }

    #[tokio::test]
    async fn run_twice_runs_one_process() {
        let dir = tempfile::tempdir().expect("a directory");
        let log = dir.path().join("runs");
        let spec = sh(&format!("echo run >> '{}'; sleep 30", log.display()));
        let id = spec.deployment_id;
        let (mut orders, driver) = exec().await;
        orders.run(spec.clone());
        orders.run(spec.clone());
        assert_eq!(report(&mut orders).await, Report::Started(id));
        no_report(&mut orders, Duration::from_millis(300)).await;
        // Once it runs, the order again is answered as the truth: it has started.
        orders.run(spec);
        assert_eq!(report(&mut orders).await, Report::Started(id));
        assert_eq!(driver.running().await.expect("running"), vec![id]);
        assert_eq!(
            std::fs::read_to_string(&log).expect("the log"),
            "run\n",
            "one process"
        );
        orders.stop(id, Duration::from_secs(5));
        assert_eq!(exit_of(report(&mut orders).await).exit_code, Some(143));
    }

    #[tokio::test]
    async fn what_never_ran_is_reported_exited_only() {
        let (mut orders, _driver) = exec().await;
        let mut spec = sh("");
        spec.command = None;
        let id = spec.deployment_id;
        orders.run(spec.clone());
        let exit = exit_of(report(&mut orders).await);
        assert_eq!((exit.deployment_id, exit.exit_code), (id, None));
        assert!(exit.output.contains("command"), "{exit:?}");
        no_report(&mut orders, Duration::from_millis(300)).await;
        // Ordered again before `forget`: the same exit again, nothing started.
        orders.run(spec);
        assert_eq!(report(&mut orders).await, Report::Exited(exit));
        no_report(&mut orders, Duration::from_millis(300)).await;
    }

    /// A driver whose answers the test sets: a daemon out of reach, a slow start.
    #[derive(Default)]
    struct Scripted {
        start_delay: Duration,
        start_error: Option<String>,
        reconcile: Mutex<Vec<Result<Vec<Exit>, String>>>,
        running: Mutex<Vec<DeploymentId>>,
        stops: Mutex<Vec<DeploymentId>>,
        tx: Mutex<Option<mpsc::UnboundedSender<Exit>>>,
        rx: Mutex<Option<ExitReceiver>>,
    }

    impl Scripted {
        fn new() -> Self {
            let (tx, rx) = mpsc::unbounded_channel();
            Scripted {
                tx: Mutex::new(Some(tx)),
                rx: Mutex::new(Some(rx)),
                ..Default::default()
            }
        }
    }

    #[async_trait]
    impl Driver for Scripted {
        async fn start(&self, spec: &RunSpec) -> Result<(), DriverError> {
            tokio::time::sleep(self.start_delay).await;
            if let Some(e) = &self.start_error {
                return Err(DriverError::Docker(e.clone()));
            }
            self.running.lock().expect("lock").push(spec.deployment_id);
            Ok(())
        }
        async fn stop(&self, id: DeploymentId, _: Duration) -> Result<(), DriverError> {
            self.stops.lock().expect("lock").push(id);
            self.running.lock().expect("lock").retain(|r| *r != id);
            let exit = Exit {
                deployment_id: id,
                exit_code: Some(143),
                output: String::new(),
                abandoned: false,
            };
            if let Some(tx) = &*self.tx.lock().expect("lock") {
                let _ = tx.send(exit);
            }
            Ok(())
        }
        async fn running(&self) -> Result<Vec<DeploymentId>, DriverError> {
            Ok(self.running.lock().expect("lock").clone())
        }
        async fn reconcile(&self) -> Result<Vec<Exit>, DriverError> {
            let mut answers = self.reconcile.lock().expect("lock");
            if answers.is_empty() {
                return Ok(vec![]);
            }
            answers.remove(0).map_err(DriverError::Docker)
        }
        async fn forget(&self, _: DeploymentId) -> Result<(), DriverError> {
            Ok(())
        }
        fn take_exits(&self) -> Option<ExitReceiver> {
            self.rx.lock().expect("lock").take()
        }
    }

    #[tokio::test]
    async fn a_driver_error_is_an_exit_without_code_and_bounded_output() {
        let mut driver = Scripted::new();
        driver.start_error = Some(format!("cannot reach the daemon {}", "é".repeat(5000)));
        let mut orders = Orders::new(Arc::new(driver)).await.expect("orders");
        let spec = sh("true");
        let id = spec.deployment_id;
        orders.run(spec);
        let exit = exit_of(report(&mut orders).await);
        assert_eq!((exit.deployment_id, exit.exit_code), (id, None));
        assert!(exit.output.contains("cannot reach the daemon"), "{exit:?}");
        assert!(exit.output.len() <= OUTPUT_LIMIT);
        // As the server reads it.
        let Ok(AgentMessage::Exited(read)) = protocol::parse(&Report::Exited(exit).to_text())
        else {
            panic!("a valid exited report");
        };
        assert_eq!(read.exit_code, None);
        assert_eq!(
            orders.hello_lists().await.expect("lists"),
            (vec![], vec![id])
        );
    }

    #[tokio::test]
    async fn a_driver_s_output_is_bounded_too() {
        let driver = Arc::new(Scripted::new());
        let mut orders = Orders::new(driver.clone()).await.expect("orders");
        let id = DeploymentId::new();
        let tx = driver.tx.lock().expect("lock").clone().expect("sender");
        let output: String = (0..2000).map(|i| format!("line {i}\n")).collect();
        tx.send(Exit {
            deployment_id: id,
            exit_code: Some(1),
            output,
            abandoned: false,
        })
        .expect("sent");
        let exit = exit_of(report(&mut orders).await);
        assert!(exit.output.len() <= OUTPUT_LIMIT);
        assert!(exit.output.ends_with("line 1999\n"));
    }

    #[tokio::test]
    async fn exits_kept_by_the_driver_join_the_unacknowledged_and_reconcile_is_retried() {
        let kept = Exit {
            deployment_id: DeploymentId::new(),
            exit_code: Some(0),
            output: "done\n".into(),
            abandoned: false,
        };
        let driver = Scripted::new();
        *driver.reconcile.lock().expect("lock") =
            vec![Err("daemon not answering".into()), Ok(vec![kept.clone()])];
        let running = DeploymentId::new();
        driver.running.lock().expect("lock").push(running);
        let mut orders = Orders::new(Arc::new(driver)).await.expect("orders");
        assert!(orders.unacknowledged().is_empty());
        // The next hello asks again.
        assert_eq!(
            orders.hello_lists().await.expect("lists"),
            (vec![running], vec![kept.deployment_id])
        );
        assert_eq!(orders.unacknowledged(), vec![Report::Exited(kept)]);
    }

    #[tokio::test]
    async fn a_stop_while_starting_comes_after_the_start() {
        let mut driver = Scripted::new();
        driver.start_delay = Duration::from_millis(200);
        let driver = Arc::new(driver);
        let mut orders = Orders::new(driver.clone()).await.expect("orders");
        let spec = sh("sleep 30");
        let id = spec.deployment_id;
        orders.run(spec.clone());
        orders.stop(id, Duration::from_secs(1));
        // The loop is not held up meanwhile: a second run is taken at once, and ignored.
        orders.run(spec);
        assert_eq!(report(&mut orders).await, Report::Started(id));
        let exit = exit_of(report(&mut orders).await);
        assert_eq!((exit.deployment_id, exit.exit_code), (id, Some(143)));
        assert_eq!(*driver.stops.lock().expect("lock"), vec![id]);
        no_report(&mut orders, Duration::from_millis(300)).await;
    }

    #[test]
    fn the_hello_lists_running_without_the_unacknowledged_and_stays_bounded() {
        let [a, b, c] = [(); 3].map(|()| DeploymentId::new());
        let exit = |id| Exit {
            deployment_id: id,
            exit_code: Some(0),
            output: String::new(),
            abandoned: false,
        };
        let unack = BTreeMap::from([(b, exit(b)), (c, exit(c))]);
        let (running, exited) = hello_lists(vec![a, b, a], &unack);
        assert_eq!(running, vec![a]);
        let mut want = vec![b, c];
        want.sort();
        assert_eq!(exited, want);

        let many: Vec<DeploymentId> = (0..MAX_RUNNING + 5).map(|_| DeploymentId::new()).collect();
        let (running, exited) = hello_lists(many.clone(), &unack);
        assert_eq!((running.len(), exited.len()), (MAX_RUNNING, 0));
        let (running, exited) = hello_lists(many[..MAX_RUNNING - 1].to_vec(), &unack);
        assert_eq!((running.len(), exited.len()), (MAX_RUNNING - 1, 1));

        // The server reads it as a hello.
        let text = hello("rack-7", &Resources::new(2000, 1024, 0), &[a], &[b]).to_string();
        let Ok(AgentMessage::Hello(h)) = protocol::parse(&text) else {
            panic!("a valid hello: {text}");
        };
        assert_eq!((h.running, h.exited), (vec![a], vec![b]));
    }

    #[test]
    fn reports_are_what_the_server_reads() {
        let id = DeploymentId::new();
        assert_eq!(
            protocol::parse(&Report::Started(id).to_text()),
            Ok(AgentMessage::Started { deployment_id: id })
        );
        let exit = Exit {
            deployment_id: id,
            exit_code: Some(143),
            output: "bye\n".into(),
            abandoned: false,
        };
        assert_eq!(
            protocol::parse(&Report::Exited(exit.clone()).to_text()),
            Ok(AgentMessage::Exited(exit))
        );
        assert_eq!(cut("é".repeat(10), 5), "éé");
        assert_eq!(
            first_line("\n  pull failed\u{1b}[2J\nmore"),
            "pull failed\\u{1b}[2J"
        );
    }
}
