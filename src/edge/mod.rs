//! The Workers adapter (wasm32 only, kept thin): the fetch and scheduled events, the
//! Durable Objects, and the `Platform` port implemented with Hyperdrive and object stubs.

mod agents;
mod cluster;
mod exchange;
mod pg_socket;
mod platform;
mod throttle;
mod watch;

use std::cell::RefCell;
use std::sync::Arc;
use std::thread::LocalKey;

use tower::Service;
use worker::{event, web_sys, Context, Env, ScheduleContext, ScheduledEvent};

use crate::auth::access::TokenKeys;
use crate::http::rate_limit::{self, Budget, RateLimits};
use crate::http::{self, ApiError, AppState};
use platform::EdgePlatform;

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
    let _ = http::error::ERROR_LOG.set(|m| worker::console_error!("{m}"));
}

thread_local! {
    /// Parsed keys, cached per isolate and re-read only when the secret changes.
    static KEYS: RefCell<Option<(String, TokenKeys)>> = const { RefCell::new(None) };
}

fn token_keys(env: &Env) -> Result<TokenKeys, String> {
    let signing = env
        .secret("BERTH_SIGNING_KEY")
        .map_err(|_| "the secret BERTH_SIGNING_KEY is not set".to_string())?
        .to_string();
    let retired = env.var("BERTH_RETIRED_KEYS").ok().map(|v| v.to_string());
    let issuer = env
        .var("BERTH_ISSUER")
        .map(|v| v.to_string())
        .unwrap_or("berth".into());
    let audience = env
        .var("BERTH_AUDIENCE")
        .map(|v| v.to_string())
        .unwrap_or("berth-api".into());
    let cache_key = format!("{signing}|{retired:?}|{issuer}|{audience}");
    kept(&KEYS, cache_key, |_| {
        TokenKeys::from_config(&signing, retired.as_deref(), &issuer, &audience)
            .map_err(|e| e.to_string())
    })
}

/// A setting of `BERTH_RATE_LIMIT` and the budgets it makes.
type Limits = (Option<String>, Option<Arc<RateLimits>>);

thread_local! {
    /// Every caller's budget, kept by this isolate (`http::rate_limit`), anew when the
    /// setting changes.
    static LIMITS: RefCell<Option<Limits>> = const { RefCell::new(None) };
}

fn rate_limits(env: &Env) -> Result<Option<Arc<RateLimits>>, String> {
    let setting = env.var(rate_limit::SETTING).ok().map(|v| v.to_string());
    kept(&LIMITS, setting, |setting| {
        Ok(Budget::from_setting(setting.as_deref())?.map(RateLimits::new))
    })
}

/// What `make` makes of `key`, kept by this isolate in `cell` and made anew only when `key`
/// changes (a secret or variable redeployed).
fn kept<K: PartialEq, T: Clone>(
    cell: &'static LocalKey<RefCell<Option<(K, T)>>>,
    key: K,
    make: impl FnOnce(&K) -> Result<T, String>,
) -> Result<T, String> {
    cell.with(|cell| {
        if let Some((k, value)) = cell.borrow().as_ref() {
            if *k == key {
                return Ok(value.clone());
            }
        }
        let value = make(&key)?;
        *cell.borrow_mut() = Some((key, value.clone()));
        Ok(value)
    })
}

/// How long the Worker works on one request (its own database round trips and its calls to
/// the objects, each of which gives up on the database sooner) before it answers 503.
const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(6);

#[event(fetch)]
async fn fetch(js: web_sys::Request, env: Env, ctx: Context) -> worker::Result<web_sys::Response> {
    let platform = Arc::new(EdgePlatform::new(env.clone()));
    let answer = answer(&js, &env, &platform).await;
    // The connections it opened close after the answer goes out, in this event's time.
    if let Some(closed) = platform.closed() {
        ctx.wait_until(closed);
    }
    answer
}

/// The answer to one request.
async fn answer(
    js: &web_sys::Request,
    env: &Env,
    platform: &Arc<EdgePlatform>,
) -> worker::Result<web_sys::Response> {
    let res = match exchange::request_from_js(js).await {
        Ok(mut req) => match token_keys(env).and_then(|keys| Ok((keys, rate_limits(env)?))) {
            Ok((keys, limits)) => {
                let state = AppState::new(platform.clone(), keys).with_limits(limits);
                // The agent WebSocket is answered beside the router: axum cannot carry the
                // runtime's 101 with its socket.
                if let Some(segment) = http::agents::connect_path(req.uri().path()) {
                    return agents::connect(&state, env, segment, &req).await;
                }
                // The watch stream too: the object's streaming answer passes through as it
                // is, rather than chunk by chunk through Rust and back.
                if let Some(segment) = http::watch::watch_path(req.uri().path()).map(str::to_owned)
                {
                    // Its coding is the client's choice.
                    exchange::client_accept_encoding(js, req.headers_mut());
                    return watch::connect(&state, env, &segment, &req).await;
                }
                // However the database behaves, a request is answered: past the deadline,
                // 503 with retry-after (its connections are dropped with it).
                let answer = http::app(state).call(req);
                let deadline = worker::Delay::from(REQUEST_DEADLINE);
                futures_util::pin_mut!(answer);
                match futures_util::future::select(answer, deadline).await {
                    futures_util::future::Either::Left((Ok(res), _)) => res,
                    futures_util::future::Either::Left((Err(never), _)) => match never {},
                    futures_util::future::Either::Right(_) => {
                        axum::response::IntoResponse::into_response(ApiError::Unavailable(
                            "the request took too long; retry shortly".into(),
                        ))
                    }
                }
            }
            Err(e) => axum::response::IntoResponse::into_response(ApiError::Internal(format!(
                "misconfigured: {e}"
            ))),
        },
        Err(e) => {
            worker::console_error!("unreadable request: {e:?}");
            axum::response::IntoResponse::into_response(ApiError::BadRequest(
                "the request could not be read".into(),
            ))
        }
    };
    Ok(exchange::response_to_js(res).await?)
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, ctx: ScheduleContext) {
    let platform = EdgePlatform::new(env);
    if let Err(e) = platform.sweep().await {
        worker::console_error!("scheduled sweep failed: {e}");
    }
    if let Some(closed) = platform.closed() {
        ctx.wait_until(closed);
    }
}
