// app.js - the twin viewer: search, one twin, the fleet. Plain DOM, no
// framework, no network beyond this server's /v1 API. Every value from the
// API reaches the page through textContent or an attribute, never as HTML.
'use strict';

const POLL_TWIN_MS = 3000;
const POLL_FLEET_MS = 10000;
const PAGE = 25;

// ---- Labels and units ----------------------------------------------------------
const STAGES = [['ORDERED', 'Ordered'], ['IN_PRODUCTION', 'In production'], ['BUILT', 'Built'],
  ['IN_TRANSIT', 'In transit'], ['AT_DEALER', 'At dealer'], ['IN_SERVICE', 'In service'],
  ['DECOMMISSIONED', 'Decommissioned']];
const STAGE_LABEL = Object.fromEntries([['NONE', 'No lifecycle event yet'], ...STAGES]);
const KINDS = {
  ORDERED: ['Ordered', 'build'], BUILD_STARTED: ['Build started', 'build'],
  BUILD_STEP_COMPLETED: ['Build step done', 'build'], QUALITY_GATE_PASSED: ['Quality gate passed', 'build'],
  QUALITY_GATE_FAILED: ['Quality gate failed', 'build'], BUILD_COMPLETED: ['Build completed', 'build'],
  SHIPPED: ['Shipped', 'logistics'], ARRIVED_AT_DEALER: ['Arrived at dealer', 'logistics'],
  DELIVERED: ['Delivered', 'delivery'], OWNERSHIP_TRANSFERRED: ['New owner', 'delivery'],
  SERVICE_VISIT: ['Service visit', 'service'], WARRANTY_CLAIM: ['Warranty claim', 'warranty'],
  RECALL_ISSUED: ['Recall issued', 'recall'], RECALL_COMPLETED: ['Recall completed', 'recall'],
  DECOMMISSIONED: ['Decommissioned', 'end'],
};
const CATEGORIES = [['build', 'Order and build'], ['logistics', 'Logistics'], ['delivery', 'Delivery, owners'],
  ['service', 'Service'], ['warranty', 'Warranty'], ['recall', 'Recall'], ['end', 'End of life']];
const SIGNALS = [['odometer_km', 'Odometer', 'km', 0], ['speed_kph', 'Speed', 'km/h', 0],
  ['battery_soc_pct', 'Battery charge', '%', 0], ['battery_soh_pct', 'Battery health', '%', 1],
  ['battery_temp_c', 'Battery temperature', '°C', 1], ['range_km', 'Range', 'km', 0],
  ['fuel_level_pct', 'Fuel level', '%', 0], ['aux_battery_v', '12 V battery', 'V', 2],
  ['ambient_temp_c', 'Outside temperature', '°C', 1]];
const RULES = {
  battery_health_low: 'Battery health low', battery_temp_high: 'Battery temperature high',
  brake_pad_low: 'Brake pads worn', dtc_active: 'Diagnostic trouble codes', service_due: 'Service due',
  brake_wear_predicted: 'Brake service predicted', recall_open: 'Open recall',
};
const UNITS = { degC: '°C', days: 'days', codes: 'codes', recalls: 'recalls', kPa: 'kPa' };
// metrics.<name>: the unit is in the name's suffix (proto/twin/v1/events.proto).
const SUFFIX_UNITS = [['_temp_c', '°C', ' temperature'], ['_c', '°C', ''], ['_pct', '%', ''], ['_km', 'km', ''],
  ['_kph', 'km/h', ''], ['_kpa', 'kPa', ''], ['_v', 'V', ''], ['_a', 'A', ''], ['_hours', 'h', ''],
  ['_mm', 'mm', ''], ['_rpm', 'rpm', '']];
const WHEELS = ['Front left', 'Front right', 'Rear left', 'Rear right'];
const PAD_LIMIT_MM = 3.0; // brake_pad_low's threshold
const PAD_LOW_MM = 4.0;

