// The qntx-python-plugin glyph: write Python, pick an environment, run it, see what it made.
//
// Loaded by the QNTX web UI with a dynamic import() of the module_path that RegisterGlyphs gives
// (see ../shared/glyphs.md), and by the --http page with a stand-in `ui`. Everything it needs is
// in this file: no network but the plugin's own routes, no global side effects (styles live in
// the glyph's own element and every selector is under .qpy), cleanup through ui.onCleanup.

const ROOT = 'qpy';
// A `# py:<env>` comment line routes a run (the same rule as the plugin's, found anywhere).
const DIRECTIVE = /^[ \t]*#[ \t]*py:(\S+)[ \t\r]*$/gm;
// Where a traceback points into the user's program (the plugin keeps the user's line numbers).
const TRACE_LINE = /File "<(?:execute|evaluate)>", line (\d+)/g;
const INDENT = '    ';
// The host answers `/api/python/execute` itself (protocol.md §4.4): for a plugin named `python`
// that route drops `env` and `upstream_attestation`, so the glyph posts to the plugin's alias.
const HOST_SHADOWED = 'python';
const RUN_PATH = '/execute';
const UNSHADOWED_RUN_PATH = '/glyph/execute';
const SAVE_DELAY_MS = 500;

const STYLE = `
.qpy { display: flex; flex-direction: column; gap: 6px; height: 100%; box-sizing: border-box;
  padding: 6px; font: 13px/1.4 system-ui, sans-serif; color: #e6e6e6; background: #1e1f24;
  min-height: 0; }
.qpy * { box-sizing: border-box; }
.qpy [hidden] { display: none !important; }
.qpy .qpy-bar { display: flex; align-items: center; gap: 8px; flex-wrap: wrap; }
.qpy .qpy-env { font: inherit; background: #2b2d35; color: inherit; border: 1px solid #44475a;
  border-radius: 4px; padding: 2px 4px; }
.qpy .qpy-env-name { font-weight: 600; }
.qpy .qpy-python { color: #9aa0b4; }
.qpy .qpy-note { color: #e5c07b; font-size: 12px; }
.qpy .qpy-note.qpy-bad { color: #ff7b72; }
.qpy .qpy-upstream { font-size: 12px; background: #2d3b2f; color: #a6e3a1; border-radius: 10px;
  padding: 1px 8px; display: inline-flex; gap: 6px; align-items: center; }
.qpy .qpy-upstream button { all: unset; cursor: pointer; color: inherit; }
.qpy .qpy-spacer { flex: 1; }
.qpy button.qpy-btn { font: inherit; border: 1px solid #44475a; background: #2b2d35;
  color: inherit; border-radius: 4px; padding: 3px 10px; cursor: pointer; }
.qpy button.qpy-btn:disabled { opacity: .5; cursor: default; }
.qpy button.qpy-run { background: #2f6f3e; border-color: #3f8f52; font-weight: 600; }
.qpy .qpy-editor { display: flex; flex: 0 1 30%; min-height: 90px; border: 1px solid #44475a;
  border-radius: 4px; overflow: hidden; background: #16171b; }
.qpy .qpy-gutter, .qpy .qpy-code { font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas,
  monospace; margin: 0; padding: 6px; }
.qpy .qpy-gutter { color: #5c6370; text-align: right; min-width: 3.2em; overflow: hidden;
  user-select: none; border-right: 1px solid #2b2d35; white-space: pre; }
.qpy .qpy-gutter .qpy-err-line { color: #ff7b72; font-weight: 700; }
.qpy .qpy-code { flex: 1; resize: none; border: 0; outline: none; background: transparent;
  color: #e6e6e6; white-space: pre; overflow: auto; tab-size: 4; }
.qpy .qpy-status { font-size: 12px; color: #9aa0b4; display: flex; gap: 8px; align-items: center;
  min-height: 22px; }
.qpy .qpy-status .qpy-ok { color: #7ee787; font-weight: 600; }
.qpy .qpy-status .qpy-failed { color: #ff7b72; font-weight: 600; }
.qpy .qpy-output { flex: 1 1 62%; overflow: auto; min-height: 0; display: flex;
  flex-direction: column; gap: 6px; user-select: text; }
.qpy .qpy-section { border-left: 3px solid #44475a; padding-left: 6px; }
.qpy .qpy-section h4 { margin: 0 0 2px; font-size: 11px; font-weight: 600; color: #9aa0b4;
  text-transform: uppercase; letter-spacing: .04em; }
.qpy .qpy-section pre { margin: 0; font: 12px/1.4 ui-monospace, Menlo, Consolas, monospace;
  white-space: pre-wrap; word-break: break-word; }
.qpy .qpy-section.qpy-error { border-color: #ff7b72; }
.qpy .qpy-section.qpy-error .qpy-where { color: #ff7b72; font-weight: 600; margin-bottom: 2px; }
.qpy .qpy-section.qpy-stderr { border-color: #e5c07b; }
.qpy .qpy-section.qpy-stderr pre { color: #e5c07b; }
.qpy .qpy-figure { max-width: 100%; max-height: 300px; width: auto; height: auto; background: #fff; border-radius: 3px;
  display: block; margin: 2px 0; }
.qpy table.qpy-table { border-collapse: collapse; font: 12px ui-monospace, Menlo, monospace; }
.qpy table.qpy-table th, .qpy table.qpy-table td { border: 1px solid #33363f; padding: 2px 6px;
  text-align: right; }
.qpy table.qpy-table th { background: #2b2d35; }
.qpy table.qpy-table th.qpy-index { color: #9aa0b4; }
.qpy .qpy-table-note { font-size: 11px; color: #9aa0b4; margin-top: 2px; }
`;

