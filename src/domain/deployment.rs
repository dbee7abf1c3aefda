//! Deployment values: image references, priorities, statuses, resource requests.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::resources::{Resources, MAX_RESOURCE};
use super::validation::Fields;

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
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 10] = [
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
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
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
