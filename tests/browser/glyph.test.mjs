// The glyph, its page and its routes in a real headless Chromium (Debian's), against the real
// plugin binary serving two real environments (the data and bio variant venvs) with --http.
//
//   QNTX_TEST_VENVS=.venvs/py3.11 node --test tests/browser/   (from the repository root)
//
// QNTX_PLUGIN_BINARY overrides the binary (default target/debug/qntx-python-plugin) and
// CHROMIUM the browser (default /usr/bin/chromium). .ci/run installs and runs all of this.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BINARY = process.env.QNTX_PLUGIN_BINARY ?? path.join(REPO, 'target/debug/qntx-python-plugin');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const VENVS = process.env.QNTX_TEST_VENVS;
// Flags that keep Chromium off the network this machine does not have (and quick to start).
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const RUN_TIMEOUT = 60_000;

let plugin;
let base;
let browser;

/** Starts the plugin with both environments and --http on a free port; resolves its URL. */
function startPlugin() {
  for (const [what, file] of [['the plugin binary', BINARY], ['the data venv', `${VENVS}/data`], ['the bio venv', `${VENVS}/bio`]]) {
    if (!existsSync(file)) throw new Error(`${what} is missing: ${file} (run .ci/run, or cargo build and scripts/make-venv)`);
  }
  const child = spawn(BINARY, [
    '--port', '0', '--workers', '2', '--http', '127.0.0.1:0',
    '--env', `data=${VENVS}/data`, '--env', `bio=${VENVS}/bio`,
  ], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no --http address in the log within 30 s')), 30_000);
    child.once('exit', (code) => reject(new Error(`the plugin exited early (${code})`)));
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      let entry;
      try { entry = JSON.parse(line); } catch { return; }
      if (entry.http) {
        clearTimeout(timer);
        resolve({ child, url: `http://${entry.http}` });
      }
    });
  });
}

before(async () => {
  assert.ok(VENVS, 'set QNTX_TEST_VENVS to the directory holding the data and bio venvs');
  ({ child: plugin, url: base } = await startPlugin());
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
  plugin?.kill('SIGTERM');
});

/** A fresh browser context (empty localStorage) on the page, once the glyph has rendered. */
async function openPage() {
  const context = await browser.newContext({ viewport: { width: 1200, height: 860 } });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (error) => problems.push(String(error)));
  await page.goto(`${base}/`);
  await page.waitForFunction(() => window.qpyPage?.ready || window.qpyPage?.failed);
  assert.equal(await page.evaluate(() => window.qpyPage.failed), undefined);
  await page.waitForSelector('.qpy-env option[value=bio]', { state: 'attached' });
  return { page, context, problems };
}

/** Types the code, runs it with the button and waits for the answer to be shown. */
async function run(page, code, { env, keys } = {}) {
  if (env) await page.selectOption('.qpy-env', env);
  await page.fill('.qpy-code', code);
  if (keys) {
    await page.focus('.qpy-code');
    await page.keyboard.press(keys);
  } else {
    await page.click('.qpy-run');
  }
  await page.waitForSelector('.qpy-status .qpy-ok, .qpy-status .qpy-failed', { timeout: RUN_TIMEOUT });
  return {
    ok: await page.locator('.qpy-status .qpy-ok').count() === 1,
    text: await page.locator('.qpy-output').innerText(),
    status: await page.locator('.qpy-status').innerText(),
  };
}

