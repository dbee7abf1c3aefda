// The organizations, and one organization's clusters at a glance.

import { useEffect, useState } from 'preact/hooks';
import { all, api } from './api.js';
import { parseResources } from './units.js';
import { atLeast, Field, LiveBadge, navigate, Page, Problem, UsageBars, useFeed, useSession } from './ui.jsx';

let firstVisit = true;

/** The caller's organizations; with only one, it opens at once (the first time). */
export function Home() {
  const { me, reloadMe } = useSession();
  const only = me.memberships.length === 1 ? me.memberships[0] : null;
  const redirect = firstVisit && only;
  firstVisit = false;
  useEffect(() => {
    if (redirect) navigate(`#/orgs/${only.org_id}`, true);
  }, []);
  const [name, setName] = useState('');
  const [error, setError] = useState(null);

  async function create(e) {
    e.preventDefault();
    setError(null);
    try {
      const org = await api('POST', '/v1/orgs', { name: name.trim() });
      await reloadMe();
      navigate(`#/orgs/${org.id}`);
    } catch (err) {
      setError(err);
    }
  }

  return (
    <Page title="Organizations">
      {me.memberships.length === 0 ? (
        <p>You are not in any organization yet: create one, or join one with an invite code.</p>
      ) : (
        <ul class="orgs">
          {me.memberships.map((m) => (
            <li key={m.org_id}>
              <a href={`#/orgs/${m.org_id}`}>{m.org_name}</a> <span class="role">{m.role}</span>
            </li>
          ))}
        </ul>
      )}
      <form class="panel" onSubmit={create}>
        <h2>New organization</h2>
        <Field label="Organization name" id="org-name" required maxLength={100} value={name} onValue={setName} />
        <Problem error={error} />
        <button type="submit">Create organization</button>
      </form>
    </Page>
  );
}

/** An organization: every cluster with its usage, live; admins may create one. */
export function Overview({ orgId }) {
  const { roleOf, orgName, setOrg } = useSession();
  const role = roleOf(orgId);
  const [clusters, setClusters] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => setOrg(orgId), [orgId]);
  useEffect(() => {
    setClusters(null);
    all(`/v1/orgs/${orgId}/clusters`).then(setClusters, setError);
  }, [orgId]);

  if (!role) {
    return (
      <Page title="Organization">
        <p>You are not a member of this organization.</p>
      </Page>
    );
  }
  return (
    <Page title={orgName(orgId)} aside={<span class="role">your role: {role}</span>}>
      <Problem error={error} />
      <h2 class="section">Clusters</h2>
      {clusters === null && !error && <p class="muted">Reading clusters…</p>}
      {clusters?.length === 0 && (
        <p>No clusters yet.{atLeast(role, 'admin') ? ' Create one below.' : ' An admin of this organization can create one.'}</p>
      )}
      {clusters?.length > 0 && (
        <ul class="cards">
          {clusters.map((c) => (
            <ClusterCard key={c.id} cluster={c} />
          ))}
        </ul>
      )}
      {atLeast(role, 'admin') && (
        <CreateCluster orgId={orgId} onCreated={(c) => navigate(`#/clusters/${c.id}`)} />
      )}
    </Page>
  );
}

function ClusterCard({ cluster }) {
  const st = useFeed(cluster.id);
  const usage = st?.usage;
  const c = st?.cluster || cluster;
  return (
    <li class="card">
      <div class="card-head">
        <h3>
          <a href={`#/clusters/${cluster.id}`}>{c.name}</a>
        </h3>
        {st && <LiveBadge mode={st.mode} />}
      </div>
      <UsageBars usage={usage} />
      {usage && (
        <p class="counts">
          {usage.running} running · {usage.queued} queued · {usage.agents_connected}{' '}
          {usage.agents_connected === 1 ? 'agent' : 'agents'}
        </p>
      )}
      <Problem error={st?.mode === 'failed' ? st.error : null} />
    </li>
  );
}

const FIELD_OF = {
  name: 'cluster-name',
  'capacity.cpu_millis': 'cluster-cpu',
  'capacity.memory_mib': 'cluster-memory',
  'capacity.gpus': 'cluster-gpus',
};

/** `POST /v1/orgs/{org}/clusters`, for admins. */
function CreateCluster({ orgId, onCreated }) {
  const [f, setF] = useState({ name: '', cpu: '8', memory: '32Gi', gpus: '0', queueing: 'best_effort', preemption: false });
  const [error, setError] = useState(null);
  const [fieldErrors, setFieldErrors] = useState({});
  const set = (k) => (v) => setF({ ...f, [k]: v });

  async function submit(e) {
    e.preventDefault();
    setError(null);
    const { resources: capacity, errors: errs } = parseResources(f, 'cluster');
    setFieldErrors(errs);
    if (Object.keys(errs).length) return;
    try {
      const c = await api('POST', `/v1/orgs/${orgId}/clusters`, {
        name: f.name.trim(),
        capacity,
        queueing: f.queueing,
        preemption: f.preemption,
      });
      onCreated(c);
    } catch (err) {
      setError(err);
      setFieldErrors(Object.fromEntries(err.errors.filter((x) => FIELD_OF[x.field]).map((x) => [FIELD_OF[x.field], x.message])));
    }
  }

  return (
    <form class="panel" onSubmit={submit} noValidate>
      <h2>New cluster</h2>
      <div class="grid">
        <Field wide label="Cluster name" id="cluster-name" required maxLength={100} value={f.name} onValue={set('name')} error={fieldErrors['cluster-name']} />
        <Field label="CPU capacity" id="cluster-cpu" inputMode="decimal" hint="cores, or 500m" value={f.cpu} onValue={set('cpu')} error={fieldErrors['cluster-cpu']} />
        <Field label="Memory capacity" id="cluster-memory" hint="512Mi, 64Gi, 1Ti" value={f.memory} onValue={set('memory')} error={fieldErrors['cluster-memory']} />
        <Field label="GPU capacity" id="cluster-gpus" inputMode="numeric" value={f.gpus} onValue={set('gpus')} error={fieldErrors['cluster-gpus']} />
        <div class="field wide">
          <label for="cluster-queueing">Queueing</label>
          <select id="cluster-queueing" aria-describedby="cluster-queueing-hint" value={f.queueing} onChange={(e) => set('queueing')(e.currentTarget.value)}>
            <option value="best_effort">best effort</option>
            <option value="strict">strict</option>
          </select>
          <small id="cluster-queueing-hint" class="hint">
            best effort: a smaller deployment may pass one that waits; strict: nothing passes the head
          </small>
        </div>
        <div class="field check wide">
          <input id="cluster-preemption" type="checkbox" checked={f.preemption} onChange={(e) => set('preemption')(e.currentTarget.checked)} />
          <label for="cluster-preemption">Preemption (higher priorities evict lower ones)</label>
        </div>
      </div>
      <Problem error={error} />
      <div class="form-foot">
        <button type="submit" class="primary">
          Create cluster
        </button>
      </div>
    </form>
  );
}
