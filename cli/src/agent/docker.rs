//! The Docker driver: one container per deployment, through the Docker Engine API on a unix
//! socket (bollard).
//!
//! The container is named `berth-<deployment id>` and labelled `berth.deployment=<id>`, so a
//! second start finds it and a new driver (after an agent restart) finds every deployment
//! again, running or ended: Docker keeps an ended container, its exit code and its logs until
//! [`Driver::forget`] removes it. It has no network, CPU and memory limits from the spec's
//! resources, and GPUs through the NVIDIA device request when it asks for any. An image is
//! pulled only when missing; a deployment whose image cannot be pulled, or whose container
//! Docker refuses, ends as an [`Exit`] without an exit code that says why. Those are kept in
//! memory only (there is no container to find again); the server sends the order again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, DeviceRequest,
    HostConfig, HostConfigLogConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, KillContainerOptions,
    ListContainersOptions, LogsOptions, RemoveContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::driver::{DeploymentId, Driver, DriverError, Exit, ExitReceiver, OutputTail, RunSpec};

/// The label that marks a container as a deployment's, with the deployment's id.
pub const LABEL: &str = "berth.deployment";
/// The label that names the agent that started it: agents sharing a daemon each find only
/// their own containers.
pub const AGENT_LABEL: &str = "berth.agent";

/// The container's name for a deployment.
pub fn container_name(id: DeploymentId) -> String {
    format!("berth-{id}")
}

/// Seconds a request to the daemon may take (a wait on a running container is renewed).
const TIMEOUT: u64 = 120;
/// How long a stop waits after SIGKILL before it gives up.
const AFTER_KILL: Duration = Duration::from_secs(30);
/// Log lines read for an exit's output (then cut to its byte limit).
const LOG_LINES: &str = "500";

pub struct DockerDriver {
    docker: Docker,
    /// The agent's name, on every container it starts ([`AGENT_LABEL`]).
    owner: String,
    shared: Arc<Shared>,
    exits: Mutex<Option<ExitReceiver>>,
}

struct Shared {
    state: Mutex<State>,
    tx: mpsc::UnboundedSender<Exit>,
}

#[derive(Default)]
struct State {
    /// Deployments whose exit this instance has handed out (channel or reconcile).
    handed_out: HashSet<DeploymentId>,
    /// Deployments that never became a running container, with their exit.
    failed: HashMap<DeploymentId, Exit>,
    /// A task per watched container, waiting for it to end.
    watchers: HashMap<DeploymentId, JoinHandle<()>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands an exit out on the channel unless this instance already has; kept for
    /// `reconcile` when nobody listens.
    fn offer(&self, exit: Exit) {
        let mut state = self.state();
        if !state.handed_out.contains(&exit.deployment_id) && self.tx.send(exit.clone()).is_ok() {
            state.handed_out.insert(exit.deployment_id);
        }
    }
}

fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// What the daemon said, without bollard's wrapping.
fn message_of(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        DockerError::DockerStreamError { error } => error.trim().to_string(),
        other => other.to_string(),
    }
}

fn docker_error(what: &str, e: DockerError) -> DriverError {
    DriverError::Docker(format!("{what}: {}", message_of(&e)))
}

/// Whether a failure is the daemon's answer about this request (the request is at fault)
/// rather than the daemon being out of reach.
fn answered(e: &DockerError) -> bool {
    status_of(e).is_some() || matches!(e, DockerError::DockerStreamError { .. })
}

/// The reference with `:latest` added when it names neither a tag nor a digest, as
/// `docker pull` does (the API would otherwise pull every tag).
fn with_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// The container's state as the driver sees it.
#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Created, never started (an agent stopped between the two).
    Created,
    Running,
    Ended,
}

fn phase(info: &ContainerInspectResponse) -> Phase {
    match info.state.as_ref().and_then(|s| s.status) {
        Some(ContainerStateStatusEnum::CREATED) => Phase::Created,
        Some(ContainerStateStatusEnum::EXITED) | Some(ContainerStateStatusEnum::DEAD) => {
            Phase::Ended
        }
        // Running, paused, restarting, removing, stopping, or an answer without a state.
        _ => Phase::Running,
    }
}

