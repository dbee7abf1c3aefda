// Signing in and out, a failed sign-in, a session across a reload, and what a viewer sees.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { closeBrowser, cluster, join, newPage, org, signIn, submit, user, PASSWORD } from './support.mjs';

let ada, vic, acme, gpu;
before(async () => {
  ada = await user('ada');
  vic = await user('vic');
  acme = await org(ada);
  await join(ada, acme.id, vic, 'viewer');
  gpu = await cluster(ada, acme.id);
  await submit(ada, gpu.id, { name: 'trainer' });
});
after(closeBrowser);

test('signing in opens the only organization, and a reload keeps the session', async () => {
  const page = await newPage();
  // The Worker's home page is the dashboard.
  await page.goto('/');
  assert.equal(new URL(page.url()).pathname, '/app/');
  await signIn(page, ada);
  await page.getByRole('heading', { level: 1, name: acme.name }).waitFor();
  await page.getByRole('link', { name: gpu.name }).waitFor();
  assert.equal(await page.getByRole('combobox', { name: 'Organization' }).inputValue(), acme.id);
  // The access token was in memory only; the refresh token in sessionStorage brings a new one.
  assert.equal(await page.evaluate(() => Object.keys(sessionStorage).join()), 'berth.refresh_token');
  assert.equal(await page.evaluate(() => Object.keys(localStorage).length), 0);
  await page.reload();
  await page.getByRole('heading', { level: 1, name: acme.name }).waitFor();
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('button', { name: 'Sign in' }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a failed sign-in says why, and signs nobody in', async () => {
  const page = await newPage();
  await page.goto('/app/');
  await page.getByLabel('E-mail').fill(ada.email);
  await page.getByLabel('Password').fill(`${PASSWORD} but wrong`);
  await page.getByRole('button', { name: 'Sign in' }).click();
  const alert = page.getByRole('alert');
  await alert.waitFor();
  assert.match(await alert.innerText(), /wrong e-mail or password/);
  assert.equal(await page.getByRole('button', { name: 'Sign out' }).count(), 0);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await page.context().close();
});

test('a viewer sees the cluster but no control a viewer may not use', async () => {
  const page = await newPage();
  await signIn(page, vic, `#/clusters/${gpu.id}`);
  await page.getByRole('heading', { level: 1, name: gpu.name }).waitFor();
  await page.getByRole('link', { name: 'trainer' }).waitFor();
  await page.getByRole('meter', { name: 'CPU' }).waitFor();
  for (const name of ['Submit', /^Stop/, /^Cancel/]) {
    assert.equal(await page.getByRole('button', { name }).count(), 0, `no ${name} button`);
  }
  assert.equal(await page.getByRole('heading', { name: 'Submit a deployment' }).count(), 0);
  // Nor on the deployment's page, nor a cluster form on the organization's.
  await page.getByRole('link', { name: 'trainer' }).click();
  await page.getByRole('heading', { name: 'Timeline' }).waitFor();
  assert.equal(await page.getByRole('button', { name: /^Stop/ }).count(), 0);
  await page.goto(`/app/#/orgs/${acme.id}`);
  await page.getByRole('link', { name: gpu.name }).waitFor();
  assert.equal(await page.getByRole('button', { name: 'Create cluster' }).count(), 0);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
