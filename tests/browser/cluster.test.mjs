// A cluster from the page: created by an admin, deployments submitted with the mouse and with
// the keyboard alone, and the queue and usage following the stream as the API changes them.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { call, closeBrowser, cluster, newPage, org, signIn, startAgent, stopAgent, submit, unique, user } from './support.mjs';

let ada, acme;
before(async () => {
  ada = await user('ada');
  acme = await org(ada);
});
after(closeBrowser);

/** The live badge says the page follows the cluster's stream (not a read every few seconds). */
async function live(page) {
  await page.getByRole('status', { name: 'Updates: Live' }).first().waitFor();
}

async function fillSubmit(page, { name, cpu }) {
  const form = page.getByRole('form', { name: 'Submit a deployment' });
  await form.getByLabel('Name', { exact: true }).fill(name);
  await form.getByLabel('Image').fill('ghcr.io/acme/trainer:1.4');
  await form.getByLabel('CPU', { exact: true }).fill(cpu);
  await form.getByLabel('Memory', { exact: true }).fill('1Gi');
  return form;
}

test('an admin creates a cluster from the page and lands on it', async () => {
  const page = await newPage();
  await signIn(page, ada);
  await page.getByRole('heading', { level: 1, name: acme.name }).waitFor();
  await page.getByText('No clusters yet').waitFor();
  const name = unique('gpu');
  await page.getByLabel('Cluster name').fill(name);
  await page.getByLabel('CPU capacity').fill('4');
  await page.getByLabel('Memory capacity').fill('8Gi');
  await page.getByLabel('GPU capacity').fill('1');
  await page.getByLabel('Queueing').selectOption('strict');
  await page.getByRole('button', { name: 'Create cluster' }).click();
  await page.getByRole('heading', { level: 1, name }).waitFor();
  await live(page);
  const meter = page.getByRole('meter', { name: 'CPU' });
  assert.equal(await meter.getAttribute('aria-valuemax'), '4000');
  assert.equal(await meter.getAttribute('aria-valuenow'), '0');
  assert.match(await page.locator('.meta').innerText(), /strict queueing/);
  // A second one with the same name: the server's problem, in its words.
  await page.getByRole('link', { name: 'All clusters' }).click();
  await page.getByLabel('Cluster name').fill(name);
  await page.getByRole('button', { name: 'Create cluster' }).click();
  assert.match(await page.getByRole('alert').innerText(), /a cluster with this name already exists/);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a submission from the page queues, and is admitted live when another is stopped through the API', async () => {
  const c = await cluster(ada, acme.id, { cpu: 4000, memory: 8192 });
  const big = await submit(ada, c.id, { name: 'big', cpu: 3000 });
  assert.equal(big.status, 'running');
  const page = await newPage();
  await signIn(page, ada, `#/clusters/${c.id}`);
  await page.getByRole('heading', { level: 1, name: c.name }).waitFor();
  await live(page);
  await page.getByRole('button', { name: 'Stop big' }).waitFor();

  // 2 CPUs do not fit beside big's 3 of 4: it waits, first in the queue.
  await fillSubmit(page, { name: 'sweep', cpu: '2' });
  await page.getByRole('button', { name: 'Submit' }).click();
  await page.getByRole('status').filter({ hasText: 'sweep queued at position 1' }).waitFor();
  const queue = page.getByRole('table', { name: /^Queue/ });
  const row = queue.getByRole('row').filter({ hasText: 'sweep' });
  await row.waitFor();
  assert.match(await row.innerText(), /^1\s+sweep\s+500/);
  await row.getByText('waiting for capacity').waitFor();
  assert.equal(await page.getByRole('meter', { name: 'CPU' }).getAttribute('aria-valuenow'), '3000');

  // Nothing reloads: a mark left on the window stays, and the stream brings the change; no
  // read of the cluster or of its running deployments happens meanwhile (no polling).
  await page.evaluate(() => (window.__sameDocument = true));
  const reads = [];
  page.on('request', (r) => {
    const path = new URL(r.url()).pathname + new URL(r.url()).search;
    if (path === `/v1/clusters/${c.id}` || path.includes('status=running')) reads.push(path);
  });
  const stopped = Date.now();
  await call('POST', `/v1/deployments/${big.id}/stop`, { token: ada.token });
  const running = page.getByRole('table', { name: /^Running/ });
  await running.getByRole('row').filter({ hasText: 'sweep' }).waitFor({ timeout: 5000 });
  const seen = Date.now() - stopped;
  await page.getByText('Nothing waits.').waitFor();
  await page.getByRole('button', { name: 'Stop big' }).waitFor({ state: 'detached' });
  await page.waitForFunction(() => document.querySelector('[role=meter]')?.getAttribute('aria-valuenow') === '2000');
  assert.equal(await page.evaluate(() => window.__sameDocument), true);
  assert.deepEqual(reads, []);
  await live(page);
  assert.ok(seen < 5000, `admitted on the page ${seen} ms after the stop`);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the keyboard alone submits a deployment', async () => {
  const c = await cluster(ada, acme.id);
  const page = await newPage();
  await signIn(page, ada, `#/clusters/${c.id}`);
  await live(page);
  // From the top of the page, Tab until the form's first field has the focus.
  await page.evaluate(() => document.activeElement?.blur());
  let tabs = 0;
  while ((await page.evaluate(() => document.activeElement?.id)) !== 'deploy-name') {
    assert.ok(++tabs < 30, 'the name field is reachable with Tab');
    await page.keyboard.press('Tab');
  }
  // The focus is visible where it is.
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.equal(outline, 'solid');
  await page.keyboard.type('typed');
  await page.keyboard.press('Tab');
  await page.keyboard.type('ghcr.io/acme/eval:2');
  await page.keyboard.press('Tab'); // CPU: keep 1
  await page.keyboard.press('Tab'); // Memory: 1Gi
  await page.keyboard.press('Enter');
  await page.getByRole('status').filter({ hasText: 'typed is running' }).waitFor();
  await page.getByRole('table', { name: /^Running/ }).getByRole('row').filter({ hasText: 'typed' }).waitFor();
  // The Stop button is a real button: Tab reaches it, Enter presses it.
  tabs = 0;
  while ((await page.evaluate(() => document.activeElement?.getAttribute('aria-label'))) !== 'Stop typed') {
    assert.ok(++tabs < 30, 'the Stop button is reachable with Tab');
    await page.keyboard.press('Tab');
  }
  await page.keyboard.press('Enter');
  await page.getByText('Nothing runs.').waitFor();
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('an invalid submission shows every field the server refused', async () => {
  const c = await cluster(ada, acme.id, { cpu: 2000 });
  const page = await newPage();
  await signIn(page, ada, `#/clusters/${c.id}`);
  await live(page);
  const form = await fillSubmit(page, { name: 'huge', cpu: '64' });
  await form.getByLabel('Image').fill('Not An Image!');
  await form.getByRole('button', { name: 'Submit' }).click();
  const alert = form.getByRole('alert');
  await alert.waitFor();
  assert.match(await alert.innerText(), /Invalid request fields/);
  assert.match(await alert.innerText(), /image/);
  assert.equal(await form.getByLabel('Image').getAttribute('aria-invalid'), 'true');
  // A request larger than the cluster could ever hold is refused too, with its reason.
  await form.getByLabel('Image').fill('ghcr.io/acme/trainer:1.4');
  await form.getByRole('button', { name: 'Submit' }).click();
  await form.getByRole('alert').filter({ hasText: 'cpu_millis' }).waitFor();
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("a deployment's timeline grows live, and its page stops it", async () => {
  const c = await cluster(ada, acme.id, { cpu: 2000 });
  const first = await submit(ada, c.id, { name: 'first', cpu: 2000 });
  const second = await submit(ada, c.id, { name: 'second', cpu: 2000 });
  assert.equal(second.status, 'queued');
  const page = await newPage();
  await signIn(page, ada, `#/deployments/${second.id}`);
  await page.getByRole('heading', { level: 1, name: 'second' }).waitFor();
  await live(page);
  const timeline = page.getByRole('list', { name: 'Timeline' });
  assert.deepEqual(await timeline.locator('strong').allInnerTexts(), ['created']);
  await page.getByRole('button', { name: 'Cancel second' }).waitFor();
  await call('POST', `/v1/deployments/${first.id}/stop`, { token: ada.token });
  await timeline.getByText('admitted', { exact: true }).waitFor({ timeout: 5000 });
  await page.getByRole('button', { name: 'Stop second' }).click();
  await timeline.getByText('stopped', { exact: true }).waitFor();
  assert.deepEqual(await timeline.locator('strong').allInnerTexts(), ['created', 'admitted', 'stopped']);
  assert.equal(await page.getByRole('button', { name: /^(Stop|Cancel) second/ }).count(), 0);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a running deployment shows its agent, and agents come and go live', async (t) => {
  const c = await cluster(ada, acme.id, { cpu: 4000, memory: 8192 });
  const page = await newPage();
  await signIn(page, ada, `#/clusters/${c.id}`);
  await live(page);
  await page.getByText('No agent has connected').waitFor();
  const agent = await startAgent(ada, c.id, 'rack-1', { cpu: '2', memory: '2Gi' });
  t.after(() => stopAgent(agent));
  const agents = page.getByRole('table', { name: 'Agents' });
  const rack = agents.getByRole('row').filter({ hasText: 'rack-1' });
  const status = (s) => rack.getByRole('cell', { name: s, exact: true });
  await status('connected').waitFor({ timeout: 15_000 }).catch((e) => {
    throw new Error(`${e.message}\nthe agent's log:\n${agent.log}`);
  });
  assert.match(await rack.innerText(), /2 CPU, 2Gi/);

  // Submitted from the page with a command, which the agent runs.
  const form = await fillSubmit(page, { name: 'napper', cpu: '1' });
  await form.getByLabel('Command (optional)').fill('sleep 300');
  await form.getByRole('button', { name: 'Submit' }).click();
  const row = page.getByRole('table', { name: /^Running/ }).getByRole('row').filter({ hasText: 'napper' });
  await row.getByRole('cell', { name: 'rack-1', exact: true }).waitFor({ timeout: 15_000 });
  await rack.getByRole('cell', { name: '1', exact: true }).waitFor(); // running on it
  await row.getByRole('button', { name: 'Stop napper' }).click();
  await page.getByText('Nothing runs.').waitFor();

  // The agent stops: the page hears it leave.
  await stopAgent(agent);
  await status('disconnected').waitFor({ timeout: 15_000 });
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('an organization of five clusters streams four and reads the fifth; a cluster opened from it is live', async () => {
  const team = await org(ada);
  const names = [];
  for (let i = 1; i <= 5; i++) names.push((await cluster(ada, team.id, { name: `c${i}` })).name);
  const page = await newPage();
  await signIn(page, ada, `#/orgs/${team.id}`);
  for (const name of names) await page.getByRole('link', { name, exact: true }).waitFor();
  await page.waitForFunction(() => document.querySelectorAll('.cards [role=status]').length === 5);
  const badges = async () => (await page.locator('.cards [role=status]').allInnerTexts()).sort();
  await page.waitForFunction(() => [...document.querySelectorAll('.cards [role=status]')].every((b) => !/Connecting/.test(b.textContent)));
  assert.deepEqual(await badges(), ['Live', 'Live', 'Live', 'Live', 'Refreshing every 15 s']);
  await page.getByRole('link', { name: 'c5', exact: true }).click();
  await page.getByRole('heading', { level: 1, name: 'c5' }).waitFor();
  await live(page);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
