//! The agent's drivers against real parts: the Docker driver against a real Docker daemon
//! (`scripts/docker.sh start` makes one, with the local image berth-test/busybox:1), the
//! exec driver against real processes. The Docker tests need `BERTH_TEST_DOCKER_HOST` and
//! fail without it: `make test` sets it, or
//!   export BERTH_TEST_DOCKER_HOST=$(scripts/docker.sh start)
//!   cargo nextest run -p berth-cli --test drivers

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use berth_cli::agent::docker::{container_name, DockerDriver, LABEL};
use berth_cli::agent::driver::Resources;
use berth_cli::agent::exec::ExecDriver;
use berth_cli::agent::{DeploymentId, Driver, Exit, ExitReceiver, RunSpec, OUTPUT_LIMIT};
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions};

const IMAGE: &str = "berth-test/busybox:1";

fn docker_host() -> String {
    match std::env::var("BERTH_TEST_DOCKER_HOST") {
        Ok(host) if !host.is_empty() => host,
        _ => panic!(
            "BERTH_TEST_DOCKER_HOST is not set: these tests need a Docker daemon. Run `make test`, \
             or `export BERTH_TEST_DOCKER_HOST=$(scripts/docker.sh start)` and then \
             `cargo nextest run -p berth-cli --test drivers` (`scripts/docker.sh stop` after)"
        ),
    }
}

/// The agent name the driver tests' containers carry.
const OWNER: &str = "drivers-test";

async fn docker() -> DockerDriver {
    docker_of(OWNER).await
}

async fn docker_of(owner: &str) -> DockerDriver {
    let host = docker_host();
    match DockerDriver::connect(&host, owner).await {
        Ok(d) => d,
        Err(e) => panic!("cannot reach the test Docker daemon at {host} ({e}): is `scripts/docker.sh start` running?"),
    }
}

fn spec(command: &[&str]) -> RunSpec {
    RunSpec {
        deployment_id: DeploymentId::new(),
        image: IMAGE.into(),
        resources: Resources::new(500, 64, 0),
        command: Some(command.iter().map(|s| s.to_string()).collect()),
        env: BTreeMap::new(),
    }
}

fn sh(script: &str) -> RunSpec {
    spec(&["sh", "-c", script])
}

/// The next exit of deployment `id` on the channel, within `limit`. The Docker tests run at
/// once against one daemon, and a driver's reconcile() watches every deployment's container
/// it finds there: exits of the other tests' deployments are passed over.
async fn next_exit(rx: &mut ExitReceiver, id: DeploymentId, limit: Duration) -> Exit {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(exit)) if exit.deployment_id == id => return exit,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the exit channel closed"),
            Err(_) => panic!("no exit of {id} within {limit:?}"),
        }
    }
}

/// No exit of these deployments on the channel for a while.
async fn no_exit(rx: &mut ExitReceiver, ids: &[DeploymentId]) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(700);
    while let Ok(got) = tokio::time::timeout_at(deadline, rx.recv()).await {
        match got {
            Some(exit) if ids.contains(&exit.deployment_id) => panic!("unexpected exit: {exit:?}"),
            Some(_) => {}
            None => return,
        }
    }
}

/// The Docker tests run at once against one daemon: each looks only at its own deployments.
fn only(exits: Vec<Exit>, ids: &[DeploymentId]) -> Vec<Exit> {
    exits
        .into_iter()
        .filter(|e| ids.contains(&e.deployment_id))
        .collect()
}

async fn reconciled<D: Driver>(driver: &D, ids: &[DeploymentId]) -> Vec<Exit> {
    match driver.reconcile().await {
        Ok(exits) => only(exits, ids),
        Err(e) => panic!("reconcile failed: {e}"),
    }
}

async fn is_running<D: Driver>(driver: &D, id: DeploymentId) -> bool {
    match driver.running().await {
        Ok(ids) => ids.contains(&id),
        Err(e) => panic!("running failed: {e}"),
    }
}

async fn run<D: Driver>(driver: &D, spec: &RunSpec) {
    if let Err(e) = driver.start(spec).await {
        panic!("start failed: {e}");
    }
}

