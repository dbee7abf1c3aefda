// Small pieces the pages share: problems, fields, usage bars, the live badge, the page frame.

import { createContext } from 'preact';
import { useContext, useEffect, useId, useRef, useState } from 'preact/hooks';
import { ClusterFeed } from './live.js';
import { RESOURCES, words } from './units.js';

/** `{ me, roleOf(orgId), reloadMe(), setOrg(orgId) }`, given by the shell. */
export const Session = createContext(null);
export const useSession = () => useContext(Session);

const RANK = { viewer: 0, developer: 1, admin: 2 };
/** Whether `role` is `least` or higher (viewer < developer < admin). */
export const atLeast = (role, least) => role != null && RANK[role] >= RANK[least];

export function navigate(hash, replace = false) {
  if (replace) location.replace(hash);
  else location.hash = hash;
}

/**
 * The frame of every page: its heading takes the focus when the page changes after a link
 * (whose page is gone, or in the header), not from under the organization selector.
 */
export function Page({ title, aside, children }) {
  const h1 = useRef(null);
  useEffect(() => {
    const at = document.activeElement;
    if (at === document.body || (at?.tagName === 'A' && at.closest('nav'))) {
      h1.current?.focus({ preventScroll: true });
    }
  }, [title]);
  return (
    <main id="main">
      <div class="title">
        <h1 tabIndex={-1} ref={h1}>
          {title}
        </h1>
        {aside}
      </div>
      {children}
    </main>
  );
}

/** A failed request, said in the problem document's own words. */
export function Problem({ error, id }) {
  if (!error) return null;
  const p = error.problem || {};
  return (
    <div class="problem" role="alert" id={id}>
      <strong>{p.title || 'Something went wrong'}</strong>
      {(p.detail || error.message) && <span>: {p.detail || error.message}</span>}
      {error.errors?.length > 0 && (
        <ul>
          {error.errors.map((e) => (
            <li key={e.field}>
              <code>{e.field}</code> {e.message}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

/** A labelled input with its own error, if any. */
export function Field({ label, id, error, hint, value, onValue, wide, ...input }) {
  const described = [hint && `${id}-hint`, error && `${id}-error`].filter(Boolean).join(' ') || undefined;
  return (
    <div class={wide ? 'field wide' : 'field'}>
      <label for={id}>{label}</label>
      <input
        id={id}
        name={id}
        value={value}
        onInput={(e) => onValue(e.currentTarget.value)}
        aria-invalid={error ? 'true' : undefined}
        aria-describedby={described}
        {...input}
      />
      {hint && (
        <small id={`${id}-hint`} class="hint">
          {hint}
        </small>
      )}
      {error && (
        <small id={`${id}-error`} class="field-error">
          {error}
        </small>
      )}
    </div>
  );
}

/** A bar per resource: allocated of capacity, with the queued demand drawn beyond it. */
export function UsageBars({ usage }) {
  const uid = useId();
  if (!usage) return <p class="muted">Reading usage…</p>;
  return (
    <div class="bars">
      {RESOURCES.map(({ key, label, format }) => {
        const cap = usage.capacity[key];
        const used = usage.allocated[key];
        const queued = usage.queued_demand[key];
        const pct = cap > 0 ? Math.min(100, (used / cap) * 100) : 0;
        const qpct = cap > 0 ? Math.min(100 - pct, (queued / cap) * 100) : 0;
        const text = `${format(used)} of ${format(cap)} allocated${queued ? `, ${format(queued)} queued` : ''}`;
        return (
          <div class="bar-row" key={key}>
            <span class="bar-label" id={`${uid}-${key}`}>
              {label}
            </span>
            <div
              class={`bar${pct >= 90 ? ' full' : pct >= 70 ? ' high' : ''}`}
              role="meter"
              aria-labelledby={`${uid}-${key}`}
              aria-valuemin={0}
              aria-valuemax={cap}
              aria-valuenow={used}
              aria-valuetext={text}
            >
              <span class="used" style={{ width: `${pct}%` }} />
              <span class="queued" style={{ width: `${qpct}%` }} />
            </div>
            <span class="bar-text">
              {format(used)} / {format(cap)}
              {cap > 0 && <span class="pct"> {Math.round((used / cap) * 100)}%</span>}
              {queued > 0 && <span class="queued-text"> · {format(queued)} queued</span>}
            </span>
          </div>
        );
      })}
    </div>
  );
}

/**
 * A table whose rows become labelled cards at phone width: `columns` are `[heading, (row) =>
 * cell]`; `action(row)`, when given, fills a last cell without a heading (its buttons).
 */
export function ListTable({ labelledBy, columns, rows, rowKey, action }) {
  return (
    <table class="list" aria-labelledby={labelledBy}>
      <thead>
        <tr>
          {columns.map(([heading]) => (
            <th scope="col" key={heading}>
              {heading}
            </th>
          ))}
          {action && (
            <th scope="col">
              <span class="visually-hidden">Actions</span>
            </th>
          )}
        </tr>
      </thead>
      <tbody>
        {rows.map((row) => (
          <tr key={rowKey(row)}>
            {columns.map(([heading, cell]) => (
              <td data-label={heading} key={heading}>
                {cell(row)}
              </td>
            ))}
            {action && <td class="actions">{action(row)}</td>}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

const MODES = {
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  polling: 'Refreshing every 15 s',
  failed: 'Not updating',
};

/** Whether what the page shows follows the stream. */
export function LiveBadge({ mode }) {
  return (
    <span class={`badge ${mode}`} role="status" aria-label={`Updates: ${MODES[mode]}`}>
      {MODES[mode]}
    </span>
  );
}

/** A cluster's live state (`ClusterFeed`) for as long as the component shows it. */
export function useFeed(clusterId, { detail = false, onDeployment } = {}) {
  const [state, setState] = useState(null);
  const callback = useRef(onDeployment);
  callback.current = onDeployment;
  useEffect(() => {
    if (!clusterId) return undefined;
    const feed = new ClusterFeed(clusterId, {
      detail,
      onChange: setState,
      onDeployment: (d) => callback.current?.(d),
    }).start();
    setState(feed.state);
    return () => feed.stop();
  }, [clusterId, detail]);
  return state;
}

/** Re-renders every `ms`, for ages. */
export function useTick(ms = 5000) {
  const [, setNow] = useState(0);
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(t);
  }, [ms]);
}

export function Status({ status }) {
  return <span class={`status ${status}`}>{words(status)}</span>;
}
