//! The exec driver: each deployment's `command` as a plain child process of the agent, with
//! no isolation and no limits, for machines without Docker and for benchmarks.
//!
//! It remembers its children in memory only: an agent restart forgets them (dropping the
//! driver kills their process groups, so none is left running unseen), and the server, not
//! finding them in [`Driver::running`], sees them gone. Each child leads a process group of
//! its own, so that a stop reaches whatever it started too. Its environment is the spec's
//! `env` and the agent's `PATH`, nothing else of the agent's (its token, say).

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};

use super::driver::{DeploymentId, Driver, DriverError, Exit, ExitReceiver, OutputTail, RunSpec};

/// How long the output pipes may stay open after the process itself has ended (a background
/// child of its may hold them) before its exit is reported without the rest.
const DRAIN: Duration = Duration::from_secs(1);

/// How long a stop waits after SIGKILL before it gives up.
const AFTER_KILL: Duration = Duration::from_secs(10);

pub struct ExecDriver {
    shared: Arc<Shared>,
    exits: Mutex<Option<ExitReceiver>>,
}

struct Shared {
    children: Mutex<HashMap<DeploymentId, Child>>,
    tx: mpsc::UnboundedSender<Exit>,
}

struct Child {
    /// The process group's id (the child's pid); `None` when it never started.
    pgid: Option<i32>,
    /// Becomes true once the exit below is set.
    ended: watch::Receiver<bool>,
    exit: Option<Exit>,
    handed_out: bool,
}

impl Shared {
    fn children(&self) -> MutexGuard<'_, HashMap<DeploymentId, Child>> {
        // A panic elsewhere while holding the lock leaves a map that is still whole.
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the exit and sends it; kept for `reconcile` when nobody listens.
    fn ended(&self, exit: Exit) {
        let mut children = self.children();
        if let Some(child) = children.get_mut(&exit.deployment_id) {
            child.exit = Some(exit.clone());
            child.handed_out = self.tx.send(exit).is_ok();
        }
    }
}

impl Default for ExecDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl ExecDriver {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        ExecDriver {
            shared: Arc::new(Shared {
                children: Mutex::new(HashMap::new()),
                tx,
            }),
            exits: Mutex::new(Some(rx)),
        }
    }

    /// A deployment that could not be started: its exit, at once.
    fn failed(&self, id: DeploymentId, why: String) {
        let (done, ended) = watch::channel(true);
        drop(done);
        self.shared.children().insert(
            id,
            Child {
                pgid: None,
                ended,
                exit: None,
                handed_out: false,
            },
        );
        self.shared.ended(Exit {
            deployment_id: id,
            exit_code: None,
            output: why,
            abandoned: false,
        });
    }
}

/// Sends `signal` to every process of the group; a group already gone is no error.
fn signal_group(pgid: i32, signal: libc::c_int) -> Result<(), DriverError> {
    // SAFETY: kill(2) with a negative pid signals a process group; it touches no memory.
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(DriverError::System(format!(
            "cannot signal process group {pgid}: {err}"
        )))
    }
}

async fn collect(mut from: impl AsyncRead + Unpin, into: Arc<Mutex<OutputTail>>) {
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => into
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(&buf[..n]),
        }
    }
}

#[async_trait]
impl Driver for ExecDriver {
    async fn start(&self, spec: &RunSpec) -> Result<(), DriverError> {
        let id = spec.deployment_id;
        if self.shared.children().contains_key(&id) {
            return Ok(());
        }
        let Some((program, args)) = spec.command.as_deref().and_then(|c| c.split_first()) else {
            self.failed(
                id,
                "the exec driver runs a deployment's command, and this deployment has none".into(),
            );
            return Ok(());
        };
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        command.envs(&spec.env);
        // The process dies with the agent (SIGKILL when the thread that started it ends: a
        // runtime worker, which lives as long as the agent): an agent killed with SIGKILL
        // leaves nothing running that the server would then run a second time elsewhere.
        // SAFETY: prctl is async-signal-safe and touches only the child being set up.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }

        let mut children = self.shared.children();
        if children.contains_key(&id) {
            return Ok(());
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                drop(children);
                self.failed(id, format!("cannot start {program}: {e}"));
                return Ok(());
            }
        };
        let pgid = child.id().and_then(|pid| i32::try_from(pid).ok());
        let (done, ended) = watch::channel(false);
        children.insert(
            id,
            Child {
                pgid,
                ended,
                exit: None,
                handed_out: false,
            },
        );
        drop(children);

