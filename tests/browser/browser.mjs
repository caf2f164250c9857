#!/usr/bin/env node
// tests/browser/browser.mjs: drive the real otp_demo in Debian's headless
// chromium, against the local HTTPS fake of the SMS API.
//
//   cd tests/browser && npm install && node browser.mjs
//
// Env: OTP_BIN (default <repo>/otp_demo), OTP_REDIS_BIN (the WITH_REDIS
// build, for two instances on one redis-server). Prints one "ok NAME" or
// "FAIL NAME: reason" line per check, then "N passed, M failed"; exits 1 on
// any failure. Screenshots go to tests/out/browser/*.png. Every child
// process (fake API, server, browser) is stopped on the way out, also on
// failure, timeout or a signal.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
let otpBin = process.env.OTP_BIN || path.join(root, 'otp_demo');
const outDir = path.join(root, 'tests', 'out', 'browser');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';

const API_KEY = 'test-key-browser';
const FROM = '+12025550100';
const TYPED = '(201) 555-0123';
const E164 = '+12015550123';
const MASKED = '+1********23';
const SHOWN = '+1 (201) 555-0123'; // TYPED, as the code page shows it
const TOKEN_LENGTH = 6;
const WRONG = 'Wrong code. 4 tries left.';
const DEADLINE_MS = 180000;
const STEP_MS = 10000;

let passed = 0;
let failed = 0;
const children = [];
let browser = null;
let tmp = null;

function ok(name) {
	passed++;
	console.log(`ok ${name}`);
}

function fail(name, why) {
	failed++;
	let line = String(why).split('\n')[0];
	if (line.length > 300)
		line = `${line.slice(0, 300)}...`;
	console.log(`FAIL ${name}: ${line}`);
}

// check: run one named check; assertions throw. A failed check aborts the
// run when fatal is set (the later steps depend on it).
async function check(name, fn, fatal = false) {
	try {
		await fn();
		ok(name);
		return true;
	} catch (e) {
		fail(name, e && e.message ? e.message : e);
		if (fatal)
			throw new Abort();
		return false;
	}
}

class Abort extends Error {}

function assert(cond, msg) {
	if (!cond)
		throw new Error(msg);
}

function eq(got, want, what) {
	if (got !== want)
		throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

// start: spawn a child, keep its output, and resolve with the first match
// of re in its stdout or stderr (or reject on exit/timeout).
function start(name, cmd, args, re, env = process.env) {
	const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
	const rec = { name, child, out: '', err: '', exited: null };
	children.push(rec);
	return new Promise((resolve, reject) => {
		const timer = setTimeout(() => reject(new Error(`${name}: no "${re}" within ${STEP_MS} ms`)), STEP_MS);
		const look = () => {
			const m = re.exec(rec.out) || re.exec(rec.err);
			if (m) {
				clearTimeout(timer);
				resolve({ rec, m });
			}
		};
		child.stdout.on('data', (d) => { rec.out += d; look(); });
		child.stderr.on('data', (d) => { rec.err += d; look(); });
		child.on('error', (e) => { clearTimeout(timer); reject(e); });
		child.on('exit', (code, sig) => {
			rec.exited = { code, sig };
			clearTimeout(timer);
			reject(new Error(`${name} exited (${code ?? sig}): ${tail(rec.err)}`));
		});
	});
}

function tail(s, n = 3) {
	return s.trim().split('\n').slice(-n).join(' | ');
}

// stop: SIGTERM, then SIGKILL after a grace period; resolves with the exit.
function stop(rec, graceMs = 3000) {
	if (rec.exited)
		return Promise.resolve(rec.exited);
	return new Promise((resolve) => {
		const t = setTimeout(() => rec.child.kill('SIGKILL'), graceMs);
		rec.child.once('exit', (code, sig) => {
			clearTimeout(t);
			rec.exited = { code, sig };
			resolve(rec.exited);
		});
		rec.child.kill('SIGTERM');
	});
}

function killAllSync() {
	for (const rec of children)
		if (!rec.exited)
			try { rec.child.kill('SIGKILL'); } catch { /* gone */ }
}

// The child env: no OTP_* (each would override a config key) except what
// we set on purpose.
function childEnv() {
	const env = {};
	for (const [k, v] of Object.entries(process.env))
		if (!k.startsWith('OTP_'))
			env[k] = v;
	return env;
}

function records(file) {
	if (!fs.existsSync(file))
		return [];
	return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim())
		.map((l) => JSON.parse(l));
}

async function waitRecords(file, n) {
	const end = Date.now() + 5000;
	for (;;) {
		const r = records(file);
		if (r.length >= n || Date.now() > end)
			return r;
		await new Promise((res) => setTimeout(res, 50));
	}
}

// submit: click the button (the first form's) and wait for the page it
// loads.
async function submit(page, button = 'form button[type=submit]') {
	const [resp] = await Promise.all([
		page.waitForNavigation({ waitUntil: 'load' }),
		page.click(button),
	]);
	return resp;
}

async function shot(page, name) {
	await page.screenshot({ path: path.join(outDir, `${name}.png`), fullPage: true });
}