const humanize = (id) => id.replace(/_/g, ' ').replace(/^./, (c) => c.toUpperCase());
const ruleLabel = (r) => RULES[r] || humanize(r);
const unitLabel = (u) => UNITS[u] || u || '';
const nf = (digits) => new Intl.NumberFormat(undefined, { maximumFractionDigits: digits });
const num = (v, digits = 1) => (typeof v === 'number' ? nf(digits).format(v) : '—');
const withUnit = (v, unit, digits = 1) => (typeof v === 'number' ? `${num(v, digits)} ${unit}`.trim() : '—');
const dateTime = (ms) => (typeof ms === 'number' ? new Date(ms).toLocaleString(undefined,
  { dateStyle: 'medium', timeStyle: 'short' }) : '—');
const dateOnly = (ms) => (typeof ms === 'number' ? new Date(ms).toLocaleDateString(undefined,
  { dateStyle: 'medium' }) : '—');
const isoDate = (ms) => new Date(ms).toISOString();

// ---- DOM helper: h('tag.class', {attrs}, ...children) --------------------------
function h(spec, attrs, ...kids) {
  const [tag, ...cls] = spec.split('.');
  const el = tag === 'svg' || SVG_TAGS.has(tag)
    ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  if (cls.length) el.setAttribute('class', cls.join(' '));
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}
const SVG_TAGS = new Set(['rect', 'circle', 'path', 'line', 'text', 'g', 'title', 'polygon']);
const $ = (id) => document.getElementById(id);
const link = (href, ...kids) => h('a', { href, 'data-link': true }, ...kids);
const twinHref = (id) => `/twins/${encodeURIComponent(id)}`;

// ---- API: bearer token from this tab's session storage -------------------------
class AuthError extends Error {}
const token = () => sessionStorage.getItem('twin.token') || '';

async function api(path) {
  const headers = { Accept: 'application/json' };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  let res;
  try {
    res = await fetch(path, { headers, cache: 'no-store' });
  } catch (e) {
    throw new Error('The server cannot be reached. Retrying.');
  }
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  const why = body && body.error ? body.error : `HTTP ${res.status}`;
  if (res.status === 401) throw new AuthError(token() ? `The token was refused (${why}).` : 'This server needs an access token.');
  if (res.status === 503) throw new Error('The database is unavailable right now. Retrying.');
  if (!res.ok) { const e = new Error(why); e.status = res.status; throw e; }
  return body;
}

function showAuth(message) {
  stopPolling();
  for (const v of ['view-search', 'view-twin', 'view-fleet']) $(v).hidden = true;
  $('auth').hidden = false;
  $('auth-msg').textContent = message;
  $('token').value = '';
  $('token').focus();
}

// ---- Router --------------------------------------------------------------------
let pollTimer = null;
function stopPolling() { if (pollTimer) clearTimeout(pollTimer); pollTimer = null; }

function route() {
  stopPolling();
  $('auth').hidden = true;
  const p = location.pathname;
  const view = p.startsWith('/twins/') ? 'twin' : p === '/fleet' ? 'fleet' : 'search';
  for (const v of ['search', 'twin', 'fleet']) $(`view-${v}`).hidden = v !== view;
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === view) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  if (view === 'twin') {
    let id = p.slice('/twins/'.length);
    try { id = decodeURIComponent(id); } catch (e) { /* a malformed escape: look it up as typed */ }
    showTwin(id);
  }
  else if (view === 'fleet') showFleet();
  else showSearch();
}

function go(href) {
  history.pushState(null, '', href);
  route();
  $('main').focus();
}

function guard(statusEl, retry, ms) {
  return (e) => {
    if (e instanceof AuthError) { showAuth(e.message); return; }
    statusEl.textContent = e.message;
    statusEl.classList.add('error');
    if (retry && !(e.status >= 400 && e.status < 500)) pollTimer = setTimeout(retry, ms);
  };
}

// ---- Search --------------------------------------------------------------------
let searchNext = null;

function showSearch() {
  document.title = 'Search · Twin viewer';
  const q = new URLSearchParams(location.search);
  if (q.get('by')) $('search-by').value = q.get('by');
  $('search-q').value = q.get('q') || '';
  $('search-results').replaceChildren();
  $('search-more').hidden = true;
  $('search-status').textContent = '';
  if (q.get('q')) runSearch(false);
}

