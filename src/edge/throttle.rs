//! The `Throttle` Durable Object: one shard of the login/invite failure records, so the
//! limit holds across isolates. Each key is its own stored record (small, whatever the
//! number of keys); the cron sweep purges records that left the window.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

use super::exchange::{rpc_answer, rpc_argument};
use crate::domain::throttle::{Key, ThrottleBook};

/// Number of shards keys are spread over.
pub const SHARDS: u32 = 8;

type Record = VecDeque<DateTime<Utc>>;

/// What a call to a shard does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ThrottleOp {
    /// Answers the seconds to wait if any of the keys is over its limit.
    Check,
    /// Records a failure against every key.
    Fail,
    /// Forgets the keys' failures.
    Reset,
    /// Drops every record of the shard that left the window (the keys are ignored).
    Purge,
}

/// A command to one shard.
#[derive(Debug, Serialize, Deserialize)]
pub struct ThrottleCall {
    /// What to do.
    pub op: ThrottleOp,
    /// The keys it concerns (none for `Purge`).
    pub keys: Vec<Key>,
}

#[durable_object]
pub struct Throttle {
    state: State,
}

impl Throttle {
    async fn run(&self, call: ThrottleCall) -> Result<Option<u64>> {
        let now = Utc::now();
        let names = match call.op {
            ThrottleOp::Purge => self.all_names().await?,
            _ => call.keys.iter().map(Key::name).collect(),
        };
        // Only storage operations are awaited between load and save, and those keep the
        // object's input gate closed, so concurrent calls cannot interleave here.
        let mut book = self.load(&names).await?;
        match call.op {
            ThrottleOp::Check => return Ok(book.retry_after(&call.keys, now)),
            ThrottleOp::Fail => book.record_failure(&call.keys, now),
            ThrottleOp::Reset => call.keys.iter().for_each(|k| book.reset(k)),
            ThrottleOp::Purge => {
                book.purge(now);
            }
        }
        self.save(&book, &names).await?;
        Ok(None)
    }

    async fn load(&self, names: &[String]) -> Result<ThrottleBook> {
        let mut records = Vec::with_capacity(names.len());
        for name in names {
            if let Some(r) = self.state.storage().get::<Record>(name).await? {
                records.push((name.clone(), r));
            }
        }
        Ok(ThrottleBook::from_records(records))
    }

    async fn save(&self, book: &ThrottleBook, names: &[String]) -> Result<()> {
        for name in names {
            match book.record(name) {
                Some(r) => self.state.storage().put(name, r).await?,
                None => {
                    self.state.storage().delete(name).await?;
                }
            }
        }
        Ok(())
    }

    async fn all_names(&self) -> Result<Vec<String>> {
        let map = self.state.storage().list().await?;
        Ok(map
            .keys()
            .into_iter()
            .filter_map(|k| k.ok()?.as_string())
            .collect())
    }
}

impl DurableObject for Throttle {
    fn new(state: State, _env: Env) -> Self {
        Self { state }
    }

    /// The Worker calls [`Throttle::throttle`] over RPC; nothing is served by fetch.
    async fn fetch(&self, _req: Request) -> Result<Response> {
        Response::error("this object answers RPC calls only", 404)
    }
}

/// The shard's RPC method (JSON in, JSON out); `scripts/build-worker.sh` makes the class
/// RPC-capable.
#[wasm_bindgen(js_sys = ::worker::js_sys, wasm_bindgen_futures = ::worker::wasm_bindgen_futures)]
impl Throttle {
    /// Runs a [`ThrottleCall`]: `Check` answers the seconds to wait (or null), the others
    /// null.
    pub async fn throttle(&self, call: String) -> std::result::Result<JsValue, JsValue> {
        let call: ThrottleCall = rpc_argument(&call)?;
        self.run(call)
            .await
            .map_err(|e| JsValue::from_str(&e.to_string()))
            .and_then(|wait| rpc_answer(&wait))
    }
}