// Layout checks that hold on every page, phone or desktop: no sideways
// scroll, the stylesheet applied, big enough tap targets, the language.
async function layout(page, lang = 'en') {
	const r = await page.evaluate(() => {
		const de = document.documentElement;
		const card = document.querySelector('main.card');
		const small = [...document.querySelectorAll('input:not([type=hidden]), button')]
			.filter((el) => el.getBoundingClientRect().height < 44)
			.map((el) => el.id || el.tagName);
		return {
			overflow: de.scrollWidth > window.innerWidth,
			card: card ? getComputedStyle(card).backgroundColor : null,
			body: getComputedStyle(document.body).backgroundColor,
			small,
			lang: de.lang,
			viewport: !!document.querySelector('meta[name=viewport]'),
			unlabelled: [...document.querySelectorAll('input:not([type=hidden])')]
				.filter((el) => !el.labels || el.labels.length === 0).map((el) => el.id || el.name),
		};
	});
	assert(!r.overflow, 'page scrolls sideways');
	assert(r.card !== null, 'no main.card');
	assert(r.card !== r.body, 'style.css not applied (card has no own background)');
	assert(r.small.length === 0, `tap targets under 44px: ${r.small.join(',')}`);
	eq(r.lang, lang, 'html lang');
	assert(r.viewport, 'no viewport meta');
	assert(r.unlabelled.length === 0, `inputs without <label>: ${r.unlabelled.join(',')}`);
}

