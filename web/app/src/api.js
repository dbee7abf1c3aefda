// Berth's HTTP API from the page. The access token lives in this module's memory only; the
// refresh token in sessionStorage, so that a reload of the tab stays signed in while closing
// the tab ends the session (see docs/dashboard.md, "Signing in").

const REFRESH_KEY = 'berth.refresh_token';
/** Refresh this long before the access token expires. */
const EARLY_MS = 30_000;

/** A failed request: `status` 0 when the server could not be reached; `problem` the RFC 9457 body. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `the server answered ${status}`);
    this.status = status;
    this.problem = problem;
    /** `[{field, message}]` of a 422 */
    this.errors = problem.errors || [];
  }
}

let access = null; // { token, expiresAt }
let refreshing = null;
const signedOutListeners = new Set();

/** Called when the session ends: sign-out, or a refresh the server refused. */
export function onSignedOut(fn) {
  signedOutListeners.add(fn);
  return () => signedOutListeners.delete(fn);
}

function forget() {
  access = null;
  sessionStorage.removeItem(REFRESH_KEY);
  signedOutListeners.forEach((fn) => fn());
}

function keep(pair) {
  access = { token: pair.access_token, expiresAt: Date.now() + pair.expires_in * 1000 };
  sessionStorage.setItem(REFRESH_KEY, pair.refresh_token);
}

/** Whether a session may be resumed (an access token, or a refresh token from before a reload). */
export function hasSession() {
  return access !== null || sessionStorage.getItem(REFRESH_KEY) !== null;
}

async function send(method, path, body, bearer) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, { title: 'Unreachable', detail: 'the server cannot be reached; check your connection' });
  }
  return res;
}

/** The answer's JSON, or its problem document thrown as an `ApiError`. */
export async function answer(res) {
  if (res.ok) return res.status === 204 ? null : res.json();
  let problem = { title: res.statusText };
  try {
    problem = await res.json();
  } catch {
    // not a problem document: keep the status text
  }
  throw new ApiError(res.status, problem);
}

/** Spends the refresh token for a new pair; one refresh at a time however many callers wait. */
export function refresh() {
  if (!refreshing) {
    refreshing = (async () => {
      const refresh_token = sessionStorage.getItem(REFRESH_KEY);
      if (!refresh_token) {
        forget();
        throw new ApiError(401, { title: 'Signed out', detail: 'sign in again' });
      }
      try {
        keep(await answer(await send('POST', '/v1/auth/refresh', { refresh_token })));
      } catch (e) {
        if (e.status === 401) forget();
        throw e;
      }
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

/** A valid access token, refreshed first when it is about to expire. */
export async function token() {
  if (!access || access.expiresAt - Date.now() < EARLY_MS) await refresh();
  return access.token;
}

export async function login(email, password) {
  keep(await answer(await send('POST', '/v1/auth/login', { email, password })));
}

export async function logout() {
  const refresh_token = sessionStorage.getItem(REFRESH_KEY);
  try {
    if (refresh_token && access) {
      await send('POST', '/v1/auth/logout', { refresh_token }, access.token);
    }
  } finally {
    forget();
  }
}

/** An authenticated request; a 401 refreshes the token once and tries again. */
export async function api(method, path, body) {
  let res = await send(method, path, body, await token());
  if (res.status === 401) {
    await refresh();
    res = await send(method, path, body, access.token);
  }
  return answer(res);
}

export const get = (path) => api('GET', path);

/** Every item of a list, following `next_cursor` (at most `pages` pages of 200). */
export async function all(path, pages = 10) {
  const items = [];
  let cursor = null;
  for (let i = 0; i < pages; i++) {
    const sep = path.includes('?') ? '&' : '?';
    const page = await get(`${path}${sep}limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    items.push(...page.items);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return items;
}
