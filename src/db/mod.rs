//! Every SQL statement Berth runs, one module per table group. Free functions take a
//! `tokio_postgres` client or transaction; `query_typed` keeps each statement to one round
//! trip without named prepared statements (friendly to Hyperdrive and transaction poolers).

pub mod accounts;
pub mod agent_tokens;
pub mod agents;
pub mod api_keys;
pub mod clusters;
pub mod counters;
pub mod dependencies;
pub mod deployments;
pub mod invites;
pub mod orgs;

use tokio_postgres::error::SqlState;

/// A database failure, classified for the HTTP layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached (connection refused, closed, timed out).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A unique constraint was violated; carries the constraint name.
    #[error("unique violation on {0}")]
    Unique(String),
    /// A serialization failure or deadlock: the transaction may be retried.
    #[error("transaction conflict: {0}")]
    Conflict(String),
    /// Anything else: a bug, logged and answered as 500.
    #[error("database error: {0}")]
    Other(String),
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            return if *code == SqlState::UNIQUE_VIOLATION {
                DbError::Unique(db.constraint().unwrap_or_default().to_string())
            } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
            {
                DbError::Conflict(db.message().to_string())
            } else if code.code().starts_with("08")
                || code.code().starts_with("57P")
                || *code == SqlState::TOO_MANY_CONNECTIONS
            {
                DbError::Unavailable(db.message().to_string())
            } else {
                DbError::Other(format!("{}: {}", code.code(), db.message()))
            };
        }
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        let text = e.to_string();
        if e.is_closed() || io || text.starts_with("error connecting") || text.contains("timeout") {
            DbError::Unavailable(text)
        } else {
            DbError::Other(text)
        }
    }
}

/// What a unique-constraint violation means to a client, by the constraint's name (as
/// `DbError::Unique` carries it): the one place that knows the schema's unique constraints.
/// A constraint not named here (a token or code hash colliding, say) is still a conflict.
pub fn unique_violation(constraint: &str) -> &'static str {
    match constraint {
        "users_email_lower_key" => "an account with this e-mail already exists",
        "memberships_pkey" => "you are already a member of this organization",
        "clusters_org_name_key" => "a cluster with this name already exists",
        "deployments_idempotency_key" => "a deployment with this Idempotency-Key already exists",
        _ => "it already exists",
    }
}

/// Result of a database call.
pub type DbResult<T> = Result<T, DbError>;

/// One page of a keyset-paginated list: items with an id greater than `after`, at most
/// `limit` of them (one more is fetched to learn whether another page follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Exclusive lower bound on the id.
    pub after: Option<uuid::Uuid>,
    /// Page size.
    pub limit: i64,
}

impl Page {
    /// Rows to fetch: one more than the page, to detect a following page.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }
}

/// One page of `table`'s rows owned by `owner` (its `column`: `org_id`, `cluster_id`), by id.
async fn page_of(
    db: &impl tokio_postgres::GenericClient,
    table: &str,
    columns: &str,
    (column, owner): (&str, uuid::Uuid),
    page: &Page,
) -> DbResult<Vec<tokio_postgres::Row>> {
    let sql = format!(
        "select {columns} from {table} where {column} = $1 and ($2::uuid is null or id > $2) \
         order by id limit $3"
    );
    use tokio_postgres::types::Type;
    let rows = db
        .query_typed(
            &sql,
            &[
                (&owner, Type::UUID),
                (&page.after, Type::UUID),
                (&page.fetch(), Type::INT8),
            ],
        )
        .await?;
    Ok(rows)
}

/// One page of an organization's rows of `table` (which has `id` and `org_id` columns), by id.
async fn page_of_org(
    db: &impl tokio_postgres::GenericClient,
    table: &str,
    columns: &str,
    org: crate::domain::ids::OrgId,
    page: &Page,
) -> DbResult<Vec<tokio_postgres::Row>> {
    page_of(db, table, columns, ("org_id", org.0), page).await
}

/// One page of a cluster's rows of `table` (which has `id` and `cluster_id` columns), by id.
async fn page_of_cluster(
    db: &impl tokio_postgres::GenericClient,
    table: &str,
    columns: &str,
    cluster: crate::domain::ids::ClusterId,
    page: &Page,
) -> DbResult<Vec<tokio_postgres::Row>> {
    page_of(db, table, columns, ("cluster_id", cluster.0), page).await
}

/// Marks a row of an organization's `table` revoked (idempotently); `false` when the
/// organization has no such row.
async fn revoke_in_org(
    db: &impl tokio_postgres::GenericClient,
    table: &str,
    org: crate::domain::ids::OrgId,
    id: uuid::Uuid,
    now: chrono::DateTime<chrono::Utc>,
) -> DbResult<bool> {
    use tokio_postgres::types::Type;
    let sql = format!(
        "update {table} set revoked_at = coalesce(revoked_at, $3) \
         where org_id = $1 and id = $2 returning id"
    );
    let rows = db
        .query_typed(
            &sql,
            &[
                (&org.0, Type::UUID),
                (&id, Type::UUID),
                (&now, Type::TIMESTAMPTZ),
            ],
        )
        .await?;
    Ok(!rows.is_empty())
}