function searchParams() {
  const by = $('search-by').value, q = $('search-q').value.trim();
  const p = new URLSearchParams({ limit: String(PAGE) });
  p.set(by === 'vin' ? 'prefix' : by, by === 'stage' ? q.toUpperCase().replace(/[\s-]+/g, '_') : by === 'vin' ? q.toUpperCase() : q);
  return p;
}

async function runSearch(more) {
  const status = $('search-status');
  status.classList.remove('error');
  const p = searchParams();
  if (more && searchNext) p.set('after', searchNext);
  status.textContent = 'Searching…';
  try {
    const page = await api(`/v1/twins?${p}`);
    let tbody = $('search-results').querySelector('tbody');
    if (!more || !tbody) {
      tbody = h('tbody');
      $('search-results').replaceChildren(h('table.results', {},
        h('caption.sr-only', {}, 'Search results'),
        h('thead', {}, h('tr', {}, ['VIN / serial', 'Model', 'Stage', 'Owner', 'Odometer', 'Active alerts']
          .map((t) => h('th', { scope: 'col' }, t)))), tbody));
    }
    for (const t of page.items) {
      const alerts = (t.alerts && t.alerts.active) || [];
      const odo = t.telemetry && t.telemetry.odometer_km;
      tbody.append(h('tr', {}, h('th', { scope: 'row' }, link(twinHref(t._id), t._id)), h('td', {}, t.model || '—'),
        h('td', {}, STAGE_LABEL[t.stage] || t.stage), h('td', {}, t.owner || '—'),
        h('td.num', {}, odo ? withUnit(odo.value, 'km', 0) : '—'),
        h('td', {}, alerts.length ? alerts.map((a) => severityBadge(a.severity, ruleLabel(a.rule))) : 'none')));
    }
    searchNext = page.next;
    $('search-more').hidden = !page.next;
    const n = tbody.children.length;
    status.textContent = n ? `${n} ${n === 1 ? 'vehicle' : 'vehicles'} found${page.next ? ' (more available)' : ''}.`
      : 'No vehicle matches. Check the spelling, or search by another field.';
  } catch (e) {
    guard(status)(e);
  }
}

// ---- One twin ------------------------------------------------------------------
let twinLast = '';

function showTwin(id) {
  document.title = `${id} · Twin viewer`;
  $('twin-title').textContent = id;
  $('twin-body').replaceChildren();
  $('twin-status').textContent = 'Loading…';
  twinLast = '';
  loadTwin(id);
}

async function loadTwin(id) {
  const status = $('twin-status');
  try {
    const t = await api(`/v1/twins/${encodeURIComponent(id)}`);
    status.classList.remove('error');
    const sig = JSON.stringify([t.rev, t.seen, t.last_event_ms, t.updated_at]);
    if (sig !== twinLast) {
      twinLast = sig;
      renderTwin(t);
    }
    status.textContent = `Live: checked ${new Date().toLocaleTimeString()}; updates every ${POLL_TWIN_MS / 1000} s.`;
    pollTimer = setTimeout(() => loadTwin(id), POLL_TWIN_MS);
  } catch (e) {
    if (e.status === 404) {
      status.textContent = `No vehicle with VIN or serial “${id}” is known to the twin engine.`;
      status.classList.add('error');
      return;
    }
    guard(status, () => loadTwin(id), POLL_TWIN_MS)(e);
  }
}

function dealerOf(t) {
  const tl = t.timeline || [];
  for (let i = tl.length - 1; i >= 0; i--) {
    const e = tl[i];
    if (e.status === 'applied' && ['DELIVERED', 'ARRIVED_AT_DEALER', 'SERVICE_VISIT'].includes(e.kind) && e.site) return e.site;
  }
  return null;
}