async fn berth_containers(driver: &DockerDriver, id: DeploymentId) -> usize {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".into(),
            vec![format!("{LABEL}={id}")],
        )])),
        ..Default::default()
    };
    match driver.client().list_containers(Some(options)).await {
        Ok(list) => list.len(),
        Err(e) => panic!("cannot list containers: {e}"),
    }
}

async fn forget<D: Driver>(driver: &D, id: DeploymentId) {
    if let Err(e) = driver.forget(id).await {
        panic!("forget failed: {e}");
    }
}

// ---- Docker ---------------------------------------------------------------------------

#[tokio::test]
async fn docker_container_has_the_specs_limits_label_and_no_network() {
    let driver = docker().await;
    let mut exits = driver.take_exits().expect("the exit channel");
    let mut s = spec(&["sleep", "600"]);
    s.env.insert("GREETING".into(), "hello there".into());
    run(&driver, &s).await;
    let id = s.deployment_id;

    let info = driver
        .client()
        .inspect_container(&container_name(id), None::<InspectContainerOptions>)
        .await
        .expect("the container exists");
    assert_eq!(info.name.as_deref(), Some(format!("/berth-{id}").as_str()));
    let host = info.host_config.expect("a host config");
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(64 * 1024 * 1024));
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    assert!(
        host.device_requests.unwrap_or_default().is_empty(),
        "no GPUs asked for"
    );
    let config = info.config.expect("a config");
    let id_text = id.to_string();
    assert_eq!(config.labels.unwrap_or_default().get(LABEL), Some(&id_text));
    assert!(config
        .env
        .unwrap_or_default()
        .contains(&"GREETING=hello there".to_string()));
    assert_eq!(info.state.and_then(|s| s.running), Some(true));
    assert!(is_running(&driver, id).await);

    driver.stop(id, Duration::from_secs(1)).await.expect("stop");
    let exit = next_exit(&mut exits, id, Duration::from_secs(10)).await;
    assert_eq!(exit.deployment_id, id);
    forget(&driver, id).await;
    assert_eq!(berth_containers(&driver, id).await, 0);
}