async function main() {
	fs.mkdirSync(outDir, { recursive: true });
	tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'otp-browser-'));
	const certs = path.join(tmp, 'certs');
	const recordFile = path.join(tmp, 'sms.jsonl');

	await check('certificates', () => {
		const r = spawnSync('sh', [path.join(root, 'tests', 'gen_certs.sh'), certs],
			{ encoding: 'utf8', timeout: STEP_MS });
		assert(r.status === 0, `gen_certs.sh exit ${r.status}: ${tail(r.stderr || '')}`);
		for (const f of ['ca.pem', 'server.pem', 'server.key'])
			assert(fs.existsSync(path.join(certs, f)), `missing ${f}`);
	}, true);

	let fakePort;
	await check('fake SMS API starts', async () => {
		const { m } = await start('fake_api', 'python3', [
			path.join(root, 'tests', 'fake_api.py'),
			'--cert', path.join(certs, 'server.pem'), '--key', path.join(certs, 'server.key'),
			'--port', '0', '--record', recordFile, '--api-key', API_KEY,
		], /listening on (\d+)/, childEnv());
		fakePort = Number(m[1]);
	}, true);

	const cfg = path.join(tmp, 'config.cfg');
	const cfgLines = [
		'# written by tests/browser/browser.mjs',
		`API_KEY='${API_KEY}'`,
		`FROM_NUMBER='${FROM}'`,
		"COUNTRY_CODE='+1'",
		`TOKEN_LENGTH=${TOKEN_LENGTH}`,
		"LISTEN='127.0.0.1:0'",
		`SMS_API_URL='https://127.0.0.1:${fakePort}/v2/messages'`,
		`SMS_CA_FILE='${path.join(certs, 'ca.pem')}'`,
		'',
	];
	fs.writeFileSync(cfg, cfgLines.join('\n'));

	let server, base;
	await check('otp_demo starts', async () => {
		assert(fs.existsSync(otpBin), `no binary at ${otpBin} (make first, or set OTP_BIN)`);
		const r = await start('otp_demo', otpBin, ['-c', cfg],
			/listening on http:\/\/127\.0\.0\.1:(\d+)/, childEnv());
		server = r.rec;
		base = `http://127.0.0.1:${r.m[1]}`;
	}, true);

	const host = new URL(base).host;
	await check('browser starts', async () => {
		browser = await chromium.launch({
			executablePath: chromiumPath,
			args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
				'--disable-background-networking', '--disable-component-update', '--disable-sync'],
			timeout: STEP_MS,
		});
	}, true);

	const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
	context.setDefaultTimeout(STEP_MS);
	const page = await context.newPage();

	// Everything the browser does is watched for the whole run.
	const consoleErrors = [];
	const pageErrors = [];
	const failedRequests = [];
	const foreign = [];
	const badResponses = [];
	const expectedStatus = new Map(); // document URL path -> status we expect
	page.on('console', (msg) => {
		if (msg.type() !== 'error' && msg.type() !== 'warning')
			return;
		const text = msg.text();
		const loc = msg.location() || {};
		// chromium logs every 4xx document as an error; those we asked for
		// are fine, any other is not.
		const m = /^Failed to load resource: the server responded with a status of (\d+)/.exec(text);
		if (m && loc.url) {
			const p = new URL(loc.url).pathname;
			if (expectedStatus.get(p) === Number(m[1]))
				return;
			// chromium fetches /favicon.ico on its own; the contract
			// answers 404 for it (a 204 would keep the console clean).
			if (p === '/favicon.ico' && m[1] === '404')
				return;
		}
		consoleErrors.push(`${msg.type()}: ${text} (${loc.url || '?'})`);
	});
	page.on('pageerror', (e) => pageErrors.push(String(e)));
	page.on('requestfailed', (req) => failedRequests.push(`${req.url()}: ${req.failure()?.errorText}`));
	page.on('request', (req) => {
		const u = new URL(req.url());
		if (u.host !== host)
			foreign.push(req.url());
	});
	page.on('response', (resp) => {
		const req = resp.request();
		if (req.resourceType() !== 'document' && resp.status() >= 400)
			badResponses.push(`${resp.status()} ${resp.url()}`);
	});

	let resp;
	await check('index page', async () => {
		resp = await page.goto(`${base}/`);
		eq(resp.status(), 200, 'status');
		const h = resp.headers();
		assert((h['content-security-policy'] || '').includes("default-src 'none'"), 'no CSP header');
		assert((h['content-type'] || '').startsWith('text/html'), `content-type ${h['content-type']}`);
		eq(await page.title(), 'Verify your phone number – otp_demo', 'title (and APP_NAME)');
		eq(await page.getAttribute('form', 'action'), '/request', 'form action');
		eq((await page.getAttribute('form', 'method')).toLowerCase(), 'post', 'form method');
		eq(await page.getAttribute('#phone', 'type'), 'tel', 'phone type');
		eq(await page.getAttribute('#phone', 'autocomplete'), 'tel', 'phone autocomplete');
		const csrf = await page.getAttribute('input[type=hidden][name=csrf]', 'value');
		assert(csrf && csrf.length >= 16, `csrf token ${JSON.stringify(csrf)}`);
		assert(!(await page.isVisible('.error')), 'empty error box is visible');
		const html = await page.content();
		assert(!html.includes('{{'), 'unreplaced placeholder');
		await layout(page);
		await shot(page, 'index');
	}, true);

	await check('session cookie', async () => {
		const c = (await context.cookies()).find((x) => x.name === 'otp_sid');
		assert(c, 'no otp_sid cookie');
		assert(/^[0-9a-f]{64}$/.test(c.value), `otp_sid value ${c.value}`);
		assert(c.httpOnly, 'otp_sid not HttpOnly');
		eq(c.sameSite, 'Strict', 'otp_sid SameSite');
	});

	await check('index page on a phone', async () => {
		// Its own context: a second GET / must not disturb the session of
		// the main page.
		const pctx = await browser.newContext({
			viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true,
		});
		const phone = await pctx.newPage();
		phone.on('console', (msg) => {
			if (msg.type() === 'error')
				consoleErrors.push(`phone: ${msg.text()}`);
		});
		phone.on('request', (req) => {
			if (new URL(req.url()).host !== host)
				foreign.push(req.url());
		});
		const r = await phone.goto(`${base}/`);
		eq(r.status(), 200, 'status');
		await layout(phone);
		const box = await phone.locator('main.card').boundingBox();
		assert(box.width <= 390 && box.x >= 0, `card overflows: ${JSON.stringify(box)}`);
		await shot(phone, 'index-phone');
		await pctx.close();
	});

	await check('request code', async () => {
		await page.fill('#phone', TYPED);
		resp = await submit(page);
		eq(resp.status(), 200, 'status');
		eq(new URL(page.url()).pathname, '/request', 'path');
		eq(await page.getAttribute('form', 'action'), '/verify', 'form action');
		const body = await page.innerText('main');
		assert(body.includes(`If ${SHOWN} may sign in here, a code is on its way.`), `no "If ${SHOWN} may sign in here, a code is on its way." in: ${body}`);
		assert(!body.includes(E164), 'full number shown on the page');
		eq(await page.getAttribute('#token', 'autocomplete'), 'one-time-code', 'token autocomplete');
		eq(await page.getAttribute('#token', 'maxlength'), String(TOKEN_LENGTH), 'token maxlength');
		const im = await page.getAttribute('#token', 'inputmode');
		assert(im === 'numeric' || im === 'text', `inputmode ${im}`);
		eq(await page.evaluate(() => document.activeElement && document.activeElement.id), 'token', 'autofocus');
		assert(!(await page.isVisible('.error')), 'empty error box is visible');
		assert(await page.isVisible('a[href="/"]'), 'no link to start over');
		assert(!(await page.content()).includes('{{'), 'unreplaced placeholder');
		const c = (await context.cookies()).find((x) => x.name === 'otp_vid');
		assert(c && c.httpOnly && c.sameSite === 'Strict', 'no HttpOnly SameSite=Strict otp_vid cookie');
		await layout(page);
		await shot(page, 'verify');
	}, true);

	let code;
	await check('SMS sent', async () => {
		const r = await waitRecords(recordFile, 1);
		eq(r.length, 1, 'SMS requests');
		eq(r[0].verdict, 'ok', 'fake API verdict');
		const j = r[0].json || {};
		eq(j.to, E164, 'to');
		eq(j.from, FROM, 'from');
		assert(typeof j.text === 'string', 'no text');
		code = j.text.trim().split(/\s+/).pop();
		eq(code.length, TOKEN_LENGTH, `code length (${j.text})`);
	}, true);

	await check('wrong code', async () => {
		// Same alphabet, same length, certainly not the code.
		const wrong = code.split('').map((ch) => (ch === '1' ? '2' : '1')).join('');
		expectedStatus.set('/verify', 403);
		await page.keyboard.type(wrong);
		resp = await submit(page);
		eq(resp.status(), 403, 'status');
		const err = page.locator('.error');
		assert(await err.isVisible(), 'no visible error');
		eq((await err.innerText()).trim(), WRONG, 'error text');
		assert((await page.innerText('main')).includes(SHOWN), 'the number is not shown after a wrong code');
		eq(await err.getAttribute('role'), 'alert', 'error role');
		eq(await page.getAttribute('form', 'action'), '/verify', 'form action');
		assert(await page.isVisible('#token'), 'no token field');
		eq(await page.inputValue('#token'), '', 'token field not empty');
		const csrf = await page.getAttribute('input[type=hidden][name=csrf]', 'value');
		assert(csrf && csrf.length >= 16, 'no csrf token');
		eq(records(recordFile).length, 1, 'SMS requests after a wrong code');
		await layout(page);
		await shot(page, 'verify-failed');
	});

	await check('right code', async () => {
		expectedStatus.delete('/verify');
		await page.fill('#token', code);
		resp = await submit(page);
		eq(resp.status(), 200, 'status');
		eq(await page.title(), 'Verified – otp_demo', 'title');
		const body = await page.innerText('main');
		assert(/verified/i.test(body), `no "verified" in: ${body}`);
		assert(body.includes(`Your phone number ${MASKED} is verified.`), `text: ${body}`);
		assert(!(await page.content()).includes('{{'), 'unreplaced placeholder');
		const names = (await context.cookies()).map((x) => x.name);
		assert(!names.includes('otp_vid'), 'otp_vid cookie not cleared');
		await layout(page);
		await shot(page, 'success');
	});

	await check('log out', async () => {
		const auth = (await context.cookies()).find((x) => x.name === 'otp_auth');
		assert(auth, 'no otp_auth cookie after verifying');
		eq((await context.request.get(`${base}/auth`)).status(), 204, '/auth before logging out');
		eq(await page.getAttribute('form', 'action'), '/logout', 'success page form action');
		eq((await page.getAttribute('form', 'method')).toLowerCase(), 'post', 'logout form method');
		const csrf = await page.getAttribute('form input[type=hidden][name=csrf]', 'value');
		assert(csrf && csrf.length >= 16, 'no csrf token in the logout form');
		resp = await submit(page);
		eq(resp.status(), 200, 'status');
		eq(new URL(page.url()).pathname, '/logout', 'path');
		const body = await page.innerText('main');
		assert(body.includes('You are logged out.'), `text: ${body}`);
		assert(!(await page.content()).includes('{{'), 'unreplaced placeholder');
		const names = (await context.cookies()).map((x) => x.name);
		assert(!names.includes('otp_auth'), 'otp_auth cookie not cleared');
		eq((await context.request.get(`${base}/auth`)).status(), 401, '/auth after logging out');
		// The old cookie, replayed: revoked on the server, not just cleared.
		const replay = await context.request.get(`${base}/auth`,
			{ headers: { Cookie: `otp_auth=${auth.value}` } });
		eq(replay.status(), 401, '/auth with the old cookie replayed');
		await layout(page);
		await shot(page, 'logged-out');
	});

	await check('error page', async () => {
		expectedStatus.set('/no-such-page', 404);
		resp = await page.goto(`${base}/no-such-page`);
		eq(resp.status(), 404, 'status');
		assert((await page.innerText('main')).includes('404'), 'no status on the page');
		assert(await page.isVisible('a[href="/"]'), 'no link back to /');
		assert(!(await page.content()).includes('{{'), 'unreplaced placeholder');
		await layout(page);
		await shot(page, 'error');
		await Promise.all([page.waitForNavigation(), page.click('a[href="/"]')]);
		eq(new URL(page.url()).pathname, '/', 'link back');
	});

	await proxyMode(cfgLines, recordFile);
	await codePages(cfgLines, recordFile);
	await languages(cfgLines, recordFile);
	await twoInstances(cfgLines, recordFile);

	// Give late console messages or requests a moment to arrive.
	await page.waitForTimeout(100);
	await check('no console errors', () => {
		assert(consoleErrors.length === 0 && pageErrors.length === 0,
			[...consoleErrors, ...pageErrors].join('; '));
	});
	await check('no failed requests', () => {
		assert(failedRequests.length === 0 && badResponses.length === 0,
			[...failedRequests, ...badResponses].join('; '));
	});
	await check('no external requests', () => {
		assert(foreign.length === 0, foreign.join(' '));
	});

	await browser.close();
	browser = null;

	await check('log hygiene', () => {
		assert(!server.err.includes(E164), 'full phone number in the log');
		assert(!server.err.includes(API_KEY), 'API key in the log');
	});
	await check('otp_demo exits cleanly on SIGTERM', async () => {
		const { code: c, sig } = await stop(server);
		assert(c === 0, `exit ${c ?? sig}: ${tail(server.err)}`);
	});
}