function renderTwin(t) {
  const tel = t.telemetry || {};
  const body = $('twin-body');
  const focusedId = document.activeElement && document.activeElement.id;
  body.replaceChildren(
    h('section.card.identity', { 'aria-labelledby': 'id-h' }, h('h2', { id: 'id-h' }, 'Identity'),
      h('dl.facts', {},
        fact('Model', t.model || '—'), fact('Stage', STAGE_LABEL[t.stage] || t.stage, 'stage'),
        fact('Owner', t.owner || '—'), fact('Dealer', dealerOf(t) || '—'),
        fact('Odometer', tel.odometer_km ? withUnit(tel.odometer_km.value, 'km', 1) : '—', 'odometer'),
        fact('Firmware', tel.firmware_version ? tel.firmware_version.value : '—'),
        fact('Last event', dateTime(t.last_event_ms)),
        t.quality_hold ? fact('Quality hold', 'Yes: the last quality gate failed') : null),
      stageStepper(t.stage)),
    alertsCard(t),
    timelineCard(t),
    h('div.two', {}, telemetryCard(t), wheelsCard(t)),
    h('div.two', {}, recallsCard(t), serviceCard(t)));
  if (focusedId && $(focusedId)) $(focusedId).focus();
}

function fact(label, value, testid) {
  return [h('dt', {}, label), h('dd', { 'data-testid': testid }, value)];
}

function stageStepper(stage) {
  const idx = STAGES.findIndex(([s]) => s === stage);
  return h('ol.stepper', { 'aria-label': 'Life stages' }, STAGES.map(([s, label], i) =>
    h(`li.${i < idx ? 'done' : i === idx ? 'now' : 'todo'}`, { 'aria-current': i === idx ? 'step' : null },
      label, i === idx ? h('span.sr-only', {}, ' (current stage)') : null)));
}

function severityBadge(sev, text) {
  return h(`span.badge.sev-${(sev || 'info').toLowerCase()}`, {}, text || sev);
}

function alertsCard(t) {
  const active = (t.alerts && t.alerts.active) || [];
  return h('section.card', { 'aria-labelledby': 'alerts-h', 'data-testid': 'alerts' },
    h('h2', { id: 'alerts-h' }, `What needs doing: ${active.length ? `${active.length} active ${active.length === 1 ? 'alert' : 'alerts'}` : 'nothing'}`),
    active.length ? h('ul.alerts', {}, active.map((a) => {
      const u = unitLabel(a.unit);
      return h('li', { 'data-rule': a.rule },
        h('p.alert-head', {}, severityBadge(a.severity), ' ', h('strong', {}, ruleLabel(a.rule))),
        h('p', {}, a.message),
        h('p.meta', {}, `Value ${num(a.value, 2)} ${u} against threshold ${num(a.threshold, 2)} ${u}`,
          // days to the limit below 0: the predicted date lies behind the twin's latest event
          typeof a.predicted_at_ms === 'number' && a.value < 0 ? ' (the predicted date has passed)' : '',
          ` · since ${dateTime(a.since)}`,
          typeof a.predicted_at_ms === 'number' ? h('span', { 'data-testid': 'predicted' },
            ` · predicted for ${dateOnly(a.predicted_at_ms)}`) : null));
    })) : h('p', {}, 'No active alerts.'));
}

