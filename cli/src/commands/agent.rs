//! `berth agent`: this machine as an agent of a cluster. What the agent says and how it
//! stays connected is `berth_cli::agent::connection`; here the command line becomes its
//! settings (the server, the token, the name and capacity, the driver) and Ctrl-C or
//! SIGTERM its stop.

use std::sync::Arc;

use berth::auth::opaque::Kind;
use berth::domain::agent::protocol::MAX_NAME_CHARS;
use berth::domain::resources::Resources;
use berth_cli::agent::connection::{self, Settings};
use berth_cli::agent::docker::DockerDriver;
use berth_cli::agent::exec::ExecDriver;
use berth_cli::agent::Driver;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use super::Result;
use crate::args::{AgentArgs, DriverArg, Global};
use crate::client::server_url;
use crate::config;
use crate::error::CliError;
use crate::output;

/// The Docker daemon when `DOCKER_HOST` does not name one.
const DOCKER_SOCKET: &str = "/var/run/docker.sock";

pub async fn agent(global: Global, args: AgentArgs) -> Result {
    // An agent needs no login: a config file only lends its server, when there is one.
    let server = server_url(global.server, config::path().ok().as_deref())?;
    let url = format!(
        "{}/v1/clusters/{}/agent/connect",
        server.replacen("http", "ws", 1),
        args.cluster
    );
    let token = args.token.trim().to_string();
    if !token.starts_with(Kind::AgentToken.prefix()) || !token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(CliError::Usage(format!(
            "the token (--token or BERTH_AGENT_TOKEN) must be an agent token ({}…), as `berth \
             agent-token create` prints it",
            Kind::AgentToken.prefix()
        )));
    }
    let name = match args.name {
        Some(n) => n,
        None => host_name()?,
    };
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(CliError::Usage(format!(
            "the agent's name '{}' must be 1 to {MAX_NAME_CHARS} printable characters: pass \
             --name",
            output::clean(&name)
        )));
    }
    let capacity = Resources::new(
        match args.cpu {
            Some(c) => c,
            None => machine_cpu()?,
        },
        match args.memory {
            Some(m) => m,
            None => machine_memory()?,
        },
        args.gpus.unwrap_or(0),
    );
    let driver: Arc<dyn Driver> = match args.driver {
        DriverArg::Exec => Arc::new(ExecDriver::new()),
        DriverArg::Docker => {
            let host = docker_host()?;
            Arc::new(
                DockerDriver::connect(&host, &name)
                    .await
                    .map_err(|e| CliError::Other(format!("the Docker driver: {e}")))?,
            )
        }
    };
    let settings = Settings {
        url,
        token,
        name,
        capacity,
        capacity_text: output::resources(&capacity),
    };
    connection::log(format_args!(
        "berth agent {} with the {} driver",
        env!("CARGO_PKG_VERSION"),
        match args.driver {
            DriverArg::Docker => "docker",
            DriverArg::Exec => "exec",
        }
    ));
    let stop = stop_on_signals()?;
    let result = connection::run(&settings, driver.clone(), stop).await;
    // The exec driver's children end with it, before the process exits.
    drop(driver);
    result.map_err(CliError::Other)
}

/// A receiver that turns true at the first SIGINT or SIGTERM.
fn stop_on_signals() -> Result<watch::Receiver<bool>> {
    let cannot = |e: std::io::Error| CliError::Other(format!("cannot watch for Ctrl-C: {e}"));
    let mut interrupt = signal(SignalKind::interrupt()).map_err(cannot)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(cannot)?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        connection::log(format_args!("{which}: closing the connection"));
        let _ = tx.send(true);
        // The sender stays, so that the stop stays requested.
        std::future::pending::<()>().await;
    });
    Ok(rx)
}

fn host_name() -> Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    if rc != 0 || name.is_empty() {
        return Err(CliError::Usage(
            "cannot tell this machine's host name: pass --name".into(),
        ));
    }
    Ok(name)
}

/// The CPUs this process may use, in millicores.
fn machine_cpu() -> Result<i64> {
    let n = std::thread::available_parallelism().map_err(|e| {
        CliError::Usage(format!("cannot tell this machine's CPUs ({e}): pass --cpu"))
    })?;
    Ok(i64::try_from(n.get()).unwrap_or(i64::MAX / 1000) * 1000)
}

/// `MemTotal` of /proc/meminfo, in MiB.
fn machine_memory() -> Result<i64> {
    let cannot = |why: String| {
        CliError::Usage(format!(
            "cannot tell this machine's memory ({why}): pass --memory"
        ))
    };
    let text = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| cannot(format!("/proc/meminfo: {e}")))?;
    mem_total_mib(&text).ok_or_else(|| cannot("no MemTotal in /proc/meminfo".into()))
}

/// `MemTotal:  16318412 kB` → 15935.
fn mem_total_mib(meminfo: &str) -> Option<i64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let kib: i64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(kib / 1024)
}

/// `DOCKER_HOST` when it names a unix socket, else [`DOCKER_SOCKET`].
fn docker_host() -> Result<String> {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if h.starts_with("unix://") || h.starts_with('/') => Ok(h),
        Ok(h) if !h.is_empty() => Err(CliError::Usage(format!(
            "DOCKER_HOST '{}' is not a unix socket: the Docker driver speaks to a local daemon \
             only (unix:///var/run/docker.sock)",
            output::clean(&h)
        ))),
        _ => Ok(DOCKER_SOCKET.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_meminfo() {
        let meminfo = "MemTotal:       16318412 kB\nMemFree:         1234 kB\n";
        assert_eq!(mem_total_mib(meminfo), Some(15935));
        assert_eq!(mem_total_mib("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total_mib("MemTotal: lots kB\n"), None);
        assert!(machine_memory().expect("this machine's memory") > 0);
        assert!(machine_cpu().expect("this machine's CPUs") >= 1000);
        assert!(!host_name().expect("a host name").is_empty());
    }
}