impl DockerDriver {
    /// Connects to the daemon at `host` (`unix:///path/docker.sock` or a path) and agrees on
    /// the API version (Debian 12's Docker 20.10 speaks 1.41), for the agent named `owner`.
    pub async fn connect(host: &str, owner: &str) -> Result<Self, DriverError> {
        let path = host.strip_prefix("unix://").unwrap_or(host);
        let docker = Docker::connect_with_unix(path, TIMEOUT, bollard::API_DEFAULT_VERSION)
            .map_err(|e| docker_error(&format!("cannot reach {host}"), e))?
            .negotiate_version()
            .await
            .map_err(|e| docker_error(&format!("cannot reach {host}"), e))?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(DockerDriver {
            docker,
            owner: owner.to_string(),
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                tx,
            }),
            exits: Mutex::new(Some(rx)),
        })
    }

    /// The bollard client, for what the driver does not do itself (tests inspect with it).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    fn fail(&self, id: DeploymentId, output: String) {
        let exit = Exit {
            deployment_id: id,
            exit_code: None,
            output,
            abandoned: false,
        };
        self.shared.state().failed.insert(id, exit.clone());
        self.shared.offer(exit);
    }

    async fn inspect(
        &self,
        id: DeploymentId,
    ) -> Result<Option<ContainerInspectResponse>, DriverError> {
        // Another agent's container (a shared daemon) is not this driver's to touch.
        let mine = |info: &ContainerInspectResponse| {
            info.config
                .as_ref()
                .and_then(|c| c.labels.as_ref())
                .and_then(|l| l.get(AGENT_LABEL))
                == Some(&self.owner)
        };
        Ok(inspect(&self.docker, id).await?.filter(mine))
    }

    /// Makes sure the image is here; `Err` is the failed exit's message.
    async fn ensure_image(&self, image: &str) -> Result<Result<(), String>, DriverError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(Ok(())),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) if answered(&e) => {
                return Ok(Err(format!("cannot use image {image}: {}", message_of(&e))))
            }
            Err(e) => return Err(docker_error("cannot inspect an image", e)),
        }
        let options = CreateImageOptions {
            from_image: Some(with_tag(image)),
            ..Default::default()
        };
        let mut pull = self.docker.create_image(Some(options), None, None);
        while let Some(step) = pull.next().await {
            match step {
                Ok(_) => {}
                Err(e) if answered(&e) => {
                    return Ok(Err(format!(
                        "cannot pull image {image}: {}",
                        message_of(&e)
                    )))
                }
                Err(e) => return Err(docker_error(&format!("cannot pull image {image}"), e)),
            }
        }
        Ok(Ok(()))
    }

    fn container_body(&self, spec: &RunSpec) -> ContainerCreateBody {
        let r = &spec.resources;
        let device_requests = (r.gpus > 0).then(|| {
            vec![DeviceRequest {
                driver: Some("nvidia".into()),
                count: Some(r.gpus),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..Default::default()
            }]
        });
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: spec.command.clone(),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(HashMap::from([
                (LABEL.to_string(), spec.deployment_id.to_string()),
                (AGENT_LABEL.to_string(), self.owner.clone()),
            ])),
            host_config: Some(HostConfig {
                nano_cpus: (r.cpu_millis > 0).then(|| r.cpu_millis.saturating_mul(1_000_000)),
                memory: (r.memory_mib > 0).then(|| r.memory_mib.saturating_mul(1 << 20)),
                device_requests,
                network_mode: Some("none".into()),
                // The logs are the exit's output; bounded on disk too.
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".into()),
                    config: Some(HashMap::from([
                        ("max-size".into(), "10m".into()),
                        ("max-file".into(), "2".into()),
                    ])),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Starts a created container; a refusal ends the deployment (its container removed).
    async fn start_created(&self, id: DeploymentId) -> Result<(), DriverError> {
        let name = container_name(id);
        match self.docker.start_container(&name, None).await {
            Ok(()) => {
                self.watch(id);
                Ok(())
            }
            Err(e) if answered(&e) => {
                let why = format!("cannot start the container: {}", message_of(&e));
                self.remove(id).await?;
                self.fail(id, why);
                Ok(())
            }
            Err(e) => Err(docker_error("cannot start a container", e)),
        }
    }

    async fn remove(&self, id: DeploymentId) -> Result<(), DriverError> {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self
            .docker
            .remove_container(&container_name(id), Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(docker_error("cannot remove a container", e)),
        }
    }

    /// Watches the container until it ends, then offers its exit; once per container.
    fn watch(&self, id: DeploymentId) {
        let mut state = self.shared.state();
        if state.watchers.get(&id).is_some_and(|w| !w.is_finished()) {
            return;
        }
        let docker = self.docker.clone();
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            loop {
                wait_not_running(&docker, id).await;
                match inspect(&docker, id).await {
                    Ok(Some(info)) if phase(&info) == Phase::Ended => {
                        if let Ok(exit) = exit_of(&docker, id, &info).await {
                            shared.offer(exit);
                            return;
                        }
                    }
                    Ok(None) => return,
                    _ => {}
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        state.watchers.insert(id, task);
    }

    /// Waits up to `limit` for the container to end; true when it has.
    async fn ended_within(&self, id: DeploymentId, limit: Duration) -> Result<bool, DriverError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match self.inspect(id).await? {
                None => return Ok(true),
                Some(info) if phase(&info) != Phase::Running => return Ok(true),
                Some(_) => {}
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let _ = tokio::time::timeout(left, wait_not_running(&self.docker, id)).await;
        }
    }

    async fn kill(&self, id: DeploymentId, signal: &str) -> Result<(), DriverError> {
        let options = KillContainerOptions {
            signal: signal.into(),
        };
        match self
            .docker
            .kill_container(&container_name(id), Some(options))
            .await
        {
            Ok(()) => Ok(()),
            // Gone, or no longer running.
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(docker_error(&format!("cannot send {signal}"), e)),
        }
    }

    /// Every container of a deployment here, with its deployment and phase.
    async fn containers(&self) -> Result<Vec<(DeploymentId, String)>, DriverError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".into(),
                vec![LABEL.to_string(), format!("{AGENT_LABEL}={}", self.owner)],
            )])),
            ..Default::default()
        };
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| docker_error("cannot list containers", e))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let id = c
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL))
                    .and_then(|v| DeploymentId::parse(v))?;
                let state = c.state.map(|s| s.to_string()).unwrap_or_default();
                Some((id, state))
            })
            .collect())
    }
}

