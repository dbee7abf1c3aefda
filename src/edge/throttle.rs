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
use crate::domain::throttle::ThrottleBook;

/// Number of shards keys are spread over.
pub const SHARDS: u32 = 8;

type Record = VecDeque<DateTime<Utc>>;

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
}

impl Throttle {
    async fn run(&self, call: IncomingCall) -> Result<Option<u64>> {
        let now = Utc::now();
        let keys = match call.op.as_str() {
            "purge" => self.all_keys().await?,
            _ => call.keys,
        };
        // Only storage operations are awaited between load and save, and those keep the
        // object's input gate closed, so concurrent calls cannot interleave here.
        let mut book = self.load(&keys).await?;
        match call.op.as_str() {
            "check" => return Ok(book.retry_after(&keys, now)),
            "fail" => book.record_failure(&keys, now),
            "reset" => keys.iter().for_each(|k| book.reset(k)),
            "purge" => {
                book.purge(now);
            }
            other => return Err(worker::Error::RustError(format!("unknown op {other}"))),
        }
        self.save(&book, &keys).await?;
        Ok(None)
    }

    async fn load(&self, keys: &[String]) -> Result<ThrottleBook> {
        let mut records = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(r) = self.state.storage().get::<Record>(key).await? {
                records.push((key.clone(), r));
            }
        }
        Ok(ThrottleBook::from_records(records))
    }

    async fn save(&self, book: &ThrottleBook, keys: &[String]) -> Result<()> {
        for key in keys {
            match book.record(key) {
                Some(r) => self.state.storage().put(key, r).await?,
                None => {
                    self.state.storage().delete(key).await?;
                }
            }
        }
        Ok(())
    }

    async fn all_keys(&self) -> Result<Vec<String>> {
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
    /// Runs a [`ThrottleCall`]: `check` answers the seconds to wait (or null), the others
    /// null.
    pub async fn throttle(&self, call: String) -> std::result::Result<JsValue, JsValue> {
        let call: IncomingCall = rpc_argument(&call)?;
        self.run(call)
            .await
            .map_err(|e| JsValue::from_str(&e.to_string()))
            .and_then(|wait| rpc_answer(&wait))
    }
}