describe('the page served by --http', () => {
  test('lists both environments, with the chosen one named and its Python version', async () => {
    const { page, context, problems } = await openPage();
    const options = await page.locator('.qpy-env option').evaluateAll((all) => all.map((o) => o.value));
    assert.deepEqual(options.sort(), ['bio', 'data']);
    await page.selectOption('.qpy-env', 'bio');
    assert.equal(await page.locator('.qpy-env-name').innerText(), 'py:bio');
    await page.waitForFunction(() => /^Python 3\.\d+/.test(document.querySelector('.qpy-python').textContent));
    assert.deepEqual(problems, []);
    await context.close();
  });

  test('runs the code in each environment it is picked for, and nowhere else', async () => {
    const { page, context } = await openPage();
    let answer = await run(page, 'import Bio\nprint("bio", Bio.__version__)\nBio.__file__', { env: 'bio' });
    assert.ok(answer.ok, answer.text);
    assert.match(answer.text, /^bio \d+\.\d+/m);
    assert.ok(answer.text.includes(`${path.resolve(VENVS, 'bio')}/`), `imported from the bio venv: ${answer.text}`);
    assert.match(answer.status, /in py:bio/);
    assert.match(answer.status, /\d+ ms/, 'the duration is shown');

    answer = await run(page, 'import pandas\nprint("pandas", pandas.__version__)', { env: 'data' });
    assert.ok(answer.ok, answer.text);
    assert.match(answer.text, /^pandas \d+\.\d+/m);
    assert.match(answer.status, /in py:data/);

    answer = await run(page, 'import Bio', { env: 'data' });
    assert.ok(!answer.ok);
    assert.match(answer.text, /ModuleNotFoundError: No module named 'Bio'/);
    await context.close();
  });

  test('shows a matplotlib figure as an image and a DataFrame as a table', async () => {
    const { page, context } = await openPage();
    const code = [
      'import matplotlib.pyplot as plt',
      'import pandas as pd',
      'xs = list(range(8))',
      'plt.plot(xs, [x * x for x in xs])',
      'pd.DataFrame({"x": xs, "square": [x * x for x in xs]})',
    ].join('\n');
    const answer = await run(page, code, { env: 'data' });
    assert.ok(answer.ok, answer.text);
    const image = page.locator('[data-part=figures] img.qpy-figure');
    await image.waitFor();
    const drawn = await image.evaluate(async (img) => {
      await img.decode();
      return { src: img.src.slice(0, 22), width: img.naturalWidth, height: img.naturalHeight };
    });
    assert.deepEqual(drawn, { src: 'data:image/png;base64,', width: 640, height: 480 });

    const headers = await page.locator('table.qpy-table thead th').allInnerTexts();
    assert.deepEqual(headers.map((h) => h.trim()), ['', 'x', 'square']);
    const lastRow = await page.locator('table.qpy-table tbody tr').last().locator('th, td').allInnerTexts();
    assert.deepEqual(lastRow, ['7', '7', '49']);
    assert.match(await page.locator('.qpy-table-note').innerText(), /DataFrame: 8 rows/);
    await page.screenshot({ path: path.join(REPO, 'target/glyph-page.png') });
    await context.close();
  });

  test('shows the error at the line the user wrote, and marks it', async () => {
    const { page, context } = await openPage();
    const answer = await run(page, 'total = 0\nfor n in [1, 2]:\n    total += n / 0\n', { env: 'data' });
    assert.ok(!answer.ok);
    assert.equal(await page.locator('.qpy-where').innerText(), 'line 3: ZeroDivisionError: division by zero');
    assert.match(answer.text, /File "<execute>", line 3/);
    assert.equal((await page.locator('.qpy-gutter .qpy-err-line').innerText()).trim(), '3');
    await context.close();
  });

  test('a # py: line in the code wins over the picker', async () => {
    const { page, context } = await openPage();
    await page.selectOption('.qpy-env', 'data');
    const answer = await run(page, 'print("start")\n# py:bio\nimport Bio\nprint("routed")');
    assert.ok(answer.ok, answer.text);
    assert.match(answer.status, /in py:bio/);
    assert.ok(await page.locator('.qpy-env').isDisabled(), 'the picker follows the code');
    assert.equal(await page.locator('.qpy-note').innerText(), 'set by # py:bio in the code');
    await context.close();
  });

  test('the qntx host API says no host is connected', async () => {
    const { page, context } = await openPage();
    const answer = await run(page, 'attest(subjects=["s"], predicates=["p"], contexts=["c"])');
    assert.ok(!answer.ok);
    assert.match(answer.text, /no QNTX host connected/);
    await context.close();
  });

  test('keeps source and environment across a reload; meld and result glyphs work', async () => {
    const { page, context } = await openPage();
    await page.click('#meld');
    await page.waitForSelector('.qpy-upstream:not([hidden])');
    let answer = await run(page, 'upstream["subjects"][0]', { env: 'bio', keys: 'Control+Enter' });
    assert.ok(answer.ok, answer.text);
    assert.match(answer.text, /pump-12/);
    await page.click('.qpy-spawn');
    const spawned = await page.evaluate(() => window.qpyPage.spawned);
    assert.equal(spawned.length, 1);
    assert.equal(spawned[0].result, 'pump-12');

    await page.reload();
    await page.waitForFunction(() => window.qpyPage?.ready);
    await page.waitForSelector('.qpy-env option[value=bio]', { state: 'attached' });
    assert.equal(await page.inputValue('.qpy-code'), 'upstream["subjects"][0]');
    assert.equal(await page.inputValue('.qpy-env'), 'bio');
    answer = await run(page, '6 * 7');
    assert.match(answer.status, /in py:bio/);
    await context.close();
  });
});