#[tokio::test]
async fn docker_limits_are_enforced_inside_the_container() {
    let driver = docker().await;
    let mut exits = driver.take_exits().expect("the exit channel");
    // cgroups v1 here; v2 elsewhere.
    let s = sh("cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
                cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cat /sys/fs/cgroup/cpu.max; \
                cat /proc/net/dev | tail -n +3 | cut -d: -f1");
    run(&driver, &s).await;
    let exit = next_exit(&mut exits, s.deployment_id, Duration::from_secs(20)).await;
    assert_eq!(exit.exit_code, Some(0), "{exit:?}");
    let lines: Vec<&str> = exit.output.lines().map(str::trim).collect();
    assert_eq!(lines[0], "67108864", "{exit:?}");
    assert!(
        lines[1] == "50000" || lines[1].starts_with("50000 "),
        "{exit:?}"
    );
    // Only the loopback interface: NetworkMode none.
    assert_eq!(&lines[2..], ["lo"], "{exit:?}");
    forget(&driver, s.deployment_id).await;
}

#[tokio::test]
async fn docker_exit_codes_and_the_last_lines_of_output() {
    let driver = docker().await;
    let mut exits = driver.take_exits().expect("the exit channel");

    // No command: the image's own (echo hi).
    let mut plain = spec(&[]);
    plain.command = None;
    run(&driver, &plain).await;
    let exit = next_exit(&mut exits, plain.deployment_id, Duration::from_secs(20)).await;
    assert_eq!(
        exit,
        Exit {
            deployment_id: plain.deployment_id,
            exit_code: Some(0),
            output: "hi\n".into(),
            abandoned: false
        }
    );

    let three = sh("for i in 1 2 3; do echo line $i; done; echo oops >&2; exit 3");
    run(&driver, &three).await;
    let exit = next_exit(&mut exits, three.deployment_id, Duration::from_secs(20)).await;
    assert_eq!(exit.deployment_id, three.deployment_id);
    assert_eq!(exit.exit_code, Some(3));
    // stdout keeps its order; Docker may interleave stderr's line anywhere among them.
    let stdout: Vec<&str> = exit.output.lines().filter(|l| *l != "oops").collect();
    assert_eq!(stdout, ["line 1", "line 2", "line 3"], "{exit:?}");
    assert!(exit.output.contains("oops\n"), "{exit:?}");

    let long = sh("i=0; while [ $i -lt 5000 ]; do echo \"line $i\"; i=$((i+1)); done");
    run(&driver, &long).await;
    let exit = next_exit(&mut exits, long.deployment_id, Duration::from_secs(30)).await;
    assert_eq!(exit.exit_code, Some(0));
    assert!(
        exit.output.len() <= OUTPUT_LIMIT,
        "{} bytes",
        exit.output.len()
    );
    assert!(exit.output.len() > OUTPUT_LIMIT - 20);
    assert!(exit.output.starts_with("line "), "{:?}", &exit.output[..20]);
    assert!(exit.output.ends_with("line 4999\n"));

    // Handed out once: reconcile has nothing more.
    let ids = [plain.deployment_id, three.deployment_id, long.deployment_id];
    assert_eq!(reconciled(&driver, &ids).await, vec![]);
    for s in [&plain, &three, &long] {
        assert!(!is_running(&driver, s.deployment_id).await);
        forget(&driver, s.deployment_id).await;
        assert_eq!(berth_containers(&driver, s.deployment_id).await, 0);
    }
}

#[tokio::test]
async fn docker_an_exit_nobody_listened_for_comes_from_reconcile() {
    let driver = docker().await;
    drop(driver.take_exits());
    let s = sh("echo done; exit 5");
    run(&driver, &s).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let exits = loop {
        let exits = reconciled(&driver, &[s.deployment_id]).await;
        if !exits.is_empty() || Instant::now() > deadline {
            break exits;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        exits,
        vec![Exit {
            deployment_id: s.deployment_id,
            exit_code: Some(5),
            output: "done\n".into(),
            abandoned: false
        }]
    );
    assert_eq!(reconciled(&driver, &[s.deployment_id]).await, vec![]);
    forget(&driver, s.deployment_id).await;
}

#[tokio::test]
async fn docker_stop_kills_after_the_grace_when_sigterm_is_ignored() {
    let driver = docker().await;
    let mut exits = driver.take_exits().expect("the exit channel");
    let s = sh("trap '' TERM; sleep 600");
    run(&driver, &s).await;
    // The shell must have set its trap before the signal comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    driver
        .stop(s.deployment_id, Duration::from_secs(2))
        .await
        .expect("stop");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "ended before the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(7), "took {took:?}");
    let exit = next_exit(&mut exits, s.deployment_id, Duration::from_secs(10)).await;
    assert_eq!(exit.deployment_id, s.deployment_id);
    assert_eq!(exit.exit_code, Some(137), "SIGKILL: {exit:?}");
    // Again, and for a deployment it never had: nothing happens.
    driver
        .stop(s.deployment_id, Duration::from_secs(2))
        .await
        .expect("a second stop");
    driver
        .stop(DeploymentId::new(), Duration::from_secs(2))
        .await
        .expect("a stop of an unknown deployment");
    no_exit(&mut exits, &[s.deployment_id]).await;
    forget(&driver, s.deployment_id).await;
}

#[tokio::test]
async fn docker_agents_sharing_a_daemon_see_only_their_own_containers() {
    let driver = docker().await;
    let s = sh("sleep 600");
    run(&driver, &s).await;
    let other = docker_of("another-agent").await;
    assert!(driver
        .running()
        .await
        .expect("running")
        .contains(&s.deployment_id));
    assert!(!other
        .running()
        .await
        .expect("running")
        .contains(&s.deployment_id));
    assert!(other.reconcile().await.expect("reconcile").is_empty());
    // Nor can it stop it.
    other
        .stop(s.deployment_id, Duration::from_secs(1))
        .await
        .expect("a stop of what it does not have");
    assert!(driver
        .running()
        .await
        .expect("running")
        .contains(&s.deployment_id));
    driver
        .stop(s.deployment_id, Duration::from_secs(1))
        .await
        .expect("stop");
    forget(&driver, s.deployment_id).await;
}

#[tokio::test]
async fn docker_stop_sends_sigterm_first() {
    let driver = docker().await;
    let mut exits = driver.take_exits().expect("the exit channel");
    let s = sh("trap 'echo got TERM; exit 0' TERM; sleep 600 & wait");
    run(&driver, &s).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    driver
        .stop(s.deployment_id, Duration::from_secs(20))
        .await
        .expect("stop");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let exit = next_exit(&mut exits, s.deployment_id, Duration::from_secs(10)).await;
    assert_eq!(exit.exit_code, Some(0), "{exit:?}");
    assert_eq!(exit.output, "got TERM\n");
    forget(&driver, s.deployment_id).await;
}

#[tokio::test]
async fn docker_start_twice_runs_one_container() {
    let driver = docker().await;
    let s = spec(&["sleep", "600"]);
    run(&driver, &s).await;
    run(&driver, &s).await;
    // And at once, from two drivers (two agents racing over one daemon).
    let other = docker().await;
    let (a, b) = tokio::join!(driver.start(&s), other.start(&s));
    a.expect("start");
    b.expect("start");
    assert_eq!(berth_containers(&driver, s.deployment_id).await, 1);
    assert!(is_running(&driver, s.deployment_id).await);
    assert_eq!(
        driver
            .forget(s.deployment_id)
            .await
            .map_err(|e| e.to_string()),
        Err(format!(
            "deployment {} is still running; stop it first",
            s.deployment_id
        ))
    );
    driver
        .stop(s.deployment_id, Duration::from_secs(1))
        .await
        .expect("stop");
    forget(&driver, s.deployment_id).await;
}

#[tokio::test]
async fn docker_a_restarted_agent_finds_its_containers_and_reports_a_missed_exit_once() {
    let before = docker().await;
    let long = spec(&["sleep", "600"]);
    let short = sh("sleep 1; echo bye; exit 7");
    run(&before, &long).await;
    run(&before, &short).await;
    // The agent goes down; the short one ends meanwhile.
    drop(before);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let after = docker().await;
    let mut exits = after.take_exits().expect("the exit channel");
    let ids = [long.deployment_id, short.deployment_id];
    assert!(is_running(&after, long.deployment_id).await);
    assert!(!is_running(&after, short.deployment_id).await);
    let missed = reconciled(&after, &ids).await;
    assert_eq!(
        missed,
        vec![Exit {
            deployment_id: short.deployment_id,
            exit_code: Some(7),
            output: "bye\n".into(),
            abandoned: false
        }]
    );
    assert_eq!(reconciled(&after, &ids).await, vec![]);
    no_exit(&mut exits, &ids).await;
    // Starting the found one again starts nothing new.
    run(&after, &long).await;
    assert_eq!(berth_containers(&after, long.deployment_id).await, 1);

    // reconcile() watches the one it found: its exit comes on the channel, once.
    after
        .stop(long.deployment_id, Duration::from_secs(1))
        .await
        .expect("stop");
    let exit = next_exit(&mut exits, long.deployment_id, Duration::from_secs(10)).await;
    assert_eq!(exit.deployment_id, long.deployment_id);
    assert_eq!(exit.exit_code, Some(137));
    assert_eq!(reconciled(&after, &ids).await, vec![]);
    no_exit(&mut exits, &ids).await;

    forget(&after, long.deployment_id).await;
    forget(&after, short.deployment_id).await;
    let again = docker().await;
    assert_eq!(reconciled(&again, &ids).await, vec![]);
    assert!(!is_running(&again, long.deployment_id).await);
}

#[tokio::test]
async fn docker_an_image_that_cannot_be_pulled_is_a_failed_exit() {
    let driver = docker().await;
    let mut exits = driver.take_exits().expect("the exit channel");
    let mut s = spec(&["true"]);
    s.image = "127.0.0.1:9/missing:1".into();
    let started = Instant::now();
    run(&driver, &s).await;
    let exit = next_exit(&mut exits, s.deployment_id, Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(exit.deployment_id, s.deployment_id);
    assert_eq!(exit.exit_code, None);
    assert!(
        exit.output
            .starts_with("cannot pull image 127.0.0.1:9/missing:1: "),
        "{exit:?}"
    );
    assert!(exit.output.contains("connection refused"), "{exit:?}");
    // The order again: nothing new.
    run(&driver, &s).await;
    no_exit(&mut exits, &[s.deployment_id]).await;
    assert_eq!(reconciled(&driver, &[s.deployment_id]).await, vec![]);
    assert!(!is_running(&driver, s.deployment_id).await);
    assert_eq!(berth_containers(&driver, s.deployment_id).await, 0);
    forget(&driver, s.deployment_id).await;
}

#[tokio::test]
async fn docker_a_container_docker_refuses_is_a_failed_exit() {
    let driver = docker().await;
    let mut exits = driver.take_exits().expect("the exit channel");
    // No such program in the image: the container is created but cannot start.
    let s = spec(&["/no/such/program"]);
    run(&driver, &s).await;
    let exit = next_exit(&mut exits, s.deployment_id, Duration::from_secs(10)).await;
    assert_eq!(exit.exit_code, None, "{exit:?}");
    assert!(
        exit.output.starts_with("cannot start the container: "),
        "{exit:?}"
    );
    assert!(exit.output.contains("/no/such/program"), "{exit:?}");
    assert_eq!(berth_containers(&driver, s.deployment_id).await, 0);
    forget(&driver, s.deployment_id).await;
}

// ---- exec -----------------------------------------------------------------------------

fn exec_sh(script: &str) -> RunSpec {
    let mut s = sh(script);
    s.image = String::new();
    s
}

#[tokio::test]
async fn exec_exit_codes_and_output() {
    let driver = ExecDriver::new();
    let mut exits = driver.take_exits().expect("the exit channel");

    let three = exec_sh("echo out; echo err >&2; exit 3");
    run(&driver, &three).await;
    let exit = next_exit(&mut exits, three.deployment_id, Duration::from_secs(10)).await;
    assert_eq!(exit.deployment_id, three.deployment_id);
    assert_eq!(exit.exit_code, Some(3));
    assert!(
        exit.output.contains("out\n") && exit.output.contains("err\n"),
        "{exit:?}"
    );

    let zero = exec_sh("echo fine");
    run(&driver, &zero).await;
    let exit = next_exit(&mut exits, zero.deployment_id, Duration::from_secs(10)).await;
    assert_eq!((exit.exit_code, exit.output.as_str()), (Some(0), "fine\n"));

    let killed = exec_sh("kill -9 $$");
    run(&driver, &killed).await;
    let exit = next_exit(&mut exits, killed.deployment_id, Duration::from_secs(10)).await;
    assert_eq!(exit.exit_code, Some(128 + 9));

    // The spec's environment and PATH, nothing else of the agent's.
    let mut env = exec_sh("echo \"$GREETING\" \"${HOME:-no home}\"");
    env.env.insert("GREETING".into(), "hello".into());
    run(&driver, &env).await;
    let exit = next_exit(&mut exits, env.deployment_id, Duration::from_secs(10)).await;
    assert_eq!(exit.output, "hello no home\n");

    assert_eq!(driver.reconcile().await.expect("reconcile"), vec![]);
    assert!(driver.running().await.expect("running").is_empty());
    for s in [&three, &zero, &killed, &env] {
        forget(&driver, s.deployment_id).await;
    }
}

#[tokio::test]
async fn exec_output_is_bounded_to_its_last_lines() {
    let driver = ExecDriver::new();
    let mut exits = driver.take_exits().expect("the exit channel");
    let s = exec_sh("i=0; while [ $i -lt 100000 ]; do echo \"line $i\"; i=$((i+1)); done");
    run(&driver, &s).await;
    let exit = next_exit(&mut exits, s.deployment_id, Duration::from_secs(60)).await;
    assert_eq!(exit.exit_code, Some(0));
    assert!(exit.output.len() <= OUTPUT_LIMIT);
    assert!(exit.output.len() > OUTPUT_LIMIT - 20);
    assert!(exit.output.starts_with("line "));
    assert!(exit.output.ends_with("line 99999\n"));
}

fn alive(pid: i32) -> bool {
    // A zombie (ended, not yet reaped by whoever inherited it) counts as ended.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

async fn read_pid(path: &std::path::Path) -> i32 {
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the deployment did not write {}", path.display());
}

#[tokio::test]
async fn exec_stop_ends_the_whole_process_group_after_the_grace() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let pidfile = dir.path().join("child.pid");
    let driver = ExecDriver::new();
    let mut exits = driver.take_exits().expect("the exit channel");
    // The shell and its background child both ignore SIGTERM.
    let s = exec_sh(&format!(
        "trap '' TERM; sleep 600 & echo $! > {}; wait",
        pidfile.display()
    ));
    run(&driver, &s).await;
    let child = read_pid(&pidfile).await;
    assert!(alive(child));
    let started = Instant::now();
    driver
        .stop(s.deployment_id, Duration::from_secs(1))
        .await
        .expect("stop");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let exit = next_exit(&mut exits, s.deployment_id, Duration::from_secs(10)).await;
    assert_eq!(exit.exit_code, Some(128 + 9));
    for _ in 0..40 {
        if !alive(child) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !alive(child),
        "the background child {child} outlived the stop"
    );
    driver
        .stop(s.deployment_id, Duration::from_secs(1))
        .await
        .expect("a second stop");
    forget(&driver, s.deployment_id).await;
}

#[tokio::test]
async fn exec_stop_sends_sigterm_to_the_group_first() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let pidfile = dir.path().join("child.pid");
    let driver = ExecDriver::new();
    let mut exits = driver.take_exits().expect("the exit channel");
    let s = exec_sh(&format!(
        "sleep 600 & echo $! > {}; wait",
        pidfile.display()
    ));
    run(&driver, &s).await;
    let child = read_pid(&pidfile).await;
    let started = Instant::now();
    driver
        .stop(s.deployment_id, Duration::from_secs(30))
        .await
        .expect("stop");
    // Far below the 30 s grace: SIGTERM ended it (bounds loose for a loaded machine).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let exit = next_exit(&mut exits, s.deployment_id, Duration::from_secs(10)).await;
    assert_eq!(exit.exit_code, Some(128 + 15), "SIGTERM: {exit:?}");
    // The group's other process got it too; it may take a moment to be reaped.
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(child) {
        assert!(
            Instant::now() < deadline,
            "the group's sleep outlived the stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn exec_without_a_command_or_a_program_fails_at_once() {
    let driver = ExecDriver::new();
    let mut exits = driver.take_exits().expect("the exit channel");
    let mut none = exec_sh("");
    none.command = None;
    run(&driver, &none).await;
    let exit = next_exit(&mut exits, none.deployment_id, Duration::from_secs(1)).await;
    assert_eq!(exit.exit_code, None);
    assert_eq!(
        exit.output,
        "the exec driver runs a deployment's command, and this deployment has none"
    );

    let missing = spec(&["/no/such/program", "x"]);
    run(&driver, &missing).await;
    let exit = next_exit(&mut exits, missing.deployment_id, Duration::from_secs(1)).await;
    assert_eq!(exit.exit_code, None);
    assert!(
        exit.output.starts_with("cannot start /no/such/program: "),
        "{exit:?}"
    );
    // Known until forgotten: the order again starts nothing.
    run(&driver, &missing).await;
    no_exit(&mut exits, &[missing.deployment_id, none.deployment_id]).await;
    forget(&driver, missing.deployment_id).await;
    forget(&driver, none.deployment_id).await;
}

#[tokio::test]
async fn exec_start_twice_runs_one_process_and_missed_exits_come_from_reconcile() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let log = dir.path().join("starts");
    let driver = ExecDriver::new();
    drop(driver.take_exits());
    let s = exec_sh(&format!(
        "echo started >> {}; sleep 1; exit 4",
        log.display()
    ));
    run(&driver, &s).await;
    run(&driver, &s).await;
    assert_eq!(
        driver.running().await.expect("running"),
        vec![s.deployment_id]
    );
    assert!(
        driver.forget(s.deployment_id).await.is_err(),
        "running: refused"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let exits = loop {
        let exits = driver.reconcile().await.expect("reconcile");
        if !exits.is_empty() || Instant::now() > deadline {
            break exits;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(exits.len(), 1);
    assert_eq!(exits[0].exit_code, Some(4));
    assert_eq!(driver.reconcile().await.expect("reconcile"), vec![]);
    assert_eq!(std::fs::read_to_string(&log).expect("the log"), "started\n");
    forget(&driver, s.deployment_id).await;
    assert!(driver.running().await.expect("running").is_empty());
}