// The life strip: one mark per timeline entry, evenly spaced in event order
// (build steps take days, service life years), year labels where it turns.
function timelineCard(t) {
  const tl = t.timeline || [];
  const W = Math.max($('twin-body').clientWidth - 80, tl.length * 18 + 40, 320), H = 92, x0 = 20;
  const step = tl.length > 1 ? (W - 2 * x0) / (tl.length - 1) : 0;
  const svg = h('svg.strip', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img',
    'aria-label': `Life strip: ${tl.length} events, ${tl.filter((e) => e.status === 'rejected').length} rejected. The table below lists them.` });
  svg.append(h('line.axis', { x1: x0, y1: 40, x2: W - x0, y2: 40 }));
  let year = null;
  tl.forEach((e, i) => {
    const x = x0 + i * step, [label, cat] = KINDS[e.kind] || [humanize(e.kind), 'build'];
    const y = new Date(e.event_time_ms).getFullYear();
    if (y !== year) {
      svg.append(h('line.tick', { x1: x, y1: 52, x2: x, y2: 62 }), h('text.year', { x, y: 76 }, String(y)));
      year = y;
    }
    const tip = h('title', {}, `${label}, ${dateTime(e.event_time_ms)}${e.site ? `, ${e.site}` : ''}${e.status === 'rejected' ? ` — REJECTED: ${e.reason}` : ''}`);
    if (e.status === 'rejected') {
      svg.append(h('g.mark.rejected', {}, tip, h('circle', { cx: x, cy: 22, r: 7 }),
        h('path', { d: `M${x - 4} ${18}L${x + 4} ${26}M${x + 4} ${18}L${x - 4} ${26}` })));
    } else {
      svg.append(h(`g.mark.cat-${cat}`, {}, tip, h('circle', { cx: x, cy: 40, r: 7 })));
    }
  });
  const rows = tl.map((e, i) => {
    const [label, cat] = KINDS[e.kind] || [humanize(e.kind), 'build'];
    const what = [e.detail, e.recall_id && `recall ${e.recall_id}`, e.work_order && `work order ${e.work_order}`,
      e.owner_id && `owner ${e.owner_id}`, e.parts_replaced && e.parts_replaced.length && `parts: ${e.parts_replaced.join(', ')}`,
      typeof e.odometer_km === 'number' && `at ${withUnit(e.odometer_km, 'km', 0)}`].filter(Boolean).join('; ');
    return h(`tr${e.status === 'rejected' ? '.rejected' : ''}`, { 'data-kind': e.kind, 'data-status': e.status },
      h('td.num', {}, String(i + 1)), h('td', {}, h('time', { datetime: isoDate(e.event_time_ms) }, dateTime(e.event_time_ms))),
      h('td', {}, h(`span.dot.cat-${cat}`, { 'aria-hidden': 'true' }), label), h('td', {}, e.site || '—'), h('td', {}, what || '—'),
      h('td', {}, e.status === 'rejected' ? [h('strong', {}, 'Rejected: '), e.reason || 'no reason given'] : 'Applied'));
  });
  return h('section.card', { 'aria-labelledby': 'tl-h', 'data-testid': 'timeline' },
    h('h2', { id: 'tl-h' }, `Life so far: ${tl.length} events`),
    h('div.strip-wrap', { tabindex: 0, 'aria-label': 'Life strip, scrolls sideways' }, svg),
    h('ul.legend', { 'aria-label': 'Legend' }, CATEGORIES.map(([c, l]) => h('li', {}, h(`span.dot.cat-${c}`, { 'aria-hidden': 'true' }), l)),
      h('li', {}, h('span.dot.rejected', { 'aria-hidden': 'true' }), 'Rejected (impossible event, kept with its reason)')),
    h('div.scroll', { tabindex: 0, 'aria-label': 'Timeline table, scrolls' },
      h('table.timeline', {}, h('caption.sr-only', {}, 'Timeline, newest first; # counts from the oldest'),
        h('thead', {}, h('tr', {}, ['#', 'When', 'Event', 'Site', 'Details', 'Status'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, rows.reverse()))));
}

function telemetryCard(t) {
  const tel = t.telemetry || {};
  const rows = [];
  for (const [key, label, unit, digits] of SIGNALS) {
    if (tel[key]) rows.push(signalRow(key, label, withUnit(tel[key].value, unit, digits), tel[key].at_ms));
  }
  if (tel.latitude && tel.longitude) {
    rows.push(signalRow('position', 'Position', `${num(tel.latitude.value, 5)}°, ${num(tel.longitude.value, 5)}°`, tel.latitude.at_ms));
  }
  if (tel.dtc_codes) {
    rows.push(signalRow('dtc_codes', 'Trouble codes', tel.dtc_codes.value.length ? tel.dtc_codes.value.join(', ') : 'none', tel.dtc_codes.at_ms));
  }
  for (const [name, v] of Object.entries(tel.metrics || {})) {
    const suf = SUFFIX_UNITS.find(([s]) => name.endsWith(s)) || ['', '', ''];
    const label = humanize(suf[0] ? name.slice(0, -suf[0].length) : name) + suf[2];
    rows.push(signalRow(`metric-${name}`, label, withUnit(v.value, suf[1], 2), v.at_ms));
  }
  return h('section.card', { 'aria-labelledby': 'tel-h', 'data-testid': 'telemetry' },
    h('h2', { id: 'tel-h' }, 'Current telemetry'),
    rows.length ? h('table.kv', {}, h('caption.sr-only', {}, 'Latest value of each signal'),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Signal'), h('th', { scope: 'col' }, 'Value'), h('th', { scope: 'col' }, 'Reported'))),
      h('tbody', {}, rows)) : h('p', {}, 'No telemetry reported yet.'));
}

const shortDateTime = (ms) => new Date(ms).toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'short' });

