// Resources as people write them, the CLI's way (cli/src/units.rs, cli/src/output.rs): CPU in
// cores (1.5) or millicores (1500m), memory with a binary unit (512Mi, 4Gi, 1Ti), whole GPUs.

const MAX = 2 ** 40 - 1;

export function formatCpu(millis) {
  if (millis % 1000 === 0) return String(millis / 1000);
  if (millis % 100 === 0) return (millis / 1000).toFixed(1);
  return `${millis}m`;
}

export function formatMemory(mib) {
  const GI = 1024;
  const TI = 1024 * 1024;
  if (mib === 0) return '0';
  if (mib % TI === 0) return `${mib / TI}Ti`;
  if (mib % GI === 0) return `${mib / GI}Gi`;
  if (mib >= GI && (mib * 10) % GI === 0) return `${(mib / GI).toFixed(1)}Gi`;
  return `${mib}Mi`;
}

export const RESOURCES = [
  { key: 'cpu_millis', label: 'CPU', format: formatCpu },
  { key: 'memory_mib', label: 'Memory', format: formatMemory },
  { key: 'gpus', label: 'GPUs', format: String },
];

/** `8 CPU, 32Gi, 2 GPU` */
export function formatResources(r) {
  const parts = [`${formatCpu(r.cpu_millis)} CPU`, formatMemory(r.memory_mib)];
  if (r.gpus) parts.push(`${r.gpus} GPU`);
  return parts.join(', ');
}

function bounded(n, what) {
  if (!Number.isSafeInteger(n) || n < 0 || n > MAX) throw new Error(`${what} is out of range`);
  return n;
}

/** `1.5` → 1500, `250m` → 250; a blank field is 0. */
export function parseCpu(text) {
  const s = text.trim();
  if (s === '') return 0;
  let m = /^(\d+)m$/.exec(s);
  if (m) return bounded(Number(m[1]), 'CPU');
  m = /^(\d+)(?:\.(\d{1,3}))?$/.exec(s);
  if (!m) throw new Error('CPU is cores (1.5) or millicores (1500m)');
  return bounded(Number(m[1]) * 1000 + Number((m[2] || '').padEnd(3, '0')), 'CPU');
}

/** `512Mi`, `4Gi`, `1.5Gi`, `1Ti` → MiB; a blank field is 0. */
export function parseMemory(text) {
  const s = text.trim().replace(/B$/, '');
  if (s === '') return 0;
  const m = /^(\d+(?:\.\d+)?)\s*(Mi|Gi|Ti)$/.exec(s);
  if (!m) throw new Error('memory needs a unit: 512Mi, 4Gi or 1Ti');
  const mib = Number(m[1]) * { Mi: 1, Gi: 1024, Ti: 1024 * 1024 }[m[2]];
  if (!Number.isInteger(mib)) throw new Error('memory must be a whole number of MiB');
  return bounded(mib, 'memory');
}

export function parseGpus(text) {
  const s = text.trim();
  if (s === '') return 0;
  if (!/^\d+$/.test(s)) throw new Error('GPUs are a whole number');
  return bounded(Number(s), 'GPUs');
}

/** How long since `at`, like the CLI's AGE: `45s`, `12m`, `3h`, `5d`. */
export function age(at, now = Date.now()) {
  const s = Math.max(0, Math.floor((now - Date.parse(at)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** `2026-12-01 16:41:09` in the viewer's time zone. */
export function time(at) {
  if (!at) return '–';
  const d = new Date(at);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** `waiting_for_capacity` → `waiting for capacity`. */
export function words(s) {
  return s ? s.replaceAll('_', ' ') : '';
}

/**
 * The resources of a form's `cpu`, `memory` and `gpus` fields: `{ resources, errors }`, the
 * errors keyed `${prefix}-cpu` and so on, as the fields' ids are.
 */
export function parseResources(fields, prefix) {
  const resources = {};
  const errors = {};
  for (const [key, field, parse] of [
    ['cpu_millis', 'cpu', parseCpu],
    ['memory_mib', 'memory', parseMemory],
    ['gpus', 'gpus', parseGpus],
  ]) {
    try {
      resources[key] = parse(fields[field]);
    } catch (err) {
      errors[`${prefix}-${field}`] = err.message;
    }
  }
  return { resources, errors };
}
