// Every page at desktop (1280×800) and phone (375×812) width: a screenshot of each in
// logs/test/screenshots/, and at phone width no page is wider than the screen.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { call, closeBrowser, cluster, DESKTOP, newPage, org, PHONE, screenshot, scrollsSideways, signIn, startAgent, stopAgent, user } from './support.mjs';

let ada, acme, gpu, trainer, agent;
before(async () => {
  // A cluster with some history: trainer was preempted by hotfix, ran again once hotfix
  // stopped, then was preempted by sweep; it waits with batch, while eval, sweep and notebook
  // run.
  ada = await user('ada');
  acme = await org(ada, 'Acme Research');
  await org(ada, 'Acme Labs');
  const c = await call('POST', `/v1/orgs/${acme.id}/clusters`, {
    token: ada.token,
    body: { name: 'gpu-east', capacity: { cpu_millis: 16000, memory_mib: 65536, gpus: 4 }, preemption: true },
  });
  gpu = c;
  await cluster(ada, acme.id, { name: 'cpu-west', cpu: 32000, memory: 131072 });
  // A machine runs them (their command is a sleep, with the exec driver).
  agent = await startAgent(ada, c.id, 'gpu-node-1', { cpu: '16', memory: '64Gi', gpus: '4' });
  for (let i = 0; ; i++) {
    const { items } = await call('GET', `/v1/clusters/${c.id}/agents`, { token: ada.token });
    if (items.some((a) => a.status === 'connected')) break;
    if (i === 100) throw new Error(`the agent did not connect:\n${agent.log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const deploy = (name, cpu, memory, gpus, priority) =>
    call('POST', `/v1/clusters/${c.id}/deployments`, {
      token: ada.token,
      body: {
        name,
        image: `ghcr.io/acme/${name}:1.4`,
        resources: { cpu_millis: cpu, memory_mib: memory, gpus },
        priority,
        command: ['sleep', '600'],
      },
    });
  trainer = await deploy('trainer', 8000, 32768, 2, 300);
  await deploy('eval', 4000, 16384, 2, 500);
  const hotfix = await deploy('hotfix', 4000, 8192, 2, 900);
  await call('POST', `/v1/deployments/${hotfix.id}/stop`, { token: ada.token });
  await deploy('sweep', 6000, 24576, 2, 700);
  await deploy('notebook', 2000, 4096, 0, 100);
  await deploy('batch', 8000, 8192, 0, 200);
});
after(async () => {
  await closeBrowser();
  await stopAgent(agent);
});

for (const [width, viewport] of [['desktop', DESKTOP], ['phone', PHONE]]) {
  test(`every page at ${width} width${width === 'phone' ? ', none wider than the screen' : ''}`, async () => {
    const page = await newPage(viewport);
    const shoot = async (name) => {
      await page.evaluate(() => document.activeElement?.blur());
      await screenshot(page, name);
      assert.equal(await scrollsSideways(page), false, `${name} scrolls sideways at ${viewport.width} px`);
    };
    await page.goto('/app/');
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    await shoot('1-sign-in');

    await signIn(page, ada);
    await page.getByRole('link', { name: 'Berth' }).click();
    await page.getByRole('heading', { level: 1, name: 'Organizations' }).waitFor();
    await shoot('2-organizations');

    await page.getByRole('link', { name: 'Acme Research' }).click();
    await page.getByRole('link', { name: 'gpu-east' }).waitFor();
    await page.getByRole('meter', { name: 'GPUs' }).first().waitFor();
    await page.getByRole('status', { name: 'Updates: Live' }).first().waitFor();
    await shoot('3-organization-clusters');

    await page.getByRole('link', { name: 'gpu-east' }).click();
    await page.getByRole('table', { name: /^Queue/ }).getByText('trainer').waitFor();
    const sweep = page.getByRole('table', { name: /^Running/ }).getByRole('row').filter({ hasText: 'sweep' });
    await sweep.getByRole('cell', { name: /gpu-node-1/ }).waitFor();
    await page.getByRole('table', { name: 'Agents' }).getByRole('cell', { name: /\bconnected$/ }).waitFor();
    await page.getByRole('status', { name: 'Updates: Live' }).waitFor();
    await shoot('4-cluster-overview');

    await page.getByRole('link', { name: 'trainer' }).click();
    const timeline = page.getByRole('list', { name: 'Timeline' });
    await timeline.getByRole('link', { name: 'by hotfix' }).waitFor();
    await timeline.getByRole('link', { name: 'by sweep' }).waitFor();
    await shoot('5-deployment-timeline');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });
}
