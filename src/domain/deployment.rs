//! Deployment values: image references, priorities, statuses, resource requests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::resources::{Resources, MAX_RESOURCE};
use super::validation::{Fields, Invalid};

/// Lowest priority.
pub const MIN_PRIORITY: i64 = 0;
/// Highest priority.
pub const MAX_PRIORITY: i64 = 1000;
/// Priority when none is given.
pub const DEFAULT_PRIORITY: i32 = 500;
/// Longest `max_runtime_seconds` accepted (one year).
pub const MAX_RUNTIME_SECONDS: i64 = 365 * 24 * 3600;

/// An OCI image reference, `[registry/]repository[:tag][@digest]`, valid by the
/// distribution reference grammar (as docker/distribution defines it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ImageRef(String);

impl ImageRef {
    /// Parses with oci-spec's port of the distribution grammar; keeps the text as given.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 512 || s != s.trim() {
            return Err("must be an image reference such as ghcr.io/acme/api:1.2".into());
        }
        oci_spec::distribution::Reference::try_from(s)
            .map(|_| Self(s.to_string()))
            .map_err(|e| format!("is not a valid image reference: {e}"))
    }

    /// The reference as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a deployment is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for capacity.
    Queued,
    /// Admitted; holds its resources.
    Running,
    /// Finished well (reported by a cluster agent).
    Succeeded,
    /// Finished badly, or ran past `max_runtime_seconds`.
    Failed,
    /// Stopped by a user.
    Stopped,
    /// Cancelled while queued.
    Cancelled,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 6] = [
        Status::Queued,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Stopped,
        Status::Cancelled,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Stopped => "stopped",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses a stored or requested name.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether it has ended (no status follows a final one).
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Queued | Status::Running)
    }
}

/// What happened to a deployment: the kind of one line of its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Submitted (queued).
    Created,
    /// Admitted: running.
    Admitted,
    /// Evicted for a higher-priority deployment.
    Preempted,
    /// Back in the queue after a preemption.
    Requeued,
    /// Its base priority changed.
    PriorityChanged,
    /// Cancelled while queued.
    Cancelled,
    /// Stopped by a user.
    Stopped,
    /// Finished well.
    Succeeded,
    /// Finished badly.
    Failed,
    /// Failed for running past `max_runtime_seconds`.
    Expired,
    /// Placed on an agent (the reason names it), which is told to run it.
    Assigned,
    /// Its agent started it.
    Started,
    /// Its container ended (the reason gives the exit code).
    Exited,
    /// Its agent stayed away longer than the cluster's grace; requeued.
    Lost,
    /// Every deployment it depends on succeeded: it joins the queue (from then on).
    Released,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 15] = [
        EventKind::Created,
        EventKind::Admitted,
        EventKind::Preempted,
        EventKind::Requeued,
        EventKind::PriorityChanged,
        EventKind::Cancelled,
        EventKind::Stopped,
        EventKind::Succeeded,
        EventKind::Failed,
        EventKind::Expired,
        EventKind::Assigned,
        EventKind::Started,
        EventKind::Exited,
        EventKind::Lost,
        EventKind::Released,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Admitted => "admitted",
            EventKind::Preempted => "preempted",
            EventKind::Requeued => "requeued",
            EventKind::PriorityChanged => "priority_changed",
            EventKind::Cancelled => "cancelled",
            EventKind::Stopped => "stopped",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::Expired => "expired",
            EventKind::Assigned => "assigned",
            EventKind::Started => "started",
            EventKind::Exited => "exited",
            EventKind::Lost => "lost",
            EventKind::Released => "released",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Most arguments a `command` may have.
pub const MAX_ARGS: usize = 32;
/// Longest argument, in characters.
pub const MAX_ARG_CHARS: usize = 1024;
/// Most environment variables.
pub const MAX_ENV: usize = 32;
/// Longest variable name, in characters.
pub const MAX_ENV_NAME_CHARS: usize = 64;
/// Longest variable value, in characters.
pub const MAX_ENV_VALUE_CHARS: usize = 1024;

/// The process a deployment's container runs, beyond its image: a command that replaces the
/// image's, and environment variables. Both optional; the bounds keep a submission well
/// within the 64 KiB a body may have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
}

impl Process {
    /// Reads the optional `command` and `env` fields; errors are recorded on `f`.
    pub fn from_fields(f: &Fields<'_>) -> Result<Self, Invalid> {
        let command = command_field(f);
        let env = env_field(f);
        Ok(Self {
            command: command?,
            env: env?,
        })
    }
}

fn text_error(s: &str, max: usize) -> Option<String> {
    if s.contains('\0') {
        Some("must not contain NUL characters".into())
    } else if s.chars().count() > max {
        Some(format!("must be at most {max} characters"))
    } else {
        None
    }
}

