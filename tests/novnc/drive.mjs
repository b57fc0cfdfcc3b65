#!/usr/bin/env node
// Drives noVNC 1.7 in headless Chromium against a kvmux WebSocket listener:
//
//   node drive.mjs --ws ws://127.0.0.1:PORT/ --out DIR --first A.png --second B.png
//
// 1. serves this directory (index.html and node_modules) on a free 127.0.0.1 port (a
//    secure context, as noVNC wants) and opens index.html?ws=URL in Chromium;
// 2. waits until noVNC's canvas shows A.png, and saves the canvas (toDataURL, the exact
//    pixels) to DIR/first.png;
// 3. taps Control_L twice and then '2' through noVNC (kvmux's hotkey for source 2);
// 4. waits until the canvas shows B.png, and saves it to DIR/second.png;
// 5. taps 'h', which should reach the source now shown, and disconnects (the WebSocket's
//    close follows the key events, so the proxy has them before the browser goes away).
//
// The waits only decide when to read the canvas: the caller compares the saved PNGs with
// its own expectations. A wait that times out still saves what the canvas shows.
// Prints one JSON object on stdout: the saved paths, whether each wait matched, timings,
// the encodings noVNC asked for. Chromium's console goes to stderr. Exits non-zero when
// noVNC cannot connect or something in the browser fails.
import { createServer } from 'node:http';
import { readFile, writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));

const { values: args } = parseArgs({
    options: {
        ws: { type: 'string' },
        out: { type: 'string' },
        first: { type: 'string' },
        second: { type: 'string' },
        'timeout-ms': { type: 'string', default: '20000' },
        chromium: { type: 'string', default: '/usr/bin/chromium' },
    },
});
for (const name of ['ws', 'out', 'first', 'second']) {
    if (!args[name]) {
        console.error(`drive.mjs: --${name} is required`);
        process.exit(2);
    }
}
const timeoutMs = Number(args['timeout-ms']);

const types = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript' };

/** A static file server for this directory on 127.0.0.1, on a free port. */
async function serveHere() {
    const server = createServer(async (req, res) => {
        const pathname = decodeURIComponent(new URL(req.url, 'http://localhost').pathname);
        const file = path.join(here, path.normalize(pathname));
        if (!file.startsWith(here + path.sep)) {
            res.writeHead(403).end();
            return;
        }
        try {
            const body = await readFile(file);
            const type = types[path.extname(file)] ?? 'application/octet-stream';
            res.writeHead(200, { 'Content-Type': type, 'Cache-Control': 'no-store' }).end(body);
        } catch {
            res.writeHead(404).end();
        }
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    return server;
}

const pngDataUrl = async (file) => `data:image/png;base64,${(await readFile(file)).toString('base64')}`;

async function saveCanvas(page, file) {
    const state = await page.evaluate(() => window.kvmux.state);
    if (state.disconnected) {
        throw new Error(`noVNC disconnected (see its console above): ${JSON.stringify(state)}`);
    }
    const dataUrl = await page.evaluate(() => window.kvmux.canvasPng());
    if (!dataUrl) throw new Error('noVNC has no canvas');
    await writeFile(file, Buffer.from(dataUrl.slice(dataUrl.indexOf(',') + 1), 'base64'));
    return file;
}

const started = performance.now();
const elapsed = () => Math.round(performance.now() - started);
const server = await serveHere();
const profile = await mkdtemp(path.join(tmpdir(), 'kvmux-novnc-chromium-'));
let context;
let failed = false;
try {
    // A fresh profile directory (Chromium's --user-data-dir) for each run.
    context = await chromium.launchPersistentContext(profile, {
        executablePath: args.chromium,
        headless: true,
        viewport: { width: 1280, height: 800 },
        args: [
            '--headless',
            '--no-sandbox',
            '--disable-gpu',
            '--disable-quic',
            '--no-first-run',
            '--disable-background-networking',
            '--disable-component-update',
            '--disable-sync',
        ],
    });
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('console', (msg) => console.error(`[console.${msg.type()}] ${msg.text()}`));
    page.on('pageerror', (e) => console.error(`[pageerror] ${e.message}`));

    const { port } = server.address();
    const pageUrl = `http://127.0.0.1:${port}/index.html?ws=${encodeURIComponent(args.ws)}`;
    await page.goto(pageUrl);
    await page.waitForFunction(
        () => window.kvmux && (window.kvmux.state.connected || window.kvmux.state.disconnected),
        null,
        { timeout: timeoutMs },
    );
    const connected = await page.evaluate(() => window.kvmux.state);
    if (!connected.connected) {
        throw new Error(`noVNC did not connect: ${JSON.stringify(connected)}`);
    }
    const connectedMs = elapsed();

    const firstMatched = await page.evaluate(
        ([png, ms]) => window.kvmux.waitForPicture(png, ms),
        [await pngDataUrl(args.first), timeoutMs],
    );
    const firstMs = elapsed();
    const first = await saveCanvas(page, path.join(args.out, 'first.png'));

    // Ctrl, Ctrl, 2: taps, as a user would type them.
    const tap = async (keysym, code) => {
        await page.evaluate(([k, c]) => window.kvmux.sendKey(k, c, true), [keysym, code]);
        await page.evaluate(([k, c]) => window.kvmux.sendKey(k, c, false), [keysym, code]);
    };
    await tap(0xffe3, 'ControlLeft');
    await tap(0xffe3, 'ControlLeft');
    await tap(0x32, 'Digit2');

    const secondMatched = await page.evaluate(
        ([png, ms]) => window.kvmux.waitForPicture(png, ms),
        [await pngDataUrl(args.second), timeoutMs],
    );
    const secondMs = elapsed();
    const second = await saveCanvas(page, path.join(args.out, 'second.png'));
    await tap(0x68, 'KeyH');
    await page.evaluate(() => window.kvmux.rfb.disconnect());
    await page.waitForFunction(() => window.kvmux.state.disconnected, null, { timeout: timeoutMs });

    const state = await page.evaluate(() => window.kvmux.state);
    console.log(JSON.stringify({
        first,
        second,
        firstMatched,
        secondMatched,
        desktopName: state.desktopName,
        encodings: state.encodings,
        disconnected: state.disconnected,
        connectedMs,
        firstMs,
        secondMs,
    }));
} catch (e) {
    console.error(`drive.mjs: ${e.stack ?? e}`);
    failed = true;
} finally {
    await context?.close().catch(() => {});
    server.close();
    await rm(profile, { recursive: true, force: true }).catch(() => {});
}
process.exit(failed ? 1 : 0);
