// One cluster, live: its usage, a submission form, the queue in scheduling order, what runs
// where, and its agents.

import { useEffect, useState } from 'preact/hooks';
import { api } from './api.js';
import { age, formatResources, parseResources, time, words } from './units.js';
import { atLeast, Field, ListTable, LiveBadge, Page, Problem, UsageBars, useFeed, useSession, useTick } from './ui.jsx';

export function ClusterPage({ id }) {
  const { roleOf, setOrg } = useSession();
  const st = useFeed(id, { detail: true });
  const [actionError, setActionError] = useState(null);
  const orgId = st?.cluster?.org_id;
  useEffect(() => orgId && setOrg(orgId), [orgId]);
  useTick(5000);

  if (!st?.cluster) {
    return (
      <Page title="Cluster" aside={st && <LiveBadge mode={st.mode} />}>
        {st?.error ? <Problem error={st.error} /> : <p class="muted">Reading the cluster…</p>}
      </Page>
    );
  }
  const { cluster, usage, queue, running, agents } = st;
  const role = roleOf(cluster.org_id);
  const canDeploy = atLeast(role, 'developer');

  async function act(d, verb) {
    setActionError(null);
    try {
      await api('POST', `/v1/deployments/${d}/${verb}`);
    } catch (err) {
      setActionError(err);
    }
  }

  return (
    <Page title={cluster.name} aside={<LiveBadge mode={st.mode} />}>
      <p class="meta">
        <a href={`#/orgs/${cluster.org_id}`}>All clusters</a> · {words(cluster.queueing)} queueing · preemption{' '}
        {cluster.preemption ? 'on' : 'off'} · agent grace {cluster.agent_grace_seconds}s
      </p>
      {st.mode !== 'live' && st.error && <Problem error={st.error} />}
      <section aria-labelledby="usage-h" class="panel">
        <h2 id="usage-h">Usage</h2>
        <UsageBars usage={usage} />
        {usage && (
          <p class="counts">
            {usage.running} running · {usage.queued} queued · {usage.agents_connected}{' '}
            {usage.agents_connected === 1 ? 'agent' : 'agents'} connected
          </p>
        )}
      </section>

      {canDeploy && <SubmitForm clusterId={cluster.id} />}
      <Problem error={actionError} />

      <section aria-labelledby="queue-h">
        <h2 id="queue-h">Queue{usage ? ` (${usage.queued})` : ''}</h2>
        {queue.length === 0 ? (
          <p class="muted">Nothing waits.</p>
        ) : (
          <ListTable
            labelledBy="queue-h"
            rows={queue}
            rowKey={(q) => q.deployment_id}
            columns={[
              ['Position', (q) => q.position],
              ['Name', (q) => <a href={`#/deployments/${q.deployment_id}`}>{q.name}</a>],
              ['Priority', (q) => (
                <>
                  {q.priority}
                  {q.effective_priority !== q.priority && <span class="muted"> (effective {q.effective_priority})</span>}
                </>
              )],
              ['Resources', (q) => formatResources(q.resources)],
              ['Waiting', (q) => age(q.enqueued_at)],
              ['Reason', (q) => (q.reason ? words(q.reason) : '…')],
            ]}
            action={canDeploy && ((q) => (
              <button type="button" aria-label={`Cancel ${q.name}`} onClick={() => act(q.deployment_id, 'cancel')}>
                Cancel
              </button>
            ))}
          />
        )}
        {usage && usage.queued > queue.length && <p class="muted">and {usage.queued - queue.length} more</p>}
      </section>

      <section aria-labelledby="running-h">
        <h2 id="running-h">Running{usage ? ` (${usage.running})` : ''}</h2>
        {running.length === 0 ? (
          <p class="muted">Nothing runs.</p>
        ) : (
          <ListTable
            labelledBy="running-h"
            rows={running}
            rowKey={(d) => d.id}
            columns={[
              ['Name', (d) => <a href={`#/deployments/${d.id}`}>{d.name}</a>],
              ['Agent', placedOn],
              ['Priority', (d) => d.priority],
              ['Resources', (d) => formatResources(d.resources)],
              ['Age', (d) => <span title={`admitted ${time(d.admitted_at)}`}>{age(d.admitted_at)}</span>],
            ]}
            action={canDeploy && ((d) => (
              <button type="button" aria-label={`Stop ${d.name}`} onClick={() => act(d.id, 'stop')}>
                Stop
              </button>
            ))}
          />
        )}
      </section>

      <section aria-labelledby="agents-h">
        <h2 id="agents-h">Agents</h2>
        {agents.length === 0 ? (
          <p class="muted">No agent has connected: admitted deployments wait for one to run them.</p>
        ) : (
          <ListTable
            labelledBy="agents-h"
            rows={agents}
            rowKey={(a) => a.id}
            columns={[
              ['Name', (a) => a.name],
              ['Status', (a) => a.status],
              ['Capacity', (a) => formatResources(a.capacity)],
              ['Placed', (a) => formatResources(a.placed)],
              ['Running', (a) => a.running],
              ['Last seen', (a) => `${age(a.last_seen_at)} ago`],
            ]}
          />
        )}
      </section>
    </Page>
  );
}