// Proxy mode: a second otp_demo with UPSTREAM at a small HTML server (in
// this process). /admin/page?tab=1 gives the phone form; after the code
// the browser lands on the upstream's page it first asked for.
async function proxyMode(cfgLines, recordFile) {
	const seen = [];
	const up = http.createServer((req, res) => {
		seen.push({ url: req.url, user: req.headers['remote-user'] });
		res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
		res.end(`<!doctype html><html lang="en"><title>Upstream admin</title>
<h1 id="up">upstream page ${req.url.replace(/[<&]/g, '')}</h1>`);
	});
	await new Promise((res) => up.listen(0, '127.0.0.1', res));
	const cfg = path.join(tmp, 'proxy.cfg');
	fs.writeFileSync(cfg, [...cfgLines,
		`UPSTREAM='http://127.0.0.1:${up.address().port}'`, ''].join('\n'));
	let server, base, context;
	try {
		await check('proxy mode: otp_demo starts', async () => {
			const r = await start('otp_demo proxy', otpBin, ['-c', cfg],
				/listening on http:\/\/127\.0\.0\.1:(\d+)/, childEnv());
			server = r.rec;
			base = `http://127.0.0.1:${r.m[1]}`;
		}, true);
		context = await browser.newContext();
		context.setDefaultTimeout(STEP_MS);
		const page = await context.newPage();
		const want = '/admin/page?tab=1';
		const n0 = records(recordFile).length;
		await check('proxy mode: the phone form first', async () => {
			const resp = await page.goto(`${base}${want}`);
			eq(resp.status(), 401, 'status');
			assert(await page.isVisible('#phone'), 'no phone field');
			eq(await page.getAttribute('input[name=return_to]', 'value'), want, 'return_to');
			eq(seen.length, 0, 'upstream requests before the login');
		}, true);
		await check('proxy mode: the flow lands on the page asked for', async () => {
			await page.fill('#phone', TYPED);
			eq((await submit(page)).status(), 200, 'request status');
			const r = await waitRecords(recordFile, n0 + 1);
			eq(r.length, n0 + 1, 'SMS requests');
			await page.fill('#token', r[n0].json.text.trim().split(/\s+/).pop());
			const resp = await submit(page);
			eq(resp.status(), 200, 'status');
			eq(new URL(page.url()).pathname + new URL(page.url()).search, want, 'URL');
			eq((await page.innerText('#up')).trim(), `upstream page ${want}`, 'upstream page');
			eq(seen.length, 1, 'upstream requests');
			eq(seen[0].user, E164, 'Remote-User at the upstream');
			await shot(page, 'proxy-upstream');
		});
		await context.close();
		context = null;
		await check('proxy mode: otp_demo exits cleanly on SIGTERM', async () => {
			const { code: c, sig } = await stop(server);
			assert(c === 0, `exit ${c ?? sig}: ${tail(server.err)}`);
			assert(!server.err.includes(E164), 'full phone number in the log');
		});
	} finally {
		if (context)
			await context.close().catch(() => {});
		up.close();
	}
}

