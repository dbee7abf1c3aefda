// What the browser tests share: the Worker under test (BERTH_E2E_URL), its API for setting
// things up, Debian's Chromium driven by playwright-core, and the screenshots.

import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join as joinPath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const BASE = process.env.BERTH_E2E_URL || 'http://127.0.0.1:8788';
const ROOT = joinPath(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SCREENSHOTS = process.env.BERTH_SCREENSHOTS || joinPath(ROOT, 'logs', 'test', 'screenshots');
export const PASSWORD = 'correct horse battery staple';
export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 375, height: 812 };

const run = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
let seq = 0;
/** A name no other test or run has used. */
export const unique = (what) => `${what}-${run}-${++seq}`;
/** A client address of each caller's own (`CF-Connecting-IP`), so login throttling never spans tests. */
const address = () => `198.51.100.${(seq++ % 250) + 1}`;

/** The API as a test calls it to set things up or to act beside the page. */
export async function call(method, path, { token, body, ip } = {}) {
  const headers = { 'cf-connecting-ip': ip || '198.51.100.254' };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(BASE + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  const json = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return json;
}

/** A registered user, signed in through the API: `{email, token}`. */
export async function user(name = 'user') {
  const email = `${unique(name)}@example.com`;
  await call('POST', '/v1/auth/register', { body: { email, password: PASSWORD, name } });
  const pair = await call('POST', '/v1/auth/login', { body: { email, password: PASSWORD } });
  return { email, token: pair.access_token };
}

/** An organization of `admin`'s, with members of the given roles: `{id, name}`. */
export async function org(admin, name = unique('org')) {
  return call('POST', '/v1/orgs', { token: admin.token, body: { name } });
}

/** `who` joins `orgId` with `role`, through an invite of `admin`'s. */
export async function join(admin, orgId, who, role) {
  const invite = await call('POST', `/v1/orgs/${orgId}/invites`, { token: admin.token, body: { role } });
  await call('POST', '/v1/invites/accept', { token: who.token, body: { code: invite.code } });
}

export async function cluster(admin, orgId, { name = unique('cluster'), cpu = 4000, memory = 8192, gpus = 0 } = {}) {
  return call('POST', `/v1/orgs/${orgId}/clusters`, {
    token: admin.token,
    body: { name, capacity: { cpu_millis: cpu, memory_mib: memory, gpus } },
  });
}

export async function submit(who, clusterId, { name = unique('job'), cpu = 1000, memory = 1024, priority } = {}) {
  return call('POST', `/v1/clusters/${clusterId}/deployments`, {
    token: who.token,
    body: { name, image: 'ghcr.io/acme/trainer:1.4', resources: { cpu_millis: cpu, memory_mib: memory, gpus: 0 }, priority },
  });
}

/**
 * `berth agent` (BERTH_E2E_CLI, the binary test.sh built) for `clusterId`, with the exec
 * driver: a deployment's command runs as a plain process, which dies with the agent.
 */
export async function startAgent(admin, clusterId, name, { cpu = '4', memory = '8Gi', gpus = '0' } = {}) {
  const cli = process.env.BERTH_E2E_CLI;
  if (!cli) throw new Error('BERTH_E2E_CLI must name the berth binary (scripts/test.sh sets it)');
  const { token } = await call('POST', `/v1/clusters/${clusterId}/agent-tokens`, { token: admin.token, body: { name } });
  const child = spawn(
    cli,
    ['agent', '--cluster', clusterId, '--driver', 'exec', '--name', name, '--cpu', cpu, '--memory', memory, '--gpus', gpus],
    {
      env: { ...process.env, BERTH_URL: BASE, BERTH_AGENT_TOKEN: token, BERTH_CONFIG: joinPath(tmpdir(), 'berth-browser-agent-none.toml'), BERTH_TOKEN: '' },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  child.log = '';
  child.stderr.on('data', (b) => (child.log += b));
  child.exited = new Promise((resolve) => child.on('exit', resolve));
  return child;
}

/** SIGTERM, as systemd stops an agent; SIGKILL if it has not gone within 10 s. */
export async function stopAgent(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await child.exited;
  clearTimeout(t);
}

let browser;
/** The one Chromium of this test file: Debian's, never a download. */
export async function launch() {
  browser ??= await chromium.launch({
    executablePath: process.env.BERTH_CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  return browser;
}

export async function closeBrowser() {
  await browser?.close();
  browser = undefined;
}

/** A fresh browser context (its own storage) at `viewport`, with a client address of its own. */
export async function newPage(viewport = DESKTOP) {
  const b = await launch();
  const context = await b.newContext({
    viewport,
    baseURL: BASE,
    extraHTTPHeaders: { 'cf-connecting-ip': address() },
    reducedMotion: 'reduce',
  });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  page.errors = errors;
  return page;
}

/** Opens the dashboard and signs in as `who` through its form. */
export async function signIn(page, who, hash = '') {
  await page.goto(`/app/${hash}`);
  await page.getByLabel('E-mail').fill(who.email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
}

/** `logs/test/screenshots/<name>-<desktop|phone>.png`, the whole page. */
export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const width = page.viewportSize().width;
  const path = joinPath(SCREENSHOTS, `${name}-${width >= 1000 ? 'desktop' : 'phone'}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** Whether the document is wider than the viewport (a horizontal scroll bar). */
export async function scrollsSideways(page) {
  return page.evaluate(() => document.documentElement.scrollWidth > document.documentElement.clientWidth);
}
