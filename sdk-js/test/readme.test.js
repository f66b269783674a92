// Runs the ```js examples of README.md against a running hub, as a user would: each block is a
// separate ES module importing 'switch-sdk', with SWITCH_URL and SWITCH_JWT_SECRET set from
// SWITCH_TEST_URL and SWITCH_TEST_JWT_SECRET, and SWITCH_API_KEY set to a publish key created for
// the run (revoked after it). Without SWITCH_TEST_URL the blocks are only checked to parse.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Switch, NotFoundError } from '../index.js';

const PKG_DIR = join(dirname(fileURLToPath(import.meta.url)), '..');
const BASE_URL = process.env.SWITCH_TEST_URL;
const JWT_SECRET = process.env.SWITCH_TEST_JWT_SECRET;

function jsBlocks(markdown) {
  const blocks = [];
  const re = /^```js\n([\s\S]*?)^```$/gm;
  let m;
  while ((m = re.exec(markdown))) {
    const line = markdown.slice(0, m.index).split('\n').length;
    blocks.push({ line, code: m[1] });
  }
  return blocks;
}

/** Runs a module from stdin in the package directory, so that `import 'switch-sdk'` resolves to it. */
function runModule(code, { env, timeoutMs = 60_000, check = false } = {}) {
  return new Promise((resolve) => {
    const args = check ? ['--check'] : ['--input-type=module'];
    let file;
    if (check) {
      const dir = mkdtempSync(join(tmpdir(), 'switch-sdk-readme-'));
      file = join(dir, 'example.mjs');
      writeFileSync(file, code);
      args.push(file);
    }
    const child = spawn(process.execPath, args, { cwd: PKG_DIR, env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (file) rmSync(dirname(file), { recursive: true, force: true });
      resolve({ code, signal, stdout, stderr });
    });
    if (!check) child.stdin.end(code);
  });
}

const readme = readFileSync(join(PKG_DIR, 'README.md'), 'utf8');
const blocks = jsBlocks(readme);

describe('README examples', () => {
  let admin;
  let publisherKey;

  before(async () => {
    if (!BASE_URL || !JWT_SECRET) return;
    admin = new Switch({ baseUrl: BASE_URL, jwtSecret: JWT_SECRET, scope: 'admin' });
    publisherKey = await admin.keys.create({ name: `readme-${Date.now().toString(36)}`, scope: 'publish' });
  });

  after(async () => {
    if (publisherKey) {
      await admin.keys.revoke(publisherKey.id).catch((err) => {
        if (!(err instanceof NotFoundError)) throw err;
      });
    }
  });

  test('README.md has js examples and the install line', () => {
    assert.ok(blocks.length >= 4, `found ${blocks.length} js blocks`);
    assert.match(readme, /npm install \.\/sdk-js/);
    for (const { code } of blocks) assert.match(code, /from 'switch-sdk'/);
  });

  for (const { line, code } of blocks) {
    test(`README.md:${line} parses`, async () => {
      const result = await runModule(code, { check: true });
      assert.equal(result.code, 0, result.stderr);
    });
  }

  for (const { line, code } of blocks) {
    test(
      `README.md:${line} runs against the hub`,
      { skip: BASE_URL ? false : 'SWITCH_TEST_URL is not set (no hub to run the examples against)' },
      async () => {
        assert.ok(JWT_SECRET, 'SWITCH_TEST_JWT_SECRET must be set along with SWITCH_TEST_URL');
        const env = { SWITCH_URL: BASE_URL, SWITCH_JWT_SECRET: JWT_SECRET, SWITCH_API_KEY: publisherKey.key };
        const result = await runModule(code, { env });
        assert.equal(result.signal, null, `killed (${result.signal}); output:\n${result.stdout}\n${result.stderr}`);
        assert.equal(result.code, 0, `exit ${result.code}\n${result.stdout}\n${result.stderr}`);
      },
    );
  }
});