function signalRow(key, label, value, at) {
  return h('tr', { 'data-signal': key }, h('th', { scope: 'row' }, label), h('td.num.value', {}, value), h('td', {}, shortDateTime(at)));
}

// Tires and pads on a top view of the vehicle (front at the top).
function wheelsCard(t) {
  const tel = t.telemetry || {};
  const tires = (tel.tire_pressure_kpa && tel.tire_pressure_kpa.value) || [];
  const pads = (tel.brake_pad_mm && tel.brake_pad_mm.value) || [];
  const n = Math.max(tires.length, pads.length);
  if (!n) {
    return h('section.card', { 'aria-labelledby': 'wh-h' }, h('h2', { id: 'wh-h' }, 'Tires and brakes'), h('p', {}, 'Not reported yet.'));
  }
  const padClass = (mm) => (mm < PAD_LIMIT_MM ? 'crit' : mm < PAD_LOW_MM ? 'warn' : 'ok');
  const padWord = (mm) => (mm < PAD_LIMIT_MM ? ' (replace)' : mm < PAD_LOW_MM ? ' (low)' : '');
  const wheel = (i) => {
    const pad = pads[i], tire = tires[i];
    return h(`div.wheel.w${i}.${typeof pad === 'number' ? padClass(pad) : 'ok'}`, { 'data-wheel': i },
      h('h3', {}, WHEELS[i] || `Wheel ${i + 1}`),
      h('p', {}, 'Tire ', h('strong', {}, withUnit(tire, 'kPa', 0))),
      h('p', {}, 'Brake pad ', h('strong', {}, withUnit(pad, 'mm', 2)), typeof pad === 'number' ? padWord(pad) : ''));
  };
  const wheelRect = (i, x, y) => h(`rect.tire.${typeof pads[i] === 'number' ? padClass(pads[i]) : 'ok'}`, { x, y, width: 22, height: 52, rx: 6 });
  const car = h('svg.car', { viewBox: '0 0 140 250', role: 'img', 'aria-label': 'Vehicle seen from above, front at the top' },
    h('rect.body', { x: 25, y: 10, width: 90, height: 230, rx: 36 }),
    h('rect.glass', { x: 38, y: 58, width: 64, height: 34, rx: 8 }),
    h('rect.glass', { x: 40, y: 172, width: 60, height: 24, rx: 8 }),
    wheelRect(0, 10, 38), wheelRect(1, 108, 38), wheelRect(2, 10, 162), wheelRect(3, 108, 162),
    h('text.front', { x: 70, y: 30 }, 'FRONT'));
  const extra = [];
  for (let i = 4; i < n; i++) extra.push(h('li', {}, `Wheel ${i + 1}: tire ${withUnit(tires[i], 'kPa', 0)}, pad ${withUnit(pads[i], 'mm', 2)}`));
  const at = (tel.brake_pad_mm || tel.tire_pressure_kpa).at_ms;
  return h('section.card', { 'aria-labelledby': 'wh-h', 'data-testid': 'wheels' },
    h('h2', { id: 'wh-h' }, 'Tires and brakes'),
    h('div.vehicle', {}, wheel(0), car, wheel(1), wheel(2), wheel(3)),
    extra.length ? h('ul', {}, extra) : null,
    h('p.meta', {}, `Pads below ${num(PAD_LIMIT_MM, 1)} mm need replacing. Reported ${dateTime(at)}.`));
}