// The code page's states, at desktop and phone sizes, with and without
// JavaScript, on servers of their own: RESEND_INTERVAL 2 s and
// MAX_ATTEMPTS 2 for the resend, wrong and locked pages; CODE_TTL 2 s
// for the expired one. Each run has its own number, as typed.
const SIZES = [
	['desktop', { viewport: { width: 1280, height: 800 } }],
	['phone', { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true }],
];

async function flowServer(cfgLines, name, extra) {
	const cfg = path.join(tmp, `${name}.cfg`);
	fs.writeFileSync(cfg, [...cfgLines, ...extra, ''].join('\n'));
	const r = await start(`otp_demo ${name}`, otpBin, ['-c', cfg],
		/listening on http:\/\/127\.0\.0\.1:(\d+)/, childEnv());
	return { rec: r.rec, base: `http://127.0.0.1:${r.m[1]}` };
}

// A page of its own in a context of its own; console errors other than
// the statuses the flow answers with (403, 429) are collected.
async function flowPage(opts, js, errors) {
	const context = await browser.newContext({ ...opts, javaScriptEnabled: js });
	context.setDefaultTimeout(STEP_MS);
	const page = await context.newPage();
	page.on('console', (msg) => {
		if (msg.type() === 'error' && !/status of 4(03|29)/.test(msg.text()))
			errors.push(msg.text());
	});
	page.on('pageerror', (e) => errors.push(String(e)));
	return { context, page };
}

async function requestAs(page, base, typed) {
	await page.goto(`${base}/`);
	await page.fill('#phone', typed);
	return submit(page);
}

// The resend button as the page has it now: disabled, and its countdown.
async function resendState(page) {
	return page.evaluate(() => ({
		disabled: document.getElementById('resend').disabled,
		wait: document.getElementById('wait').textContent,
		role: document.getElementById('wait').getAttribute('role'),
	}));
}

