// One deployment: what it is, where it runs, and its events as a timeline, live.

import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, get } from './api.js';
import { age, formatResources, time, words } from './units.js';
import { atLeast, LiveBadge, Page, Problem, Status, useFeed, useSession, useTick } from './ui.jsx';

export function DeploymentPage({ id }) {
  const { roleOf, setOrg } = useSession();
  const [d, setD] = useState(null);
  const [error, setError] = useState(null);
  const [actionError, setActionError] = useState(null);
  const load = useCallback(() => get(`/v1/deployments/${id}`).then(setD, setError), [id]);
  useEffect(() => {
    setD(null);
    setError(null);
    load();
  }, [id]);
  // Its cluster's stream says when it changed; the read brings its new events.
  const feed = useFeed(d?.cluster_id, { onDeployment: (x) => x.id === id && load() });
  useEffect(() => d && setOrg(d.org_id), [d?.org_id]);
  useTick(5000);
  // The names of the deployments its events name (its preemptors).
  const [names, setNames] = useState({});
  const others = [...new Set((d?.events || []).map((e) => e.by_deployment).filter(Boolean))];
  useEffect(() => {
    for (const other of others.filter((o) => !(o in names))) {
      get(`/v1/deployments/${other}`).then(
        (x) => setNames((n) => ({ ...n, [other]: x.name })),
        () => setNames((n) => ({ ...n, [other]: null })),
      );
    }
  }, [others.join()]);

  if (!d) {
    return <Page title="Deployment">{error ? <Problem error={error} /> : <p class="muted">Reading the deployment…</p>}</Page>;
  }
  const canAct = atLeast(roleOf(d.org_id), 'developer');

  async function act(verb) {
    setActionError(null);
    try {
      setD({ ...d, ...(await api('POST', `/v1/deployments/${d.id}/${verb}`)) });
      load();
    } catch (err) {
      setActionError(err);
    }
  }

  const rows = [
    ['Status', <>
      <Status status={d.status} />
      {d.status === 'queued' && d.position ? ` at position ${d.position}` : ''}
      {d.placement ? ` (${words(d.placement)})` : ''}
    </>],
    ['Cluster', <a href={`#/clusters/${d.cluster_id}`}>{feed?.cluster?.name || d.cluster_id}</a>],
    ['Image', <code>{d.image}</code>],
    ['Resources', formatResources(d.resources)],
    ['Priority', d.priority],
    ['Agent', d.agent ? d.agent.name : '–'],
    ['Command', d.command ? <code>{d.command.join(' ')}</code> : '–'],
    ['Max runtime', d.max_runtime_seconds ? `${d.max_runtime_seconds}s` : '–'],
    ['Preemptions', d.preemptions],
    ['Message', d.message || '–'],
    ['Created', time(d.created_at)],
    ['Admitted', d.admitted_at ? `${time(d.admitted_at)} (${age(d.admitted_at)} ago)` : '–'],
    ['Started', time(d.started_at)],
    ['Deadline', time(d.deadline_at)],
    ['Finished', time(d.finished_at)],
    ['Exit code', d.exit_code ?? '–'],
    ['Id', <code>{d.id}</code>],
  ];

  return (
    <Page title={d.name} aside={feed && <LiveBadge mode={feed.mode} />}>
      <p class="meta">
        <a href={`#/clusters/${d.cluster_id}`}>Back to {feed?.cluster?.name || 'its cluster'}</a>
      </p>
      {canAct && (d.status === 'running' || d.status === 'queued') && (
        <div class="toolbar">
          {d.status === 'running' && (
            <button type="button" class="danger" onClick={() => act('stop')}>
              Stop {d.name}
            </button>
          )}
          {d.status === 'queued' && (
            <button type="button" class="danger" onClick={() => act('cancel')}>
              Cancel {d.name}
            </button>
          )}
        </div>
      )}
      <Problem error={actionError || error} />
      <div class="columns">
        <section aria-labelledby="timeline-h" class="panel">
          <h2 id="timeline-h">Timeline</h2>
          <ol class="timeline" aria-labelledby="timeline-h">
            {(d.events || []).map((e, i) => (
              <li key={i} class={`event ${e.kind}`}>
                <time dateTime={e.at}>{time(e.at)}</time>
                <strong>{words(e.kind)}</strong>
                {e.reason && <span class="reason">{e.reason}</span>}
                {e.by_deployment && (
                  <a href={`#/deployments/${e.by_deployment}`} class="by">
                    by {names[e.by_deployment] || 'another deployment'}
                  </a>
                )}
              </li>
            ))}
          </ol>
        </section>
        <section aria-labelledby="details-h" class="panel">
          <h2 id="details-h">Details</h2>
          <dl class="details">
            {rows.map(([k, v]) => (
              <div key={k}>
                <dt>{k}</dt>
                <dd>{v}</dd>
              </div>
            ))}
          </dl>
        </section>
      </div>
    </Page>
  );
}