describe('the glyph module under the host calling convention', () => {
  test('render(glyph, ui) with a recording ui: config, pluginFetch, saveConfig, spawnResult, meld, cleanup', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    // Any page of the plugin's origin will do: the module is imported as the host imports it.
    await page.goto(`${base}/version`);
    const loaded = await page.evaluate(async () => {
      const calls = { glyph: [], fetched: [], saved: [], spawned: [], cleanups: [], melds: [], prevented: 0 };
      window.calls = calls;
      const ui = {
        glyph(options) {
          calls.glyph.push(options);
          const element = document.createElement('div');
          const content = document.createElement('div');
          element.append(content);
          element.style.height = '480px';
          return { element, titleBar: null, content };
        },
        async pluginFetch(path, options = {}) {
          calls.fetched.push({ path, ...options });
          return fetch(path, {
            method: options.method ?? 'GET',
            headers: options.body ? { 'Content-Type': 'application/json' } : {},
            body: options.body ? JSON.stringify(options.body) : undefined,
          });
        },
        preventDrag(...elements) { calls.prevented += elements.length; },
        async loadConfig() { return { source: 'print("from the saved config")\n21 * 2', env: 'bio' }; },
        async saveConfig(config) { calls.saved.push(config); },
        spawnResult(result) { calls.spawned.push(result); },
        onMeld(callback) { calls.melds.push(callback); return () => { calls.unsubscribed = true; }; },
        onCleanup(fn) { calls.cleanups.push(fn); },
        log: { debug() {}, info() {}, warn() {}, error() {} },
      };
      const module = await import('/glyph/module.js');
      const glyph = { id: 'glyph-7', symbol: 'py:*', x: 5, y: 6, width: 500, height: 420, content: 'print("canvas content")' };
      const element = await module.render(glyph, ui);
      document.body.append(element);
      const rules = [...element.querySelector('style').sheet.cssRules].map((r) => r.selectorText);
      return {
        defaultIsRender: module.default === module.render,
        isElement: element instanceof HTMLElement,
        glyphOptions: calls.glyph[0],
        unscoped: rules.filter((s) => !s.split(',').every((part) => part.trim().startsWith('.qpy'))),
        prevented: calls.prevented,
      };
    });
    assert.ok(loaded.defaultIsRender && loaded.isElement);
    assert.deepEqual(loaded.glyphOptions.defaults, { x: 5, y: 6, width: 500, height: 420 });
    assert.deepEqual(loaded.unscoped, [], 'every style rule is scoped to the glyph');
    assert.ok(loaded.prevented >= 3, 'editor and buttons do not start a drag');

    await page.waitForSelector('.qpy-env option[value=bio]', { state: 'attached' });
    assert.equal(await page.inputValue('.qpy-code'), 'print("from the saved config")\n21 * 2');
    assert.equal(await page.inputValue('.qpy-env'), 'bio');

    // Tab indents, Ctrl+Enter runs.
    await page.focus('.qpy-code');
    await page.keyboard.press('End');
    await page.keyboard.press('Control+End');
    await page.keyboard.press('Tab');
    assert.match(await page.inputValue('.qpy-code'), /21 \* 2 {4}$/);
    await page.keyboard.press('Control+Enter');
    await page.waitForSelector('.qpy-status .qpy-ok, .qpy-status .qpy-failed', { timeout: RUN_TIMEOUT });
    assert.match(await page.locator('[data-part=result]').innerText(), /42/);

    const melded = page.evaluate(() => window.calls.melds[0]({
      glyphId: 'ax-1', symbol: 'ax', direction: 'right',
      content: JSON.stringify({ id: 'a-1', subjects: ['s-1'], predicates: ['p'], contexts: ['c'], attributes: {} }),
    }));
    await melded;
    await page.click('.qpy-run');
    await page.waitForFunction(() => document.querySelector('[data-part=result]')?.textContent.includes('42')
      && window.calls.fetched.filter((f) => f.path.endsWith('/execute')).length === 2);
    await page.click('.qpy-spawn');

    const calls = await page.evaluate(() => window.calls);
    const runs = calls.fetched.filter((f) => f.path.endsWith('/execute'));
    // This plugin is named python, so the host would answer /api/python/execute itself
    // (protocol §4.4, dropping env and upstream): the glyph posts to the alias the host proxies.
    assert.deepEqual(runs.map((r) => r.path), ['/glyph/execute', '/glyph/execute']);
    assert.equal(runs[0].method, 'POST');
    assert.deepEqual(Object.keys(runs[0].body).sort(), ['content', 'env', 'glyph_id']);
    assert.equal(runs[0].body.env, 'bio');
    assert.equal(runs[0].body.glyph_id, 'glyph-7');
    assert.deepEqual(runs[1].body.upstream_attestation.subjects, ['s-1']);
    assert.ok(calls.fetched.some((f) => f.path === '/environments'));
    assert.deepEqual(calls.saved.at(-1), { source: 'print("from the saved config")\n21 * 2    ', env: 'bio' });
    assert.equal(calls.spawned.length, 1);
    assert.deepEqual(Object.keys(calls.spawned[0]).sort(), ['duration_ms', 'error', 'result', 'stderr', 'stdout', 'success']);
    assert.equal(calls.spawned[0].result, 42);
    assert.equal(calls.spawned[0].stdout, 'from the saved config\n');

    // Cleanup: the meld subscription ends and the glyph stops running code.
    const afterCleanup = await page.evaluate(async () => {
      window.calls.cleanups.forEach((fn) => fn());
      const before = window.calls.fetched.length;
      document.querySelector('.qpy-run').click();
      await new Promise((resolve) => requestAnimationFrame(resolve));
      return { unsubscribed: window.calls.unsubscribed, fetchedMore: window.calls.fetched.length - before };
    });
    assert.deepEqual(afterCleanup, { unsubscribed: true, fetchedMore: 0 });
    await context.close();
  });
});