async function codePages(cfgLines, recordFile) {
	const errors = [];
	let f, e;
	await check('code pages: servers start', async () => {
		f = await flowServer(cfgLines, 'flow', ['RESEND_INTERVAL=2', 'MAX_ATTEMPTS=2']);
		e = await flowServer(cfgLines, 'expiry', ['CODE_TTL=2']);
	}, true);
	let n = 40;
	for (const [size, opts] of SIZES) {
		for (const js of [true, false]) {
			const tag = `${size}, ${js ? 'JavaScript' : 'no JavaScript'}`;
			const shot2 = (p, name) => shot(p, `${name}-${size}${js ? '' : '-nojs'}`);
			const typed = `201.555.01${n++}`;
			const shown = `+1 ${typed}`;
			const { context, page } = await flowPage(opts, js, errors);
			let sms;
			await check(`code page (${tag}): the number as typed, the expiry, the countdown`, async () => {
				const n0 = records(recordFile).length;
				eq((await requestAs(page, f.base, typed)).status(), 200, 'status');
				const body = await page.innerText('main');
				assert(body.includes(`If ${shown} may sign in here, a code is on its way.`), `text: ${body}`);
				assert(body.includes('The code expires in 5 minutes.'), `no expiry in: ${body}`);
				const st = await resendState(page);
				assert(st.disabled, 'the resend button is not disabled');
				assert(/^ \(in [12] s\)$/.test(st.wait), `countdown ${JSON.stringify(st.wait)}`);
				eq(st.role, 'timer', 'countdown role');
				sms = (await waitRecords(recordFile, n0 + 1))[n0];
				assert(sms && sms.json.to === `+1201555${typed.slice(-4)}`, 'no SMS');
				await layout(page);
				await shot2(page, 'code');
			});
			await check(`resend (${tag})`, async () => {
				const n0 = records(recordFile).length;
				if (js) {
					// otp.js counts the server's seconds down and enables
					// the button, on the same page: every text it shows
					// is kept, and from 2 s it must have shown 1 s.
					const first = (await resendState(page)).wait;
					await page.evaluate(() => {
						const w = document.getElementById('wait');
						window.seen = [];
						new MutationObserver(() => window.seen.push(w.textContent))
							.observe(w, { childList: true, characterData: true, subtree: true });
					});
					await page.waitForFunction(() => !document.getElementById('resend').disabled &&
						document.getElementById('wait').textContent === '');
					const seen = await page.evaluate(() => window.seen);
					assert(first !== ' (in 2 s)' || seen.includes(' (in 1 s)'),
						`countdown from ${JSON.stringify(first)}: ${JSON.stringify(seen)}`);
					eq(seen[seen.length - 1], '', 'the countdown at the end');
				} else {
					// Without JavaScript the server's number stays, and
					// "Update the countdown" (GET /resend, in <noscript>)
					// has the server render it again: enabled by then.
					await page.waitForTimeout(2500);
					const st = await resendState(page);
					assert(st.disabled && /\(in [12] s\)/.test(st.wait), `no-JS button: ${JSON.stringify(st)}`);
					eq((await submit(page, 'button:has-text("Update the countdown")')).status(), 200,
						'Update the countdown');
					eq(records(recordFile).length, n0, 'SMS requests after updating');
					eq(JSON.stringify(await resendState(page)), JSON.stringify({ disabled: false, wait: '', role: 'timer' }),
						'button after the interval');
				}
				eq((await submit(page, '#resend')).status(), 200, 'status');
				const body = await page.innerText('main');
				assert(body.includes(`If ${shown} may sign in here, we sent the code again.`), `text: ${body}`);
				const r = await waitRecords(recordFile, n0 + 1);
				eq(r.length, n0 + 1, 'SMS requests');
				eq(r[n0].json.text, sms.json.text, 'the same code again');
				assert((await resendState(page)).disabled, 'button enabled right after a resend');
				await layout(page);
				await shot2(page, 'resent');
			});
			await check(`wrong code, then locked (${tag})`, async () => {
				await page.fill('#token', '000000');
				eq((await submit(page)).status(), 403, 'status');
				const err = await page.innerText('.error');
				assert(err.includes('Wrong code. 1 try left.'), `error: ${err}`);
				assert((await page.innerText('main')).includes(shown), 'number not shown');
				await shot2(page, 'wrong');
				await page.fill('#token', '000000');
				eq((await submit(page)).status(), 403, 'status');
				eq(await page.title(), 'Get a new code – otp_demo', 'title');
				const body = await page.innerText('main');
				assert(body.includes('Too many wrong codes.') && body.includes(shown), `text: ${body}`);
				assert(!(await page.isVisible('#token')), 'a code field on the locked page');
				assert(await page.isVisible('#resend'), 'no Send a new code');
				eq(await page.getAttribute('.error', 'role'), 'alert', 'error role');
				await layout(page);
				await shot2(page, 'locked');
			});
			if (js)
				await check(`send a new code without retyping (${tag})`, async () => {
					const n0 = records(recordFile).length;
					await page.waitForFunction(() => !document.getElementById('resend').disabled);
					eq((await submit(page, '#resend')).status(), 200, 'status');
					assert((await page.innerText('main')).includes(`If ${shown} may sign in here, we sent a new code.`), 'text');
					const r = await waitRecords(recordFile, n0 + 1);
					eq(r.length, n0 + 1, 'SMS requests');
					await page.fill('#token', r[n0].json.text.trim().split(/\s+/).pop());
					eq((await submit(page)).status(), 200, 'the new code verifies');
					eq(await page.title(), 'Verified – otp_demo', 'title');
				});
			await check(`expired (${tag})`, async () => {
				const n0 = records(recordFile).length;
				eq((await requestAs(page, e.base, typed)).status(), 200, 'status');
				assert((await page.innerText('main')).includes('The code expires in 2 seconds.'), 'expiry');
				const r = await waitRecords(recordFile, n0 + 1);
				// Generously past CODE_TTL; the handle outlives it by 60 s.
				await page.waitForTimeout(3500);
				await page.fill('#token', r[n0].json.text.trim().split(/\s+/).pop());
				eq((await submit(page)).status(), 403, 'status');
				const body = await page.innerText('main');
				assert(body.includes('This code has expired.') && body.includes(shown), `text: ${body}`);
				assert(!body.includes('Wrong code'), 'expired said as wrong');
				await layout(page);
				await shot2(page, 'expired');
			});
			await context.close();
		}
	}
	await check('code pages: no console errors', () => {
		assert(errors.length === 0, errors.join('; '));
	});
	await check('code pages: logs masked, clean exits', async () => {
		for (const s of [f, e]) {
			assert(!/555[-.]?01[0-9][0-9]/.test(s.rec.err), 'a number as typed or in full in the log');
			const { code: c, sig } = await stop(s.rec);
			assert(c === 0, `exit ${c ?? sig}: ${tail(s.rec.err)}`);
		}
	});
}