function recallsCard(t) {
  const open = t.open_recalls || [];
  return h('section.card', { 'aria-labelledby': 'rc-h', 'data-testid': 'recalls' }, h('h2', { id: 'rc-h' }, 'Open recalls'),
    open.length ? h('ul', {}, open.map((r) => {
      const issued = (t.timeline || []).find((e) => e.kind === 'RECALL_ISSUED' && e.recall_id === r && e.status === 'applied');
      return h('li', {}, h('strong', {}, r), issued ? ` — issued ${dateOnly(issued.event_time_ms)}${issued.detail ? `: ${issued.detail}` : ''}` : '');
    })) : h('p', {}, 'None.'));
}

function serviceCard(t) {
  const s = t.last_service;
  return h('section.card', { 'aria-labelledby': 'sv-h', 'data-testid': 'service' }, h('h2', { id: 'sv-h' }, 'Last service'),
    s ? h('dl.facts', {}, fact('Date', dateTime(s.at_ms)), fact('Odometer', withUnit(s.odometer_km, 'km', 0)),
      fact('Work order', s.work_order || '—'), fact('Site', s.site || '—'),
      fact('Since then', withUnit(t.odometer_since_service_km, 'km', 0))) : h('p', {}, 'No service visit yet.'));
}

// ---- Fleet ---------------------------------------------------------------------
function showFleet() {
  document.title = 'Fleet · Twin viewer';
  $('fleet-status').textContent = 'Loading…';
  loadFleet();
}

async function loadFleet() {
  const status = $('fleet-status');
  try {
    const s = await api('/v1/stats');
    status.classList.remove('error');
    renderFleet(s);
    status.textContent = `Live: figures as of ${new Date(s.computed_at).toLocaleTimeString()}; updates every ${POLL_FLEET_MS / 1000} s.`;
    pollTimer = setTimeout(loadFleet, POLL_FLEET_MS);
  } catch (e) {
    guard(status, loadFleet, POLL_FLEET_MS)(e);
  }
}

function bars(items, testid) {
  const max = Math.max(1, ...items.map((i) => i.count));
  return h('ul.bars', { 'data-testid': testid }, items.map((i) => h('li', { 'data-key': i.key },
    h('span.bar-label', {}, i.href ? link(i.href, i.label) : i.label, i.badge ? [' ', i.badge] : null),
    h('span.bar-track', { 'aria-hidden': 'true' }, h('span.bar', { 'data-w': String(i.count / max) })),
    h('span.count.num', {}, nf(0).format(i.count)))));
}

function renderFleet(s) {
  const stages = STAGES.map(([k, label]) => ({ key: k, label, count: s.by_stage[k] || 0, href: `/?by=stage&q=${k}` }));
  if (s.by_stage.NONE) stages.unshift({ key: 'NONE', label: STAGE_LABEL.NONE, count: s.by_stage.NONE });
  const rules = s.alerts_by_rule.map((r) => ({ key: r.rule, label: ruleLabel(r.rule), count: r.count,
    href: `/?by=alert&q=${encodeURIComponent(r.rule)}`, badge: severityBadge(r.severity) }));
  $('fleet-body').replaceChildren(
    h('dl.summary', {}, fact('Vehicles', nf(0).format(s.twins), 'fleet-twins'),
      fact('Active alerts', nf(0).format(s.alerts_active), 'fleet-alerts')),
    h('div.two', {},
      h('section.card', { 'aria-labelledby': 'st-h' }, h('h2', { id: 'st-h' }, 'Vehicles by stage'), bars(stages, 'by-stage')),
      h('section.card', { 'aria-labelledby': 'ar-h' }, h('h2', { id: 'ar-h' }, 'Active alerts by rule'),
        rules.length ? bars(rules, 'by-rule') : h('p', {}, 'No active alerts.'))),
    h('div.two', {}, histogramCard(s.battery_soh), brakeCard(s.brake_service_soonest)));
  // Widths set here, not in a style attribute: the page's CSP allows no inline styles.
  for (const b of document.querySelectorAll('#fleet-body .bar')) b.style.width = `${(Number(b.dataset.w) * 100).toFixed(1)}%`;
}