describe('answers from the host\'s own /api/python/execute', () => {
  test('are unwrapped to the plugin\'s object; plain answers are kept', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${base}/version`);
    const seen = await page.evaluate(async () => {
      const { executionOf } = await import('/glyph/module.js');
      const plugin = { success: true, stdout: '1\n', stderr: 'w', result: 2, error: null, duration_ms: 31, figures: [] };
      const host = { success: true, stdout: '1\n', stderr: '', error: '', duration_ms: 0, result: plugin };
      const direct = { success: true, stdout: '', stderr: '', result: { success: false, stdout: '', duration_ms: 0 }, error: null, duration_ms: 5 };
      return { host: executionOf(host), direct: executionOf(direct) === direct };
    });
    assert.equal(seen.host.duration_ms, 31);
    assert.equal(seen.host.stderr, 'w');
    assert.ok(seen.direct, 'a result that merely looks like an answer stays the result');
    await context.close();
  });
});

describe('the routes, as a browser reaches them', () => {
  test('module, probe, bad JSON and unknown paths', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${base}/version`);
    const answers = await page.evaluate(async () => {
      const get = async (path, init) => {
        const response = await fetch(path, init);
        return { status: response.status, type: response.headers.get('content-type'), body: await response.text() };
      };
      return {
        module: await get('/glyph/module.js'),
        probe: await get('/glyph-module.js'),
        badJson: await get('/execute', { method: 'POST', body: 'print(1)' }),
        unknown: await get('/no/such/route'),
      };
    });
    assert.equal(answers.module.status, 200);
    assert.match(answers.module.type, /^text\/javascript/);
    assert.equal(answers.probe.status, 410);
    assert.equal(answers.badJson.status, 400);
    assert.match(JSON.parse(answers.badJson.body).error, /^Invalid request/);
    assert.equal(answers.unknown.status, 404);
    assert.match(JSON.parse(answers.unknown.body).error, /Unknown endpoint: GET \/no\/such\/route/);
    await context.close();
  });
});