// The built-in languages, as a browser set to each one (its locale gives
// Accept-Language), at both sizes: every page of the flow is in it
// (lang, title, heading, words), APP_NAME (with markup) shown as text in
// the title and heading, and the SMS too. The words are written out here,
// not read from www/lang/, so a lost translation fails.
const LANGS = {
	en: ['en-US', 'Verify your phone number', 'Enter your code', 'The code expires in 5 minutes.',
		'Wrong code. 4 tries left.', 'Verified', 'Your token is '],
	de: ['de-DE', 'Telefonnummer bestätigen', 'Code eingeben', 'Der Code läuft in 5 Minuten ab.',
		'Falscher Code. Noch 4 Versuche.', 'Bestätigt', 'Ihr Code lautet '],
	fr: ['fr-FR', 'Vérifiez votre numéro de téléphone', 'Saisissez votre code',
		'Le code expire dans 5 minutes.', 'Code incorrect. Il vous reste 4 essais.', 'Vérifié',
		'Votre code est '],
	es: ['es-ES', 'Verifique su número de teléfono', 'Introduzca su código',
		'El código caduca en 5 minutos.', 'Código incorrecto. Le quedan 4 intentos.', 'Verificado',
		'Su código es '],
	pt: ['pt-BR', 'Verifique seu número de telefone', 'Digite seu código', 'O código expira em 5 minutos.',
		'Código incorreto. Restam 4 tentativas.', 'Verificado', 'Seu código é '],
};
const APP = 'R&D <Box>';

// The page is in lang, titled words, with APP in its title and heading.
async function inLanguage(page, lang, words) {
	eq(await page.getAttribute('html', 'lang'), lang, 'html lang');
	eq(await page.title(), `${words} – ${APP}`, 'title');
	const h1 = (await page.innerText('h1')).replace(/\s+/g, ' ').trim();
	eq(h1, `${APP} ${words}`, 'heading');
}

async function languages(cfgLines, recordFile) {
	const errors = [];
	let srv;
	await check('languages: server starts', async () => {
		srv = await flowServer(cfgLines, 'lang', [`APP_NAME='${APP}'`, 'SMS_PER_IP_PER_HOUR=100']);
	}, true);
	let n = 60;
	for (const [lang, [locale, index, verify, expires, wrong, done, sms]] of Object.entries(LANGS)) {
		for (const [size, opts] of SIZES) {
			const tag = `${lang}, ${size}`;
			const { context, page } = await flowPage({ ...opts, locale }, true, errors);
			await check(`language ${tag}: the flow's pages and the SMS`, async () => {
				await page.goto(`${srv.base}/`);
				await inLanguage(page, lang, index);
				const n0 = records(recordFile).length;
				eq((await requestAs(page, srv.base, `201.555.02${n++}`)).status(), 200, 'request');
				await inLanguage(page, lang, verify);
				const body = await page.innerText('main');
				assert(body.includes(expires), `no ${JSON.stringify(expires)} in: ${body}`);
				const text = (await waitRecords(recordFile, n0 + 1))[n0].json.text;
				assert(text.startsWith(sms), `SMS ${JSON.stringify(text)}`);
				const code = text.slice(sms.length);
				await page.fill('#token', code.split('').map((ch) => (ch === '1' ? '2' : '1')).join(''));
				eq((await submit(page)).status(), 403, 'wrong code');
				eq((await page.innerText('.error')).trim(), wrong, 'wrong code text');
				await layout(page, lang);
				await shot(page, `lang-${lang}-${size}`);
				await page.fill('#token', code);
				eq((await submit(page)).status(), 200, 'right code');
				await inLanguage(page, lang, done);
			});
			await context.close();
		}
	}
	await check('languages: no console errors, clean exit', async () => {
		assert(errors.length === 0, errors.join('; '));
		const { code: c, sig } = await stop(srv.rec);
		assert(c === 0, `exit ${c ?? sig}: ${tail(srv.rec.err)}`);
	});
}