fn command_field(f: &Fields<'_>) -> Result<Option<Vec<String>>, Invalid> {
    let Some(v) = f.value("command") else {
        return Ok(None);
    };
    let Value::Array(items) = v else {
        f.error("command", "must be an array of strings");
        return Err(Invalid);
    };
    if items.is_empty() || items.len() > MAX_ARGS {
        f.error("command", format!("must have 1 to {MAX_ARGS} arguments"));
        return Err(Invalid);
    }
    let mut args = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let name = format!("command.{i}");
        match item.as_str() {
            None => {
                f.error(&name, "must be a string");
                ok = false;
            }
            Some(s) => match text_error(s, MAX_ARG_CHARS) {
                Some(m) => {
                    f.error(&name, m);
                    ok = false;
                }
                None => args.push(s.to_string()),
            },
        }
    }
    if ok {
        Ok(Some(args))
    } else {
        Err(Invalid)
    }
}

/// The optional `depends_on` of a submission: at most
/// [`MAX_DEPENDENCIES`](super::scheduling::dependencies::MAX_DEPENDENCIES) deployment ids,
/// a repeated one taken once (in the order first given); whether each can be waited for is
/// the cluster's batch to say.
pub fn depends_on_field(f: &Fields<'_>) -> Result<Vec<super::ids::DeploymentId>, Invalid> {
    use super::scheduling::dependencies::{FIELD, MAX_DEPENDENCIES};
    let Some(v) = f.value(FIELD) else {
        return Ok(vec![]);
    };
    let Value::Array(items) = v else {
        f.error(FIELD, "must be an array of deployment ids");
        return Err(Invalid);
    };
    if items.len() > MAX_DEPENDENCIES {
        f.error(
            FIELD,
            format!("must name at most {MAX_DEPENDENCIES} deployments"),
        );
        return Err(Invalid);
    }
    let mut ids = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match item.as_str().and_then(|s| uuid::Uuid::parse_str(s).ok()) {
            Some(id) => {
                let id = super::ids::DeploymentId(id);
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            None => {
                f.error(&format!("{FIELD}.{i}"), "must be a deployment id (a UUID)");
                ok = false;
            }
        }
    }
    if ok {
        Ok(ids)
    } else {
        Err(Invalid)
    }
}

/// An environment variable's name as POSIX shells accept it.
fn env_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
        && name.len() <= MAX_ENV_NAME_CHARS
}

fn env_field(f: &Fields<'_>) -> Result<Option<BTreeMap<String, String>>, Invalid> {
    let Some(v) = f.value("env") else {
        return Ok(None);
    };
    let Value::Object(vars) = v else {
        f.error("env", "must be an object of strings");
        return Err(Invalid);
    };
    if vars.len() > MAX_ENV {
        f.error("env", format!("must have at most {MAX_ENV} variables"));
        return Err(Invalid);
    }
    let mut env = BTreeMap::new();
    let mut ok = true;
    for (name, value) in vars {
        let field = format!("env.{name}");
        if !env_name_ok(name) {
            f.error(
                &field,
                format!("is not a variable name ([A-Za-z_][A-Za-z0-9_]*, at most {MAX_ENV_NAME_CHARS} characters)"),
            );
            ok = false;
            continue;
        }
        match value
            .as_str()
            .map(|s| (s, text_error(s, MAX_ENV_VALUE_CHARS)))
        {
            None => {
                f.error(&field, "must be a string");
                ok = false;
            }
            Some((_, Some(m))) => {
                f.error(&field, m);
                ok = false;
            }
            Some((s, None)) => {
                env.insert(name.clone(), s.to_string());
            }
        }
    }
    if ok {
        Ok(Some(env))
    } else {
        Err(Invalid)
    }
}

