//! The `Throttle` Durable Object: one shard of the login/invite failure book, so the limit
//! holds across isolates. Its storage survives restarts; the cron sweep purges it.

use std::cell::RefCell;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use crate::domain::throttle::ThrottleBook;

/// Number of shards keys are spread over.
pub const SHARDS: u32 = 8;

/// A command to one shard.
#[derive(Debug, Serialize)]
pub struct ThrottleCall {
    /// `check`, `fail`, `reset` or `purge`.
    pub op: &'static str,
    /// The keys it concerns (none for `purge`).
    pub keys: Vec<String>,
}

#[derive(Deserialize)]
struct IncomingCall {
    op: String,
    keys: Vec<String>,
}

#[durable_object]
pub struct Throttle {
    state: State,
    book: RefCell<Option<ThrottleBook>>,
}

impl Throttle {
    async fn load(&self) -> Result<ThrottleBook> {
        if let Some(book) = self.book.borrow().as_ref() {
            return Ok(book.clone());
        }
        Ok(self.state.storage().get("book").await?.unwrap_or_default())
    }

    async fn save(&self, book: ThrottleBook) -> Result<()> {
        *self.book.borrow_mut() = Some(book.clone());
        self.state.storage().put("book", &book).await
    }
}

impl DurableObject for Throttle {
    fn new(state: State, _env: Env) -> Self {
        Self {
            state,
            book: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let call: IncomingCall = req.json().await?;
        let now = Utc::now();
        // Only storage operations are awaited between load and save, and those keep the
        // object's input gate closed, so concurrent calls cannot interleave here.
        let mut book = self.load().await?;
        let answer = match call.op.as_str() {
            "check" => book.retry_after(&call.keys, now),
            "fail" => {
                book.record_failure(&call.keys, now);
                None
            }
            "reset" => {
                for k in &call.keys {
                    book.reset(k);
                }
                None
            }
            "purge" => {
                book.purge(now);
                None
            }
            other => return Response::error(format!("unknown op {other}"), 400),
        };
        if call.op != "check" {
            self.save(book).await?;
        }
        Response::from_json(&answer)
    }
}