// STORE=redis (the WITH_REDIS build, OTP_REDIS_BIN): two instances on
// one redis-server, sharing session.key. A browser's cookies are per
// host, not per port, so one browser session spans both: the code asked
// for on A is typed into B's code page, and a logout on A ends the
// session on B.
async function twoInstances(cfgLines, recordFile) {
	const bin = process.env.OTP_REDIS_BIN ||
		path.join(root, 'build', 'otp_demo-redis');
	const dir = path.join(tmp, 'redis');
	const sock = path.join(dir, 'redis.sock');
	const inst = {};
	let context = null;
	fs.mkdirSync(dir, { mode: 0o700 });
	const instance = async (name) => {
		const state = path.join(dir, name);
		fs.mkdirSync(state, { mode: 0o700 });
		if (name === 'b') {
			fs.copyFileSync(path.join(dir, 'a', 'session.key'),
				path.join(state, 'session.key'));
			fs.chmodSync(path.join(state, 'session.key'), 0o600);
		}
		const r = await flowServer(cfgLines, `redis-${name}`, [
			`STORE='unix://${sock}'`, `STATE_DIR='${state}'`]);
		return r;
	};
	await check('two instances: redis-server and both start', async () => {
		assert(fs.existsSync(bin), `no ${bin} (make build/otp_demo-redis)`);
		await start('redis-server', 'redis-server', ['--port', '0',
			'--unixsocket', sock, '--save', '', '--appendonly', 'no',
			'--dir', dir], /ready to accept connections/, childEnv());
		const plain = otpBin;
		otpBin = bin;
		try {
			inst.a = await instance('a');
			inst.b = await instance('b');
		} finally {
			otpBin = plain;
		}
	}, true);
	try {
		context = await browser.newContext();
		context.setDefaultTimeout(STEP_MS);
		const page = await context.newPage();
		await check('two instances: a code asked for on A verifies on B', async () => {
			const n0 = records(recordFile).length;
			eq((await requestAs(page, inst.a.base, '(201) 555-0166')).status(),
				200, 'request on A');
			const r = await waitRecords(recordFile, n0 + 1);
			const code = r[n0].json.text.trim().split(/\s+/).pop();
			eq((await page.goto(`${inst.b.base}/resend`)).status(), 200,
				"B's code page");
			await page.fill('#token', code);
			const resp = await submit(page);
			eq(resp.status(), 200, 'status');
			eq(await page.title(), 'Verified – otp_demo', 'title');
			eq(new URL(page.url()).host, new URL(inst.b.base).host, 'host');
			eq((await context.request.get(`${inst.a.base}/auth`)).status(),
				204, '/auth on A');
			await shot(page, 'two-instances-verified-on-b');
		});
		await check('two instances: a logout on A ends the session on B', async () => {
			const auth = (await context.cookies()).find((x) => x.name === 'otp_auth');
			assert(auth, 'no otp_auth cookie');
			eq((await page.goto(`${inst.a.base}/logout`)).status(), 200,
				"A's logout page");
			eq((await submit(page)).status(), 200, 'logout on A');
			const replay = await context.request.get(`${inst.b.base}/auth`,
				{ headers: { Cookie: `otp_auth=${auth.value}` } });
			eq(replay.status(), 401, '/auth on B with the old cookie');
		});
	} finally {
		if (context)
			await context.close().catch(() => {});
	}
	await check('two instances: both exit cleanly on SIGTERM', async () => {
		for (const i of [inst.a, inst.b]) {
			const { code: c, sig } = await stop(i.rec);
			assert(c === 0, `exit ${c ?? sig}: ${tail(i.rec.err)}`);
			assert(!i.rec.err.includes('+12015550166'), 'full number logged');
		}
	});
}

async function cleanup() {
	if (browser)
		await browser.close().catch(() => {});
	await Promise.all(children.map((rec) => stop(rec)));
	if (tmp)
		fs.rmSync(tmp, { recursive: true, force: true });
}

process.on('exit', killAllSync);
for (const sig of ['SIGINT', 'SIGTERM'])
	process.on(sig, () => {
		killAllSync();
		process.exit(130);
	});

const watchdog = setTimeout(() => {
	fail('deadline', `not done within ${DEADLINE_MS} ms`);
	for (const rec of children)
		if (rec.err)
			console.error(`# ${rec.name} stderr: ${tail(rec.err, 5)}`);
	console.log(`${passed} passed, ${failed} failed`);
	killAllSync();
	process.exit(1);
}, DEADLINE_MS);

try {
	await main();
} catch (e) {
	if (!(e instanceof Abort))
		fail('unexpected', e && e.stack ? e.stack : e);
}
if (failed)
	for (const rec of children)
		if (rec.err)
			console.error(`# ${rec.name} stderr: ${tail(rec.err, 5)}`);
await cleanup();
clearTimeout(watchdog);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