/** A small element builder: el('div', {class: 'x', text: 'y'}, ...children). */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key in node && typeof value !== 'string') node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

/** Every `# py:<env>` name in the code, in order of appearance, without repeats. */
export function directives(code) {
  const names = [];
  for (const match of code.matchAll(DIRECTIVE)) {
    if (!names.includes(match[1])) names.push(match[1]);
  }
  return names;
}

/** The user's line a traceback points at last (the innermost frame in their program). */
export function errorLine(error) {
  let line = null;
  for (const match of String(error ?? '').matchAll(TRACE_LINE)) line = Number(match[1]);
  return line;
}

/** The attestation a melded glyph carries, or null when its content is not one. */
export function attestationOf(content) {
  let value = content;
  if (typeof content === 'string') {
    try {
      value = JSON.parse(content);
    } catch {
      return null;
    }
  }
  if (Array.isArray(value) && value.length === 1) value = value[0];
  const looksLikeOne = value && typeof value === 'object' && !Array.isArray(value)
    && ['subjects', 'predicates', 'contexts', 'attributes'].some((key) => key in value);
  return looksLikeOne ? value : null;
}

/**
 * The execution response, whichever route answered. The host's own `/api/python/execute`
 * answers `{success, stdout, stderr: "", error, duration_ms: 0, result: <the plugin's object>}`:
 * then the plugin's object (with stderr, figures, table and the real duration) is the answer.
 */
export function executionOf(answer) {
  const inner = answer?.result;
  const nested = inner && typeof inner === 'object' && !Array.isArray(inner)
    && typeof inner.success === 'boolean' && 'stdout' in inner && 'duration_ms' in inner
    && inner.success === answer.success && answer.duration_ms === 0 && answer.stderr === '';
  return nested ? inner : answer;
}

async function readJson(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    return { error: `HTTP ${response.status}: ${text.slice(0, 300) || 'empty answer'}` };
  }
}

