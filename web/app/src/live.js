// A cluster as it changes: `GET /v1/clusters/{id}/watch` read with fetch (EventSource cannot
// send the Authorization header) and parsed by eventsource-parser. The snapshot gives the
// cluster, its usage, the head of its queue and its agents; `deployment`, `usage` and `agent`
// events change them; `deleted` ends it for good. A stream that ends otherwise (`end`: the
// access token expired, the watcher was too slow; or the server went away) is opened again
// with a fresh token and `Last-Event-ID`; a fresh snapshot then replaces everything.

import { createParser } from 'eventsource-parser';
import { ApiError, all, answer, get, refresh, token } from './api.js';

/** Streams open at once from one page: HTTP/1.1 (wrangler dev) allows a browser 6 per host. */
const MAX_STREAMS = 4;
/** How often a feed that has no stream reads the cluster instead. */
const POLL_MS = 15_000;
/** How much of the queue is kept, as the snapshot gives it. */
const QUEUE_HEAD = 50;
let streams = 0;

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });

/**
 * One cluster, live. `detail` also keeps the running deployments (read once after each
 * snapshot, then kept from the events). `onChange(state)` after every change;
 * `onDeployment(deployment)` for every deployment event.
 */
export class ClusterFeed {
  constructor(clusterId, { detail = false, onChange = () => {}, onDeployment = () => {} } = {}) {
    this.id = clusterId;
    this.detail = detail;
    this.onChange = onChange;
    this.onDeployment = onDeployment;
    this.abort = new AbortController();
    this.lastId = null;
    this.events = 0; // deployment events seen: a queue read started before the last one is stale
    this.queueTimer = null;
    this.state = {
      cluster: null,
      usage: null,
      queue: [],
      agents: [],
      running: [],
      /** `connecting`, `live`, `reconnecting`, `polling` or `failed` */
      mode: 'connecting',
      error: null,
    };
  }

  set(patch) {
    this.state = { ...this.state, ...patch };
    this.onChange(this.state);
  }

  start() {
    if (streams < MAX_STREAMS) {
      streams++;
      this.slot = true;
      this.loop().finally(() => this.release());
    } else {
      this.poll();
    }
    return this;
  }

  /** Gives the stream's place back, at once: the next page's feed may take it. */
  release() {
    if (this.slot) streams--;
    this.slot = false;
  }

  stop() {
    this.release();
    this.abort.abort();
    clearTimeout(this.queueTimer);
    this.onChange = () => {};
    this.onDeployment = () => {};
  }

