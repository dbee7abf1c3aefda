// Berth's dashboard: a page of the Worker's own assets (/app/), talking to its API.
// Routes are in the hash (#/orgs/ID, #/clusters/ID, #/deployments/ID), so every view is
// the same static page.

import './app.css';
import { render } from 'preact';
import { useEffect, useMemo, useState } from 'preact/hooks';
import { get, hasSession, logout, onSignedOut } from './api.js';
import { ClusterPage } from './cluster.jsx';
import { DeploymentPage } from './deployment.jsx';
import { Login } from './login.jsx';
import { Home, Overview } from './orgs.jsx';
import { navigate, Page, Problem, Session } from './ui.jsx';

function useHash() {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return hash.replace(/^#/, '') || '/';
}

function route(path) {
  const m = /^\/(orgs|clusters|deployments)\/([0-9a-fA-F-]{36})$/.exec(path);
  if (!m) return path === '/' ? <Home /> : <NotFound />;
  const [, kind, id] = m;
  if (kind === 'orgs') return <Overview key={id} orgId={id} />;
  if (kind === 'clusters') return <ClusterPage key={id} id={id} />;
  return <DeploymentPage key={id} id={id} />;
}

function NotFound() {
  return (
    <Page title="Not found">
      <p>
        No such page. <a href="#/">Your organizations</a>
      </p>
    </Page>
  );
}

function App() {
  const [me, setMe] = useState(null);
  const [state, setState] = useState(hasSession() ? 'resuming' : 'out');
  const [error, setError] = useState(null);

  async function loadMe() {
    try {
      setMe(await get('/v1/me'));
      setState('in');
    } catch (err) {
      if (err.status === 401) setState('out');
      else setError(err);
    }
  }
  useEffect(() => onSignedOut(() => setState('out')), []);
  useEffect(() => {
    if (state === 'resuming') loadMe();
  }, []);

  if (state === 'out') return <Login onSignedIn={loadMe} />;
  if (!me) {
    return (
      <main id="main" class="login">
        {error ? <Problem error={error} /> : <p class="muted">Signing in…</p>}
      </main>
    );
  }
  return <Shell me={me} reloadMe={loadMe} />;
}

function Shell({ me, reloadMe }) {
  const path = useHash();
  const [org, setOrg] = useState(null);
  const session = useMemo(
    () => ({
      me,
      reloadMe,
      setOrg,
      roleOf: (orgId) => me.memberships.find((m) => m.org_id === orgId)?.role ?? null,
      orgName: (orgId) => me.memberships.find((m) => m.org_id === orgId)?.org_name ?? 'Organization',
    }),
    [me],
  );
  const current = path === '/' ? null : org;

  return (
    <Session.Provider value={session}>
      <a class="skip" href="#main" onClick={(e) => { e.preventDefault(); document.querySelector('#main h1')?.focus(); }}>
        Skip to content
      </a>
      <header class="top">
        <nav aria-label="Main">
          <a class="brand" href="#/">
            Berth
          </a>
          {me.memberships.length > 0 && (
            <span class="org-pick">
              <label for="org-select">Organization</label>
              <select
                id="org-select"
                value={current || ''}
                onChange={(e) => e.currentTarget.value && navigate(`#/orgs/${e.currentTarget.value}`)}
              >
                {!current && <option value="">Choose…</option>}
                {me.memberships.map((m) => (
                  <option key={m.org_id} value={m.org_id}>
                    {m.org_name} ({m.role})
                  </option>
                ))}
              </select>
            </span>
          )}
        </nav>
        <div class="who">
          <span class="email">{me.user.email}</span>
          <button type="button" onClick={() => logout()}>
            Sign out
          </button>
        </div>
      </header>
      {route(path)}
    </Session.Provider>
  );
}

render(<App />, document.getElementById('root'));