function tableView(table) {
  const head = el('tr', {}, el('th', { class: 'qpy-index', text: '' }),
    ...table.columns.map((c) => el('th', { text: String(c) })));
  const body = table.rows.map((row, i) => el('tr', {},
    el('th', { class: 'qpy-index', text: String(table.index?.[i] ?? i) }),
    ...row.map((cell) => el('td', {
      text: cell === null ? '' : typeof cell === 'object' ? JSON.stringify(cell) : String(cell),
    }))));
  const shownRows = table.rows.length;
  const shownColumns = table.columns.length;
  const kind = table.kind === 'ndarray' ? `ndarray ${table.dtype} ${JSON.stringify(table.shape)}`
    : table.kind;
  const note = `${kind}: ${table.total_rows} row${table.total_rows === 1 ? '' : 's'}`
    + (shownRows < table.total_rows ? `, first ${shownRows} shown` : '')
    + (shownColumns < table.total_columns ? `; ${shownColumns} of ${table.total_columns} columns` : '');
  return el('div', {}, el('table', { class: 'qpy-table' }, el('thead', {}, head),
    el('tbody', {}, ...body)), el('div', { class: 'qpy-table-note', text: note }));
}

function section(kind, title, ...content) {
  return el('div', { class: `qpy-section qpy-${kind}`, 'data-part': kind },
    el('h4', { text: title }), ...content);
}

/** The execution response as sections, in the order things happened: stdout, stderr, the
 * error, then what the run made: figures, table, result. */
function outputSections(answer) {
  const sections = [];
  if (answer.stdout) sections.push(section('stdout', 'stdout', el('pre', { text: answer.stdout })));
  if (answer.stderr) sections.push(section('stderr', 'stderr', el('pre', { text: answer.stderr })));
  if (answer.error) {
    const line = errorLine(answer.error);
    const last = String(answer.error).trim().split('\n').pop();
    sections.push(section('error', 'error',
      el('div', { class: 'qpy-where', text: line ? `line ${line}: ${last}` : last }),
      el('pre', { text: answer.error })));
  }
  const figures = Array.isArray(answer.figures) ? answer.figures : [];
  if (figures.length) {
    sections.push(section('figures', figures.length === 1 ? 'figure' : `${figures.length} figures`,
      ...figures.map((figure) => (figure.data
        ? el('img', {
          class: 'qpy-figure',
          src: `data:image/png;base64,${figure.data}`,
          width: String(figure.width),
          height: String(figure.height),
          alt: `figure ${figure.number}${figure.label ? ` (${figure.label})` : ''}`,
        })
        : el('pre', { text: `figure ${figure.number}: ${figure.error}` })))));
  }
  if (answer.table && Array.isArray(answer.table.columns)) {
    sections.push(section('table', 'table', tableView(answer.table)));
  } else if (answer.table?.error) {
    sections.push(section('table', 'table', el('pre', { text: answer.table.error })));
  }
  if (answer.result !== null && answer.result !== undefined && !answer.table) {
    const text = typeof answer.result === 'string' ? answer.result
      : JSON.stringify(answer.result, null, 2);
    sections.push(section('result', 'result', el('pre', { text })));
  }
  return sections;
}