  async loop() {
    const { signal } = this.abort;
    let backoff = 1000;
    while (!signal.aborted) {
      try {
        await this.stream();
        backoff = 1000; // it ended cleanly: open it again at once
      } catch (e) {
        if (signal.aborted) return;
        if (e instanceof ApiError && [403, 404].includes(e.status)) {
          this.set({ mode: 'failed', error: e });
          return;
        }
        this.set({ mode: 'reconnecting', error: e });
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, 30_000);
      }
    }
  }

  async stream() {
    const { signal } = this.abort;
    const open = async () => {
      const headers = { accept: 'text/event-stream', authorization: `Bearer ${await token()}` };
      if (this.lastId) headers['last-event-id'] = this.lastId;
      return fetch(`/v1/clusters/${this.id}/watch`, { headers, signal, cache: 'no-store' });
    };
    let res = await open();
    if (res.status === 401) {
      await refresh();
      res = await open();
    }
    if (!res.ok) await answer(res); // throws its problem
    const parser = createParser({
      onEvent: (event) => {
        if (event.id) this.lastId = event.id;
        this.handle(event.event, JSON.parse(event.data));
      },
    });
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      parser.feed(value);
    }
  }

  handle(kind, data) {
    if (kind === 'snapshot') {
      this.seen = new Map();
      this.set({
        cluster: data.cluster,
        usage: data.usage,
        queue: data.queue,
        agents: byName(data.agents),
        mode: 'live',
        error: null,
      });
      if (this.detail) this.readRunning();
    } else if (kind === 'deployment') {
      this.deployment(data);
    } else if (kind === 'usage') {
      this.set({ usage: data, mode: 'live', error: null });
    } else if (kind === 'deleted') {
      this.abort.abort();
      this.set({ mode: 'failed', error: new ApiError(404, { title: 'Cluster deleted', detail: data.reason }) });
    } else if (kind === 'agent') {
      const agents = this.state.agents.filter((a) => a.id !== data.id);
      agents.push(data);
      this.set({ agents: byName(agents), mode: 'live', error: null });
    }
  }

  deployment(d) {
    this.events++;
    this.seen?.set(d.id, d);
    const running = this.state.running.filter((r) => r.id !== d.id);
    if (d.status === 'running') running.push(d);
    // The queue moves at once; reasons and effective priorities come with a read just after.
    const old = this.state.queue.find((q) => q.deployment_id === d.id);
    const queue = this.state.queue.filter((q) => q.deployment_id !== d.id);
    if (d.status === 'queued' && d.position && d.position <= QUEUE_HEAD) {
      queue.splice(d.position - 1, 0, {
        deployment_id: d.id,
        name: d.name,
        priority: d.priority,
        effective_priority: old?.effective_priority ?? d.priority,
        resources: d.resources,
        enqueued_at: d.enqueued_at,
        reason: old?.reason ?? null,
      });
    }
    this.set({
      running: sortRunning(running),
      queue: queue.map((q, i) => ({ ...q, position: i + 1 })),
      mode: 'live',
      error: null,
    });
    // Agents' events say when one connects or leaves; what each holds follows its deployments.
    this.readSoon({ queue: Boolean(old) || d.status === 'queued', agents: Boolean(d.agent) });
    this.onDeployment(d);
  }

  /**
   * What the events do not carry, read once they have settled (300 ms after the last): the
   * queue's reasons and effective priorities, what each agent holds and runs.
   */
  readSoon({ queue, agents }) {
    if (!this.detail || !(queue || agents)) return;
    this.pending = { queue: queue || this.pending?.queue, agents: agents || this.pending?.agents };
    clearTimeout(this.queueTimer);
    this.queueTimer = setTimeout(async () => {
      const events = this.events;
      const want = this.pending;
      this.pending = null;
      try {
        const read = {};
        if (want.queue) read.queue = (await get(`/v1/clusters/${this.id}/queue?limit=${QUEUE_HEAD}`)).items;
        if (want.agents) read.agents = byName(await all(`/v1/clusters/${this.id}/agents`));
        // A read that an event overtook is stale: that event asked for another one.
        if (events === this.events && !this.abort.signal.aborted) this.set(read);
        else this.readSoon(want);
      } catch {
        // the next event reads it again
      }
    }, 300);
  }

  /** The running deployments after a snapshot; events seen meanwhile win over the read. */
  async readRunning() {
    const seen = this.seen;
    try {
      const read = await all(`/v1/clusters/${this.id}/deployments?status=running`);
      if (seen !== this.seen || this.abort.signal.aborted) return; // another snapshot came
      const running = read.filter((d) => !seen.has(d.id));
      for (const d of seen.values()) if (d.status === 'running') running.push(d);
      this.set({ running: sortRunning(running) });
    } catch (e) {
      this.set({ error: e });
    }
  }

  /** No stream to spare (an organization's fifth cluster on): its usage read every POLL_MS. */
  async poll() {
    const { signal } = this.abort;
    while (!signal.aborted) {
      try {
        const { usage, ...cluster } = await get(`/v1/clusters/${this.id}`);
        if (signal.aborted) return;
        this.set({ cluster, usage, mode: 'polling', error: null });
      } catch (e) {
        if (signal.aborted) return;
        this.set({ mode: e.status === 404 ? 'failed' : 'polling', error: e });
        if (e.status === 404) return;
      }
      await sleep(POLL_MS, signal);
    }
  }
}

function sortRunning(list) {
  return list.sort((a, b) => (a.admitted_at || '').localeCompare(b.admitted_at || '') || a.id.localeCompare(b.id));
}

function byName(agents) {
  return agents.sort((a, b) => a.name.localeCompare(b.name));
}