async fn inspect(
    docker: &Docker,
    id: DeploymentId,
) -> Result<Option<ContainerInspectResponse>, DriverError> {
    match docker
        .inspect_container(&container_name(id), None::<InspectContainerOptions>)
        .await
    {
        Ok(info) => Ok(Some(info)),
        Err(e) if status_of(&e) == Some(404) => Ok(None),
        Err(e) => Err(docker_error("cannot inspect a container", e)),
    }
}

/// Returns when the container is not running, is gone, or the request ended (a timeout).
async fn wait_not_running(docker: &Docker, id: DeploymentId) {
    let options = WaitContainerOptions {
        condition: "not-running".into(),
    };
    let mut wait = docker.wait_container(&container_name(id), Some(options));
    // A non-zero exit arrives as an error item: the state is read afterwards either way.
    while wait.next().await.is_some() {}
}

/// The exit of an ended container: its code and the end of its logs.
async fn exit_of(
    docker: &Docker,
    id: DeploymentId,
    info: &ContainerInspectResponse,
) -> Result<Exit, DriverError> {
    let state = info.state.as_ref();
    let exit_code = state
        .and_then(|s| s.exit_code)
        .and_then(|c| i32::try_from(c).ok());
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        tail: LOG_LINES.into(),
        ..Default::default()
    };
    let mut tail = OutputTail::default();
    let mut logs = docker.logs(&container_name(id), Some(options));
    while let Some(chunk) = logs.next().await {
        match chunk {
            Ok(out) => tail.push(out.as_ref()),
            Err(e) if status_of(&e) == Some(404) => break,
            // The daemon answered but has no logs to give (a container being removed, or
            // dead): the exit is still known, without its output.
            Err(e) if answered(&e) => {
                tail.push(format!("(logs unavailable: {})\n", message_of(&e)).as_bytes());
                break;
            }
            Err(e) => return Err(docker_error("cannot read a container's logs", e)),
        }
    }
    if state.and_then(|s| s.oom_killed) == Some(true) {
        tail.push(b"(killed: out of memory)\n");
    }
    if let Some(error) = state
        .and_then(|s| s.error.as_deref())
        .filter(|e| !e.is_empty())
    {
        tail.push(format!("(docker: {error})\n").as_bytes());
    }
    Ok(Exit {
        deployment_id: id,
        exit_code,
        output: tail.finish(),
        abandoned: false,
    })
}