/// Reads a `{cpu_millis, memory_mib, gpus}` object, each an integer in 0..2^40; with
/// `require_positive`, at least one must be above zero. Errors are recorded on `f`.
pub fn resources_field(f: &Fields<'_>, name: &str, require_positive: bool) -> Option<Resources> {
    let o = f.object(name)?;
    let dim = |d: &str| o.int(d, 0, MAX_RESOURCE - 1);
    let (cpu, mem, gpus) = (dim("cpu_millis"), dim("memory_mib"), dim("gpus"));
    f.extend(o.take_errors());
    let r = Resources::new(cpu?, mem?, gpus?);
    if require_positive && !r.any_positive() {
        f.error(
            name,
            "at least one of cpu_millis, memory_mib, gpus must be positive",
        );
        return None;
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn process(body: Value) -> Result<Process, Vec<String>> {
        let Value::Object(o) = body else {
            panic!("an object")
        };
        let f = Fields::new(&o, "");
        let p = Process::from_fields(&f);
        let errors: Vec<String> = f.take_errors().into_iter().map(|e| e.field).collect();
        match p {
            Ok(p) if errors.is_empty() => Ok(p),
            _ => Err(errors),
        }
    }

    #[test]
    fn command_and_env_are_optional_and_bounded() {
        assert_eq!(process(json!({})), Ok(Process::default()));
        assert_eq!(
            process(json!({"command": null, "env": null})),
            Ok(Process::default())
        );
        let p = process(json!({"command": ["sh", "-c", ""], "env": {"A_1": "x", "_b": ""}}))
            .expect("valid");
        assert_eq!(p.command, Some(vec!["sh".into(), "-c".into(), "".into()]));
        assert_eq!(p.env.expect("env").len(), 2);
        let long = "a".repeat(MAX_ARG_CHARS + 1);
        let too_many: Vec<String> = (0..=MAX_ARGS).map(|i| i.to_string()).collect();
        for (body, fields) in [
            (json!({"command": []}), vec!["command"]),
            (json!({"command": "sh -c"}), vec!["command"]),
            (json!({"command": too_many}), vec!["command"]),
            (
                json!({"command": ["ok", 1, long, "nul\u{0}"]}),
                vec!["command.1", "command.2", "command.3"],
            ),
            (json!({"env": ["A"]}), vec!["env"]),
            (
                json!({"env": {"1A": "x", "A-B": "y", "OK": 3, "NUL": "a\u{0}"}}),
                vec!["env.1A", "env.A-B", "env.NUL", "env.OK"],
            ),
            (
                json!({"command": [1], "env": {"": "x"}}),
                vec!["command.0", "env."],
            ),
        ] {
            assert_eq!(
                process(body.clone()),
                Err(fields.iter().map(|s| s.to_string()).collect()),
                "{body}"
            );
        }
        let vars: serde_json::Map<String, Value> = (0..=MAX_ENV)
            .map(|i| (format!("V{i}"), json!("x")))
            .collect();
        assert_eq!(process(json!({"env": vars})), Err(vec!["env".to_string()]));
        let name = "N".repeat(MAX_ENV_NAME_CHARS + 1);
        assert_eq!(
            process(json!({"env": {name.clone(): "x"}})),
            Err(vec![format!("env.{name}")])
        );
    }

    #[test]
    fn a_bare_image_name_counts_its_default_prefix() {
        // The grammar bounds the repository path at 255 characters, and a bare name's path
        // is `library/<name>`: the document's bound (247) is the longest bare name allowed.
        assert!(ImageRef::parse(&"a".repeat(247)).is_ok());
        assert!(ImageRef::parse(&"a".repeat(248)).is_err());
        assert!(ImageRef::parse(&format!("{}:1.0", "a".repeat(243))).is_ok());
        // With a domain or a namespace, the whole path counts, and nothing is added.
        assert!(ImageRef::parse(&format!("ghcr.io/{}", "a".repeat(255))).is_ok());
    }

    #[test]
    fn image_references_follow_the_distribution_grammar() {
        for ok in [
            "nginx",
            "nginx:1.27",
            "library/nginx:latest",
            "ghcr.io/acme/api:v1.2.3",
            "localhost:5000/team/app",
            "registry.example.com/a/b/c@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(ImageRef::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            " nginx",
            "Nginx",
            "acme/Api",
            "nginx:",
            "a b",
            "nginx@sha256:xyz",
            "-bad",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resources_reject_fractions_strings_negatives_and_huge_values_all_at_once() {
        let v = json!({"r": {"cpu_millis": 1.5, "memory_mib": "1", "gpus": 1099511627776_i64}});
        let f = Fields::new(v.as_object().expect("obj"), "");
        assert!(resources_field(&f, "r", true).is_none());
        let fields: Vec<_> = f.take_errors().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["r.cpu_millis", "r.memory_mib", "r.gpus"]);

        let v = json!({"r": {"cpu_millis": 0, "memory_mib": 0, "gpus": 0}});
        let f = Fields::new(v.as_object().expect("obj"), "");
        assert!(resources_field(&f, "r", true).is_none());
        assert_eq!(f.take_errors()[0].field, "r");

        let v = json!({"r": {"cpu_millis": 500, "memory_mib": 256, "gpus": 0}});
        let f = Fields::new(v.as_object().expect("obj"), "");
        assert_eq!(
            resources_field(&f, "r", true),
            Some(Resources::new(500, 256, 0))
        );
    }

    #[test]
    fn event_kinds_are_stored_by_their_serde_names() {
        for k in EventKind::ALL {
            assert_eq!(
                serde_json::to_value(k).expect("serializes"),
                json!(k.as_str())
            );
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("Admitted"), None);
    }

    #[test]
    fn statuses_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
    }
}
