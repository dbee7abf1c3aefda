//! What can go wrong, each printed as one clear line (plus one per invalid field) on stderr,
//! with the exit code scripts rely on: 1 an error, 2 a usage error, 3 `deploy --wait` on a
//! deployment that ended badly.

use berth::http::wire::Problem;

use crate::output::clean;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line is wrong (beyond what clap checks itself).
    #[error("{0}")]
    Usage(String),
    /// The server answered with a problem document. `flags` maps its field names to the
    /// command's flags, for the lines that follow.
    #[error("{}", problem_line(.problem))]
    Api {
        problem: Box<Problem>,
        flags: &'static [(&'static str, &'static str)],
    },
    /// The server cannot be reached.
    #[error("cannot reach the Berth server at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    /// The login is gone (expired, revoked or never made).
    #[error("{0}: run berth login")]
    Login(String),
    /// The deployment `--wait` waited for ended other than running or succeeded.
    #[error("{0}")]
    Ended(String),
    /// Anything else, already phrased for a person.
    #[error("{0}")]
    Other(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Ended(_) => 3,
            _ => 1,
        }
    }

    /// True for the server's 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CliError::Api { problem, .. } if problem.status == 404)
    }

    /// Names the problem's fields as the command's flags (`resources.memory_mib` → `--memory`).
    pub fn with_flags(self, flags: &'static [(&'static str, &'static str)]) -> Self {
        match self {
            CliError::Api { problem, .. } => CliError::Api { problem, flags },
            e => e,
        }
    }

    /// The lines after the first: one per invalid field, named as the command's flag.
    pub fn field_lines(&self) -> Vec<String> {
        let CliError::Api { problem, flags } = self else {
            return vec![];
        };
        problem
            .errors
            .iter()
            .flatten()
            .map(|e| {
                // `env.A-B` → `--env A-B` when only `env` has a flag.
                let exact = flags.iter().find(|(field, _)| *field == e.field);
                let by_prefix = || {
                    let (head, rest) = e.field.split_once('.')?;
                    let (_, flag) = flags.iter().find(|(field, _)| *field == head)?;
                    Some(format!("{flag} {rest}"))
                };
                let name = exact
                    .map(|(_, flag)| flag.to_string())
                    .or_else(by_prefix)
                    .unwrap_or_else(|| e.field.clone());
                format!("  {}: {}", clean(&name), clean(&e.message))
            })
            .collect()
    }
}

/// `title: detail`; with invalid fields, the title alone (the fields follow, one per line).
fn problem_line(p: &Problem) -> String {
    let has_fields = p.errors.as_ref().is_some_and(|e| !e.is_empty());
    match p
        .detail
        .as_deref()
        .filter(|d| !d.is_empty() && *d != p.title && !has_fields)
    {
        Some(detail) => format!("{}: {}", clean(&p.title), clean(detail)),
        None => clean(&p.title),
    }
}

impl From<String> for CliError {
    fn from(s: String) -> Self {
        CliError::Other(s)
    }
}