#[async_trait]
impl Driver for DockerDriver {
    async fn start(&self, spec: &RunSpec) -> Result<(), DriverError> {
        let id = spec.deployment_id;
        if self.shared.state().failed.contains_key(&id) {
            return Ok(());
        }
        match self.inspect(id).await? {
            Some(info) if phase(&info) == Phase::Created => return self.start_created(id).await,
            Some(_) => {
                self.watch(id);
                return Ok(());
            }
            None => {}
        }
        if let Err(why) = self.ensure_image(&spec.image).await? {
            self.fail(id, why);
            return Ok(());
        }
        let options = CreateContainerOptions {
            name: Some(container_name(id)),
            ..Default::default()
        };
        match self
            .docker
            .create_container(Some(options), self.container_body(spec))
            .await
        {
            Ok(_) => {}
            // Another start of the same deployment got there first: start what it created.
            Err(e) if status_of(&e) == Some(409) => {}
            Err(e) if answered(&e) => {
                self.fail(
                    id,
                    format!("cannot create the container: {}", message_of(&e)),
                );
                return Ok(());
            }
            Err(e) => return Err(docker_error("cannot create a container", e)),
        }
        match self.inspect(id).await? {
            Some(info) if phase(&info) == Phase::Created => self.start_created(id).await,
            Some(_) => {
                self.watch(id);
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn stop(&self, id: DeploymentId, grace: Duration) -> Result<(), DriverError> {
        match self.inspect(id).await? {
            None => return Ok(()),
            Some(info) => match phase(&info) {
                Phase::Ended => return Ok(()),
                Phase::Created => {
                    // Stopped before it ever ran.
                    self.remove(id).await?;
                    self.fail(id, "stopped before it started".into());
                    return Ok(());
                }
                Phase::Running => {}
            },
        }
        self.watch(id);
        self.kill(id, "SIGTERM").await?;
        if self.ended_within(id, grace).await? {
            return Ok(());
        }
        self.kill(id, "SIGKILL").await?;
        if self.ended_within(id, AFTER_KILL).await? {
            return Ok(());
        }
        Err(DriverError::Docker(format!(
            "container {} did not end after SIGKILL",
            container_name(id)
        )))
    }

    async fn running(&self) -> Result<Vec<DeploymentId>, DriverError> {
        Ok(self
            .containers()
            .await?
            .into_iter()
            .filter(|(_, state)| !matches!(state.as_str(), "exited" | "dead"))
            .map(|(id, _)| id)
            .collect())
    }

    async fn reconcile(&self) -> Result<Vec<Exit>, DriverError> {
        let mut exits = Vec::new();
        for (id, state) in self.containers().await? {
            match state.as_str() {
                "exited" | "dead" => {
                    if self.shared.state().handed_out.contains(&id) {
                        continue;
                    }
                    let Some(info) = self.inspect(id).await? else {
                        continue;
                    };
                    let exit = exit_of(&self.docker, id, &info).await?;
                    // A watcher may have handed it out meanwhile.
                    if self.shared.state().handed_out.insert(id) {
                        exits.push(exit);
                    }
                }
                // An interrupted start: finish it.
                "created" => self.start_created(id).await?,
                _ => self.watch(id),
            }
        }
        let mut state = self.shared.state();
        let State {
            handed_out, failed, ..
        } = &mut *state;
        for (id, exit) in failed.iter() {
            if handed_out.insert(*id) {
                exits.push(exit.clone());
            }
        }
        Ok(exits)
    }

    async fn forget(&self, id: DeploymentId) -> Result<(), DriverError> {
        if let Some(info) = self.inspect(id).await? {
            if phase(&info) == Phase::Running {
                return Err(DriverError::StillRunning(id));
            }
            self.remove(id).await?;
        }
        let mut state = self.shared.state();
        state.failed.remove(&id);
        state.handed_out.remove(&id);
        if let Some(watcher) = state.watchers.remove(&id) {
            watcher.abort();
        }
        Ok(())
    }

    fn take_exits(&self) -> Option<ExitReceiver> {
        self.exits.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Drop for DockerDriver {
    /// The containers go on; a new driver finds them again.
    fn drop(&mut self) {
        for watcher in self.shared.state().watchers.values() {
            watcher.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_without_a_tag_get_latest() {
        assert_eq!(with_tag("busybox"), "busybox:latest");
        assert_eq!(with_tag("busybox:1"), "busybox:1");
        assert_eq!(
            with_tag("127.0.0.1:9/missing"),
            "127.0.0.1:9/missing:latest"
        );
        assert_eq!(with_tag("127.0.0.1:9/missing:1"), "127.0.0.1:9/missing:1");
        assert_eq!(with_tag("a/b@sha256:00"), "a/b@sha256:00");
    }
}