/** The glyph. `glyph` and `ui` are the host's (glyphs.md, "What render receives"). */
export async function render(glyph, ui) {
  let disposed = false;
  const cleanups = [];
  const onCleanup = (fn) => cleanups.push(fn);
  ui.onCleanup?.(() => {
    disposed = true;
    for (const fn of cleanups.splice(0)) {
      try { fn(); } catch (error) { ui.log?.warn?.('py glyph cleanup failed', error); }
    }
  });

  const frame = ui.glyph?.({
    defaults: {
      x: glyph.x ?? 80, y: glyph.y ?? 80, width: glyph.width || 560, height: glyph.height || 460,
    },
    titleBar: { label: glyph.symbol || 'py' },
    resizable: true,
    className: `${ROOT}-frame`,
  });
  const root = el('div', { class: ROOT, 'data-glyph-id': glyph.id ?? '' }, el('style', { text: STYLE }));
  const element = frame?.element ?? root;
  if (frame) frame.content.append(root);

  // ---- the parts ----------------------------------------------------------------------------
  const picker = el('select', { class: 'qpy-env', title: 'Python environment', hidden: true });
  const envName = el('span', { class: 'qpy-env-name' });
  const python = el('span', { class: 'qpy-python' });
  const note = el('span', { class: 'qpy-note', hidden: true });
  const upstreamChip = el('span', { class: 'qpy-upstream', hidden: true });
  const runButton = el('button', { class: 'qpy-btn qpy-run', type: 'button', text: '▶ Run', title: 'Run (Ctrl/Cmd+Enter)' });
  const spawnButton = el('button', {
    class: 'qpy-btn qpy-spawn', type: 'button', text: 'Result glyph', hidden: true,
    title: 'Place the result on the canvas',
  });
  const gutter = el('pre', { class: 'qpy-gutter', 'aria-hidden': 'true' });
  const code = el('textarea', {
    class: 'qpy-code', spellcheck: false, autocomplete: 'off', autocapitalize: 'off', wrap: 'off',
    placeholder: '# Python: the last expression is the result\nprint("hello")\n6 * 7',
    'aria-label': 'Python code',
  });
  const status = el('div', { class: 'qpy-status', 'data-part': 'status' });
  const output = el('div', { class: 'qpy-output', 'data-part': 'output' });
  root.append(
    el('div', { class: 'qpy-bar' }, picker, envName, python, note, upstreamChip,
      el('span', { class: 'qpy-spacer' }), spawnButton, runButton),
    el('div', { class: 'qpy-editor' }, gutter, code),
    status,
    output,
  );
  ui.preventDrag?.(picker, code, runButton, spawnButton, output, upstreamChip);

  // ---- state ----------------------------------------------------------------------------------
  let environments = [];
  let pluginName = '';
  let listed = Promise.resolve();
  let chosen = '';
  let upstream = null;
  let lastAnswer = null;
  let running = false;
  let errorAt = null;

  let config = {};
  try {
    config = (await ui.loadConfig?.()) ?? {};
  } catch (error) {
    ui.log?.warn?.('py glyph: cannot load its saved settings', error);
  }
  code.value = typeof config.source === 'string' ? config.source : (glyph.content ?? '');
  chosen = typeof config.env === 'string' ? config.env : '';

  let saveTimer = null;
  const save = () => {
    clearTimeout(saveTimer);
    saveTimer = null;
    Promise.resolve(ui.saveConfig?.({ source: code.value, env: chosen }))
      .catch((error) => ui.log?.warn?.('py glyph: cannot save its settings', error));
  };
  const saveSoon = () => {
    clearTimeout(saveTimer);
    saveTimer = setTimeout(save, SAVE_DELAY_MS);
  };
  onCleanup(() => {
    if (saveTimer !== null) save();
  });

  /** The environment a run goes to: a directive in the code wins over the picker. */
  const target = () => directives(code.value)[0] ?? (chosen || defaultEnv());
  const defaultEnv = () => (environments.find((e) => e.default) ?? environments[0])?.name ?? '';

  function showEnvironment() {
    const found = directives(code.value);
    const name = target();
    const env = environments.find((e) => e.name === name);
    envName.textContent = name ? `py:${name}` : 'py';
    const version = env?.python_version ? `Python ${env.python_version}` : 'Python';
    // A cold environment is normal (its workers start on the first run); say so only on hover.
    python.textContent = env?.state === 'failed' ? `${version} (failed)` : version;
    python.title = env ? `${env.state}: ${env.workers} workers, ${env.runs} runs${env.path ? `\n${env.path}` : ''}` : '';
    if (environments.length > 1) {
      picker.hidden = false;
      picker.disabled = found.length > 0;
      if (environments.some((e) => e.name === name)) picker.value = name;
    }
    note.hidden = true;
    note.classList.remove('qpy-bad');
    if (found.length > 1) {
      note.hidden = false;
      note.classList.add('qpy-bad');
      note.textContent = `two environments named in the code: ${found.map((n) => `py:${n}`).join(', ')}`;
    } else if (found.length === 1 && environments.length && !env) {
      note.hidden = false;
      note.classList.add('qpy-bad');
      note.textContent = `no environment '${name}' (this plugin serves ${environments.map((e) => e.name).join(', ')})`;
    } else if (found.length === 1 && environments.length > 1) {
      note.hidden = false;
      note.textContent = `set by # py:${name} in the code`;
    } else if (env?.error) {
      note.hidden = false;
      note.classList.add('qpy-bad');
      note.textContent = env.error;
    }
  }

  function showGutter() {
    const lines = code.value.split('\n').length;
    gutter.replaceChildren(...Array.from({ length: lines }, (_, i) => el('span', {
      class: i + 1 === errorAt ? 'qpy-err-line' : undefined,
      text: `${i + 1}\n`,
    })));
    gutter.scrollTop = code.scrollTop;
  }

  function showUpstream() {
    upstreamChip.hidden = !upstream;
    if (!upstream) return;
    const what = upstream.id ?? [upstream.subjects, upstream.predicates].flat().filter(Boolean).join(' ');
    upstreamChip.replaceChildren(
      el('span', { text: `upstream: ${String(what || 'attestation').slice(0, 40)}` }),
      el('button', { type: 'button', text: '×', title: 'Forget the upstream attestation', onclick: () => { upstream = null; showUpstream(); } }),
    );
  }

  function showAnswer(answer) {
    lastAnswer = answer;
    errorAt = answer.success ? null : errorLine(answer.error);
    showGutter();
    const ms = Number.isFinite(answer.duration_ms) ? `${answer.duration_ms} ms` : '';
    status.replaceChildren(
      el('span', { class: answer.success ? 'qpy-ok' : 'qpy-failed', text: answer.success ? '✓ ok' : '✗ failed' }),
      el('span', { 'data-part': 'duration', text: ms }),
      el('span', { text: answer.env ? `in py:${answer.env}` : '' }),
    );
    output.replaceChildren(...outputSections(answer));
    spawnButton.hidden = typeof ui.spawnResult !== 'function';
  }

  async function loadEnvironments() {
    try {
      const response = await ui.pluginFetch('/environments', { method: 'GET' });
      const answer = await readJson(response);
      if (!response.ok || !Array.isArray(answer.environments)) {
        throw new Error(answer.error ?? `HTTP ${response.status}`);
      }
      if (disposed) return;
      environments = answer.environments;
      pluginName = answer.plugin ?? '';
      picker.replaceChildren(...environments.map((env) => el('option', {
        value: env.name,
        text: `${env.name}${env.python_version ? ` · ${env.python_version}` : ''}${env.default ? ' (default)' : ''}`,
      })));
      if (chosen && !environments.some((e) => e.name === chosen)) chosen = '';
      showEnvironment();
    } catch (error) {
      if (disposed) return;
      note.hidden = false;
      note.classList.add('qpy-bad');
      note.textContent = `cannot list environments: ${error.message ?? error}`;
    }
  }

  async function run() {
    if (running || disposed) return;
    if (!code.value.trim()) {
      status.textContent = 'nothing to run';
      return;
    }
    running = true;
    runButton.disabled = true;
    const env = target();
    status.textContent = `running${env ? ` in py:${env}` : ''}…`;
    save();
    await listed; // the plugin's name decides the path (never rejects)
    const body = { content: code.value, env, glyph_id: glyph.id ?? '' };
    if (upstream) body.upstream_attestation = upstream;
    let answer;
    try {
      const path = pluginName === HOST_SHADOWED ? UNSHADOWED_RUN_PATH : RUN_PATH;
      const response = await ui.pluginFetch(path, { method: 'POST', body });
      answer = executionOf(await readJson(response));
      if (typeof answer.success !== 'boolean') {
        // A refusal before any run (bad request, no worker): shown like a failed run.
        answer = {
          success: false, stdout: '', stderr: '', result: null, duration_ms: 0,
          error: answer.error ?? `HTTP ${response.status}`,
        };
      }
    } catch (error) {
      answer = {
        success: false, stdout: '', stderr: '', result: null, duration_ms: 0,
        error: `cannot reach the plugin: ${error.message ?? error}`,
      };
    }
    running = false;
    runButton.disabled = false;
    if (disposed) return;
    showAnswer({ ...answer, env });
    if (environments.find((e) => e.name === env)?.state !== 'ready') loadEnvironments();
  }

  // ---- the editor -----------------------------------------------------------------------------
  function indent(event) {
    const { selectionStart: start, selectionEnd: end, value } = code;
    const lineStart = value.lastIndexOf('\n', start - 1) + 1;
    if (!event.shiftKey && start === end) {
      code.setRangeText(INDENT, start, end, 'end');
      return;
    }
    // A selection (or Shift+Tab): indent or dedent every line it touches.
    const block = value.slice(lineStart, end);
    const changed = block.split('\n').map((line) => {
      if (!event.shiftKey) return INDENT + line;
      const spaces = line.match(/^ {1,4}|^\t/);
      return spaces ? line.slice(spaces[0].length) : line;
    }).join('\n');
    code.setRangeText(changed, lineStart, end, start === end ? 'end' : 'select');
  }

  function newline() {
    const { selectionStart: start, selectionEnd: end, value } = code;
    const lineStart = value.lastIndexOf('\n', start - 1) + 1;
    const line = value.slice(lineStart, start);
    let lead = line.match(/^[ \t]*/)[0];
    if (/:\s*(#.*)?$/.test(line)) lead += INDENT;
    code.setRangeText(`\n${lead}`, start, end, 'end');
  }

  const onKey = (event) => {
    if (event.isComposing) return; // an input method's Enter is not ours
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      run();
    } else if (event.key === 'Tab' && !event.altKey && !event.ctrlKey && !event.metaKey) {
      event.preventDefault();
      indent(event);
      changed();
    } else if (event.key === 'Enter' && !event.shiftKey && !event.altKey) {
      event.preventDefault();
      newline();
      changed();
    }
  };
  const changed = () => {
    showGutter();
    showEnvironment();
    saveSoon();
  };
  const onScroll = () => { gutter.scrollTop = code.scrollTop; };
  code.addEventListener('keydown', onKey);
  code.addEventListener('input', changed);
  code.addEventListener('scroll', onScroll);
  runButton.addEventListener('click', run);
  picker.addEventListener('change', () => {
    chosen = picker.value;
    showEnvironment();
    save();
  });
  spawnButton.addEventListener('click', () => {
    if (!lastAnswer) return;
    const { success, stdout, stderr, result, error, duration_ms: durationMs } = lastAnswer;
    ui.spawnResult({ success, stdout, stderr, result, error, duration_ms: durationMs });
  });
  onCleanup(() => {
    code.removeEventListener('keydown', onKey);
    code.removeEventListener('input', changed);
    code.removeEventListener('scroll', onScroll);
    runButton.removeEventListener('click', run);
  });

  // A melded attestation (e.g. an ax query's result) becomes the run's `upstream`.
  const unsubscribe = ui.onMeld?.((meld) => {
    const attestation = attestationOf(meld?.content);
    if (attestation) {
      upstream = attestation;
      showUpstream();
    } else {
      ui.log?.info?.(`py glyph: melded ${meld?.symbol ?? 'glyph'} is not an attestation; upstream unchanged`);
    }
  });
  if (typeof unsubscribe === 'function') onCleanup(unsubscribe);

  showGutter();
  showEnvironment();
  // Not awaited: the glyph is usable at once, the picker fills in when the answer comes.
  listed = loadEnvironments();
  return element;
}

export default render;