/** Its agent, and how far the placement got while it is not started: `rack-1 (assigned)`. */
function placedOn(d) {
  if (!d.agent) return words(d.placement || 'none');
  return d.placement && d.placement !== 'started' ? `${d.agent.name} (${words(d.placement)})` : d.agent.name;
}

/** Where a problem's field shows, by its path in the request. */
const FIELD_OF = {
  name: 'deploy-name',
  image: 'deploy-image',
  'resources.cpu_millis': 'deploy-cpu',
  'resources.memory_mib': 'deploy-memory',
  'resources.gpus': 'deploy-gpus',
  priority: 'deploy-priority',
};
const fieldOf = (path) => FIELD_OF[path] || (path.startsWith('command') ? 'deploy-command' : null);

const EMPTY = { name: '', image: '', cpu: '1', memory: '1Gi', gpus: '0', priority: '500', command: '' };

/** `POST /v1/clusters/{id}/deployments`, for developers and admins. */
function SubmitForm({ clusterId }) {
  const [f, setF] = useState(EMPTY);
  const [error, setError] = useState(null);
  const [fieldErrors, setFieldErrors] = useState({});
  const [done, setDone] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (k) => (v) => setF({ ...f, [k]: v });

  async function submit(e) {
    e.preventDefault();
    setError(null);
    setDone(null);
    const { resources, errors: errs } = parseResources(f, 'deploy');
    const priority = Number(f.priority.trim() || 500);
    if (!Number.isInteger(priority) || priority < 0 || priority > 1000) errs['deploy-priority'] = 'a whole number from 0 to 1000';
    setFieldErrors(errs);
    if (Object.keys(errs).length) return;
    const body = { name: f.name.trim(), image: f.image.trim(), resources, priority };
    const command = f.command.trim().split(/\s+/).filter(Boolean);
    if (command.length) body.command = command;
    setBusy(true);
    try {
      const d = await api('POST', `/v1/clusters/${clusterId}/deployments`, body);
      setDone(d);
      setF({ ...f, name: '' });
    } catch (err) {
      setError(err);
      setFieldErrors(Object.fromEntries(err.errors.filter((x) => fieldOf(x.field)).map((x) => [fieldOf(x.field), x.message])));
    } finally {
      setBusy(false);
    }
  }

  return (
    <form class="panel" onSubmit={submit} noValidate aria-labelledby="submit-h">
      <h2 id="submit-h">Submit a deployment</h2>
      <div class="grid">
        <Field wide label="Name" id="deploy-name" required maxLength={100} value={f.name} onValue={set('name')} error={fieldErrors['deploy-name']} />
        <Field wide label="Image" id="deploy-image" required placeholder="ghcr.io/acme/trainer:1.4" value={f.image} onValue={set('image')} error={fieldErrors['deploy-image']} />
        <Field label="CPU" id="deploy-cpu" inputMode="decimal" hint="cores, or 500m" value={f.cpu} onValue={set('cpu')} error={fieldErrors['deploy-cpu']} />
        <Field label="Memory" id="deploy-memory" hint="512Mi, 4Gi" value={f.memory} onValue={set('memory')} error={fieldErrors['deploy-memory']} />
        <Field label="GPUs" id="deploy-gpus" inputMode="numeric" value={f.gpus} onValue={set('gpus')} error={fieldErrors['deploy-gpus']} />
        <Field label="Priority" id="deploy-priority" inputMode="numeric" hint="0–1000, higher first" value={f.priority} onValue={set('priority')} error={fieldErrors['deploy-priority']} />
        <Field wide label="Command (optional)" id="deploy-command" hint="replaces the image's; words split at spaces" value={f.command} onValue={set('command')} error={fieldErrors['deploy-command']} />
      </div>
      <Problem error={error} />
      <div class="form-foot">
        <button type="submit" class="primary" disabled={busy}>
          Submit
        </button>
        <p role="status" class="done">
          {done && (
            <>
              <a href={`#/deployments/${done.id}`}>{done.name}</a>{' '}
              {done.status === 'queued' ? `queued at position ${done.position}` : `is ${done.status}`}.
            </>
          )}
        </p>
      </div>
    </form>
  );
}