        let output = Arc::new(Mutex::new(OutputTail::default()));
        let readers = [
            child
                .stdout
                .take()
                .map(|r| tokio::spawn(collect(r, output.clone()))),
            child
                .stderr
                .take()
                .map(|r| tokio::spawn(collect(r, output.clone()))),
        ];
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = tokio::time::timeout(DRAIN, async {
                for reader in readers.into_iter().flatten() {
                    let _ = reader.await;
                }
            })
            .await;
            let (exit_code, mut text) = match status {
                Ok(s) => (s.code().or_else(|| s.signal().map(|n| 128 + n)), None),
                Err(e) => (None, Some(format!("cannot wait for the process: {e}\n"))),
            };
            let out = output.lock().unwrap_or_else(|p| p.into_inner()).finish();
            let output = match text.take() {
                Some(why) => why + &out,
                None => out,
            };
            shared.ended(Exit {
                deployment_id: id,
                exit_code,
                output,
                abandoned: false,
            });
            let _ = done.send(true);
        });
        Ok(())
    }

    async fn stop(&self, id: DeploymentId, grace: Duration) -> Result<(), DriverError> {
        let (pgid, mut ended) = {
            let children = self.shared.children();
            match children.get(&id) {
                Some(Child {
                    pgid: Some(pgid),
                    ended,
                    exit: None,
                    ..
                }) => (*pgid, ended.clone()),
                _ => return Ok(()),
            }
        };
        signal_group(pgid, libc::SIGTERM)?;
        let in_time = tokio::time::timeout(grace, ended.wait_for(|e| *e))
            .await
            .is_ok();
        // After the grace, or once the leader has ended: whatever is left of its group.
        signal_group(pgid, libc::SIGKILL)?;
        if !in_time
            && tokio::time::timeout(AFTER_KILL, ended.wait_for(|e| *e))
                .await
                .is_err()
        {
            return Err(DriverError::System(format!(
                "deployment {id} (process group {pgid}) did not end after SIGKILL"
            )));
        }
        Ok(())
    }

    async fn running(&self) -> Result<Vec<DeploymentId>, DriverError> {
        let children = self.shared.children();
        Ok(children
            .iter()
            .filter(|(_, c)| c.exit.is_none())
            .map(|(id, _)| *id)
            .collect())
    }

    async fn reconcile(&self) -> Result<Vec<Exit>, DriverError> {
        let mut children = self.shared.children();
        let mut exits = Vec::new();
        for child in children.values_mut() {
            if let (Some(exit), false) = (&child.exit, child.handed_out) {
                exits.push(exit.clone());
                child.handed_out = true;
            }
        }
        Ok(exits)
    }

    async fn forget(&self, id: DeploymentId) -> Result<(), DriverError> {
        let mut children = self.shared.children();
        match children.get(&id) {
            Some(c) if c.exit.is_none() => Err(DriverError::StillRunning(id)),
            Some(_) => {
                children.remove(&id);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn take_exits(&self) -> Option<ExitReceiver> {
        self.exits.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Drop for ExecDriver {
    /// Its children cannot be found again, so none outlives it.
    fn drop(&mut self) {
        for child in self.shared.children().values() {
            if let (Some(pgid), None, false) = (child.pgid, &child.exit, *child.ended.borrow()) {
                let _ = signal_group(pgid, libc::SIGKILL);
            }
        }
    }
}
