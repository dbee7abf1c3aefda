//! What an agent asks of the machine it runs on, whatever runs the deployments: start one,
//! stop one, say which it has, and tell how each ended. [`RunSpec`] and [`Exit`] are plain
//! serde types, to be mapped to the agent protocol's `run` order and `exited` report.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

pub use berth::domain::ids::DeploymentId;
pub use berth::domain::resources::Resources;

pub use berth::domain::agent::protocol::{Exit, RunSpec, OUTPUT_LIMIT};

/// Exits as they happen, in the order seen. See [`Driver::take_exits`].
pub type ExitReceiver = mpsc::UnboundedReceiver<Exit>;

/// What goes wrong between the agent and the machine itself (the Docker daemon unreachable,
/// a system call refused). A deployment that fails to run is not one of these: it ends as an
/// [`Exit`] with `exit_code: None`.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("Docker: {0}")]
    Docker(String),
    #[error("{0}")]
    System(String),
    #[error("deployment {0} is still running; stop it first")]
    StillRunning(DeploymentId),
}

/// Runs deployments on this machine. Every method may be called again with the same
/// arguments without harm (an order can arrive twice after a reconnection).
///
/// Each exit is handed out once per driver instance: on the channel from
/// [`take_exits`](Driver::take_exits) as it happens, or by [`reconcile`](Driver::reconcile)
/// when nobody was listening. It stays known until [`forget`](Driver::forget), which the
/// agent calls once the server has it; a driver that can find its deployments again after an
/// agent restart (Docker) hands the exits not yet forgotten out again then, so an exit is
/// reported at least once and, while the agent lives, exactly once.
#[async_trait]
pub trait Driver: Send + Sync {
    /// Starts the deployment, unless this driver already has it (running or ended, not yet
    /// forgotten): then nothing happens. `Ok` also when the deployment could not be run (its
    /// image cannot be pulled, its command is missing): that arrives as an [`Exit`].
    async fn start(&self, spec: &RunSpec) -> Result<(), DriverError>;

    /// Sends SIGTERM, waits up to `grace` for the deployment to end, then sends SIGKILL, and
    /// returns once it has ended. Nothing happens for one that has ended or is unknown.
    async fn stop(&self, id: DeploymentId, grace: Duration) -> Result<(), DriverError>;

    /// The deployments this driver has that have not ended, including those found again
    /// after an agent restart.
    async fn running(&self) -> Result<Vec<DeploymentId>, DriverError>;

    /// The exits not yet handed out by this instance (those that happened while nobody
    /// listened, or before an agent restart); each is handed out once. It also watches the
    /// running deployments it finds, so their exits come on the channel.
    async fn reconcile(&self) -> Result<Vec<Exit>, DriverError>;

    /// Removes what is left of an ended deployment (its container), once its exit has been
    /// reported. Unknown ids are ignored; a running one is refused.
    async fn forget(&self, id: DeploymentId) -> Result<(), DriverError>;

    /// The channel of exits as they happen; `Some` the first time only. An exit sent while
    /// the receiver is dropped is not lost: [`reconcile`](Driver::reconcile) hands it out.
    fn take_exits(&self) -> Option<ExitReceiver>;
}

/// The last lines of `bytes`, at most `limit` bytes of UTF-8: a line cut at the front is
/// dropped when a whole line follows it, and invalid UTF-8 is replaced.
pub fn tail_output(bytes: &[u8], limit: usize) -> String {
    let start = bytes.len().saturating_sub(limit);
    let mid_line = start > 0 && bytes[start - 1] != b'\n';
    let mut text = String::from_utf8_lossy(&bytes[start..]).into_owned();
    // Replacement characters are longer than the bytes they replace.
    while text.len() > limit {
        let mut next = 1;
        while !text.is_char_boundary(next) {
            next += 1;
        }
        text.drain(..next);
    }
    if mid_line {
        if let Some(nl) = text.find('\n') {
            if nl + 1 < text.len() {
                text.drain(..=nl);
            }
        }
    }
    text
}

/// The end of a stream of output, kept in bounded memory however much is written:
/// [`tail_output`] of everything pushed, at [`OUTPUT_LIMIT`].
#[derive(Debug, Default)]
pub struct OutputTail {
    bytes: Vec<u8>,
}

impl OutputTail {
    pub fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        // One byte more than the limit, so that the cut still sees whether it falls mid-line.
        if self.bytes.len() > 4 * OUTPUT_LIMIT {
            let excess = self.bytes.len() - (OUTPUT_LIMIT + 1);
            self.bytes.drain(..excess);
        }
    }

    pub fn finish(&self) -> String {
        tail_output(&self.bytes, OUTPUT_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_output_is_kept_whole() {
        assert_eq!(tail_output(b"a\nb\n", 10), "a\nb\n");
        assert_eq!(tail_output(b"", 10), "");
    }

    #[test]
    fn long_output_keeps_the_last_whole_lines() {
        let out: Vec<u8> = (0..1000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let tail = tail_output(&out, 100);
        assert!(tail.len() <= 100);
        assert!(tail.starts_with("line "), "{tail:?}");
        assert!(tail.ends_with("line 999\n"));
    }

    #[test]
    fn one_long_line_is_cut_not_dropped() {
        let tail = tail_output(&[b'x'; 10_000], 4096);
        assert_eq!(tail.len(), 4096);
    }

    #[test]
    fn invalid_utf8_stays_within_the_limit() {
        let tail = tail_output(&[0xff; 10_000], 4096);
        assert!(tail.len() <= 4096);
        assert!(tail.chars().all(|c| c == '\u{fffd}'));
        // A multi-byte character cut at the front does not count as a whole line.
        let mut bytes = "é".repeat(3000).into_bytes();
        bytes.extend_from_slice(b"\nend\n");
        let tail = tail_output(&bytes, 101);
        assert_eq!(tail, "end\n");
    }

    #[test]
    fn a_cut_on_a_line_boundary_keeps_the_next_line() {
        assert_eq!(tail_output(b"aaaa\nbb\ncc\n", 6), "bb\ncc\n");
        assert_eq!(tail_output(b"aaaa\nbb\ncc\n", 5), "cc\n");
    }

    #[test]
    fn the_tail_buffer_stays_bounded() {
        let mut tail = OutputTail::default();
        for i in 0..100_000 {
            tail.push(format!("line {i}\n").as_bytes());
            assert!(tail.bytes.len() <= 4 * OUTPUT_LIMIT);
        }
        let out = tail.finish();
        assert!(out.len() <= OUTPUT_LIMIT);
        assert!(
            out.starts_with("line ") && out.ends_with("line 99999\n"),
            "{out:?}"
        );
    }

    #[test]
    fn specs_read_the_run_orders_json() {
        let id = DeploymentId::new();
        let spec: RunSpec = serde_json::from_value(serde_json::json!({
            "deployment_id": id,
            "image": "busybox:1",
            "resources": {"cpu_millis": 500, "memory_mib": 64, "gpus": 0},
        }))
        .expect("a run order");
        assert_eq!(spec.command, None);
        assert!(spec.env.is_empty());
        let back = serde_json::to_value(&spec).expect("serialises");
        assert!(back.get("command").is_none());
    }
}