function binLabel(b) {
  if (b.from === null) return `< ${b.to}`;
  if (b.to === null) return `≥ ${b.from}`;
  return `${b.from}–${b.to}`;
}

function histogramCard(hist) {
  const W = 460, H = 220, L = 36, B = 40, n = hist.bins.length;
  const max = Math.max(1, ...hist.bins.map((b) => b.count));
  const bw = (W - L - 8) / n;
  const svg = h('svg.hist', { viewBox: `0 0 ${W} ${H}`, role: 'img',
    'aria-label': 'Histogram of battery state of health; the table below has the same figures' });
  svg.append(h('line.axis', { x1: L, y1: H - B, x2: W - 4, y2: H - B }));
  hist.bins.forEach((b, i) => {
    const bh = ((H - B - 20) * b.count) / max, x = L + i * bw;
    svg.append(h(`rect.hbar${b.to !== null && b.to <= 80 ? '.low' : ''}`, { x: x + 2, y: H - B - bh, width: bw - 4, height: bh },
      h('title', {}, `${binLabel(b)} %: ${b.count}`)));
    if (b.count) svg.append(h('text.hcount', { x: x + bw / 2, y: H - B - bh - 4 }, String(b.count)));
    svg.append(h('text.hlabel', { x: x + bw / 2, y: H - B + 14 }, binLabel(b)));
  });
  svg.append(h('text.hlabel', { x: (W + L) / 2, y: H - 6 }, 'State of health, % (below 80 % raises an alert)'));
  return h('section.card', { 'aria-labelledby': 'bh-h', 'data-testid': 'battery' }, h('h2', { id: 'bh-h' }, 'Battery health'),
    svg,
    h('details', {}, h('summary', {}, 'Show as a table'),
      h('table.kv', {}, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'State of health'), h('th', { scope: 'col' }, 'Vehicles'))),
        h('tbody', {}, hist.bins.map((b) => h('tr', { 'data-bin': binLabel(b) }, h('th', { scope: 'row' }, `${binLabel(b)} %`), h('td.num', {}, String(b.count)))),
          h('tr', { 'data-bin': 'none' }, h('th', { scope: 'row' }, 'Not reported'), h('td.num', {}, String(hist.no_data)))))));
}

function brakeCard(items) {
  return h('section.card', { 'aria-labelledby': 'bk-h', 'data-testid': 'brakes' }, h('h2', { id: 'bk-h' }, 'Soonest predicted brake service'),
    items.length ? h('table.results', {}, h('thead', {}, h('tr', {}, ['Vehicle', 'Model', 'Owner', 'Pads reach 3 mm', 'Thinnest pad']
      .map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, items.map((b) => h('tr', {}, h('th', { scope: 'row' }, link(twinHref(b.product_id), b.product_id)),
      h('td', {}, b.model || '—'), h('td', {}, b.owner || '—'), h('td', {}, dateOnly(b.predicted_at_ms)),
      h('td.num', {}, withUnit(b.min_brake_pad_mm, 'mm', 2))))))
      : h('p', {}, 'No vehicle has a brake service predicted within the alert window.'));
}

// ---- Wiring --------------------------------------------------------------------
document.addEventListener('click', (e) => {
  const a = e.target.closest('a[data-link]');
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  go(a.getAttribute('href'));
});
window.addEventListener('popstate', route);

$('search-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const q = new URLSearchParams({ by: $('search-by').value, q: $('search-q').value.trim() });
  history.replaceState(null, '', `/?${q}`);
  runSearch(false);
});
$('search-more').addEventListener('click', () => runSearch(true));
$('auth-form').addEventListener('submit', (e) => {
  e.preventDefault();
  sessionStorage.setItem('twin.token', $('token').value.trim());
  $('token-button').hidden = false;
  route();
});
$('token-button').addEventListener('click', () => showAuth('Enter another access token.'));
$('token-button').hidden = !token();
route();
