// Drives Debian's Chromium (playwright-core, no browser download) for tests/browser.rs.
//
//   node play.mjs '<json options>'
//
// options: { mode: "hls" | "flv" | "file" | "page",
//            url:  media URL (hls/flv) or the built-in player page URL (page),
//            seconds: how long to watch after the first frame,
//            seekTo: (file, hls) seek there 1 s after playing starts (a negative value: that
//                    many seconds before the end of what can be seeked in, e.g. a DVR window),
//            vendor: folder with hls.min.js and mpegts.js (the pinned copies livegate serves),
//            screenshot: optional PNG path,
//            waitMarks: optional list of stdin lines to wait for before the end (e.g. ["restarted"]),
//            trustCa: optional PEM file of a test CA: Chromium starts with a profile whose NSS
//                     database (certutil) trusts it for TLS servers, as a CA installed on a machine
//            harnessTls: optional { cert, key } PEM files: the test page is served over https
//            afterMarkSeconds: watch this long after the last mark }
//
// For hls/flv the test page comes from this script's own HTTP server on another
// port (another origin than livegate), so CORS is exercised. Progress lines go to
// stdout as `EVENT {...}`; the last line is `RESULT {...}`.
// Marks written to stdin (one word a line) are timestamped and reported with a
// snapshot of the player, so the caller can judge what happened after them.

import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const opts = JSON.parse(process.argv[2] || '{}');
const seconds = opts.seconds ?? 10;
const emit = (kind, obj) => process.stdout.write(`${kind} ${JSON.stringify(obj)}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const HARNESS = `<!doctype html><html><head><meta charset="utf-8"><title>livegate browser test</title>
<script src="/hls.min.js"></script><script src="/mpegts.js"></script></head>
<body style="margin:0;background:#000"><video id="v" autoplay playsinline style="width:640px;height:360px"></video>
<script>
const v = document.getElementById('v');
const H = window.H = { errors: [], events: [], t0: 0, firstFrameMs: null, playingMs: null, ended: false };
const note = (e) => H.events.push({ t: Math.round(performance.now() - H.t0), e });
v.addEventListener('playing', () => { if (H.playingMs === null) H.playingMs = performance.now() - H.t0; note('playing'); });
v.addEventListener('waiting', () => note('waiting'));
v.addEventListener('ended', () => { H.ended = true; note('ended'); });
v.addEventListener('error', () => H.errors.push({ fatal: true, type: 'video', details: String(v.error && v.error.message) }));
function firstFrame() {
  if (!('requestVideoFrameCallback' in v)) return;
  v.requestVideoFrameCallback(() => { H.firstFrameMs = performance.now() - H.t0; note('first-frame'); });
}
// seek to "to" (negative: from the end of the seekable range) 1 s after playing starts
H.seekAfterPlaying = (to) => {
  v.addEventListener('seeked', () => { H.seekedAt = v.currentTime; note('seeked'); });
  if (to == null) return;
  v.addEventListener('playing', () => {
    if (H.seekAsked) return;
    H.seekAsked = true;
    setTimeout(() => {
      const s = v.seekable;
      H.seekableAtSeek = s.length ? [s.start(0), s.end(s.length - 1)] : null;
      v.currentTime = to >= 0 ? to : Math.max(0, (s.length ? s.end(s.length - 1) : 0) + to);
    }, 1000);
  });
};
H.startHls = (url, switchLevel, switchAudio, seekTo) => {
  if (!Hls.isSupported()) throw new Error('hls.js: MSE not supported');
  const hls = H.hls = new Hls({ enableWorker: true });
  H.switches = [];
  H.audioSwitches = [];
  hls.on(Hls.Events.LEVEL_SWITCHED, (_, d) => H.switches.push(d.level));
  hls.on(Hls.Events.AUDIO_TRACK_SWITCHED, (_, d) => {
    H.audioSwitches.push(d.id);
    if (H.audioAsked && H.audioBytesAtSwitch == null) H.audioBytesAtSwitch = v.webkitAudioDecodedByteCount || 0;
  });
  // several audio renditions: switch to audio track switchAudio 2 s after the first frame
  if (switchAudio != null) hls.on(Hls.Events.FRAG_BUFFERED, () => {
    if (H.firstFrameMs != null && !H.audioAsked && performance.now() - H.t0 > H.firstFrameMs + 2000) {
      H.audioAsked = true;
      hls.audioTrack = switchAudio;
    }
  });
  // a multivariant playlist: switch to level switchLevel 4 s after the first frame
  if (switchLevel != null) hls.on(Hls.Events.FRAG_BUFFERED, () => {
    if (H.firstFrameMs != null && !H.switchAsked && performance.now() - H.t0 > H.firstFrameMs + 4000) {
      H.switchAsked = true;
      hls.currentLevel = switchLevel;
    }
  });
  hls.on(Hls.Events.ERROR, (_, d) => H.errors.push({ fatal: !!d.fatal, type: d.type, details: d.details, parent: d.parent || d.sourceBufferName || null, message: String((d.error && d.error.message) || d.reason || '') }));
  hls.on(Hls.Events.BUFFER_CODECS, (_, d) => { H.tracks = Object.fromEntries(Object.entries(d).map(([k, t]) => [k, t.codec || ''])); });
  hls.on(Hls.Events.LEVEL_UPDATED, (_, d) => { if (!d.details.live) note('playlist-not-live'); });
  H.seekAfterPlaying(seekTo);
  firstFrame();
  H.t0 = performance.now();
  hls.loadSource(url);
  hls.attachMedia(v);
};
H.startFlv = (url) => {
  if (!mpegts.getFeatureList().mseLivePlayback) throw new Error('mpegts.js: no MSE live playback');
  const p = H.flv = mpegts.createPlayer({ type: 'flv', isLive: true, url },
    { enableStashBuffer: false, liveBufferLatencyChasing: true, lazyLoad: false });
  p.on(mpegts.Events.ERROR, (type, details) => H.errors.push({ fatal: true, type, details }));
  p.on(mpegts.Events.MEDIA_INFO, (mi) => { H.mediaInfo = { hasAudio: mi.hasAudio, hasVideo: mi.hasVideo, audioCodec: mi.audioCodec, videoCodec: mi.videoCodec }; });
  p.attachMediaElement(v);
  firstFrame();
  H.t0 = performance.now();
  p.load();
  p.play().catch((e) => note('play() rejected: ' + e));
};
// a file (a recording): plain <video src>, seeked to seekTo 1 s after it starts playing
H.startFile = (url, seekTo) => {
  firstFrame();
  H.t0 = performance.now();
  H.seekAfterPlaying(seekTo);
  v.src = url;
  v.play().catch((e) => note('play() rejected: ' + e));
};
H.sample = () => {
  const q = v.getVideoPlaybackQuality();
  const b = v.buffered;
  const s = {
    ct: v.currentTime,
    bufEnd: b.length ? b.end(b.length - 1) : 0,
    frames: q.totalVideoFrames,
    dropped: q.droppedVideoFrames,
    audioBytes: v.webkitAudioDecodedByteCount || 0,
    w: v.videoWidth, h: v.videoHeight,
    paused: v.paused,
  };
  if (H.hls) {
    s.latency = H.hls.latency;
    const pd = H.hls.playingDate;
    s.pdtLatency = pd ? (Date.now() - pd.getTime()) / 1000 : null;
    s.audioCodecs = H.hls.levels.map((l) => l.audioCodec || '').join(',');
    s.videoCodecs = H.hls.levels.map((l) => l.videoCodec || '').join(',');
    s.levels = H.hls.levels.map((l) => l.width + 'x' + l.height);
    s.level = H.hls.currentLevel;
    s.switches = H.switches;
    s.audioTracks = H.hls.audioTracks.map((t) => t.name);
    s.audioTrack = H.hls.audioTrack;
    s.audioSwitches = H.audioSwitches;
    s.audioBytesAtSwitch = H.audioBytesAtSwitch ?? null;
    s.tracks = H.tracks || null;
    const details = H.hls.levels[H.hls.currentLevel]?.details;
    s.live = details?.live ?? null;
    // Low-Latency HLS: parts listed and blocking reload offered
    s.parts = details?.partList?.length ?? 0;
    s.canBlockReload = details?.canBlockReload ?? false;
  } else {
    s.latency = s.bufEnd - s.ct;
  }
  return s;
};
</script></body></html>`;

function serveHarness(vendor) {
  const files = {
    '/': ['text/html; charset=utf-8', Buffer.from(HARNESS)],
    '/hls.min.js': ['text/javascript', fs.readFileSync(path.join(vendor, 'hls.min.js'))],
    '/mpegts.js': ['text/javascript', fs.readFileSync(path.join(vendor, 'mpegts.js'))],
  };
  const handler = (req, res) => {
    const f = files[req.url.split('?')[0]];
    if (!f) { res.writeHead(req.url === '/favicon.ico' ? 204 : 404); res.end(); return; }
    res.writeHead(200, { 'content-type': f[0] });
    res.end(f[1]);
  };
  const server = opts.harnessTls
    ? https.createServer({ cert: fs.readFileSync(opts.harnessTls.cert), key: fs.readFileSync(opts.harnessTls.key) }, handler)
    : http.createServer(handler);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

// A home directory whose NSS database (where Chromium on Linux keeps the CAs a user added)
// trusts `ca` for TLS servers.
function homeTrusting(ca) {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'livegate-chromium-home-'));
  const db = 'sql:' + path.join(home, '.pki', 'nssdb');
  fs.mkdirSync(path.join(home, '.pki', 'nssdb'), { recursive: true });
  execFileSync('certutil', ['-d', db, '-N', '--empty-password']);
  execFileSync('certutil', ['-d', db, '-A', '-t', 'C,,', '-n', 'livegate test CA', '-i', ca]);
  return home;
}

const marks = [];
readline.createInterface({ input: process.stdin }).on('line', (l) => { if (l.trim()) marks.push({ name: l.trim(), at: Date.now() }); });

const result = { mode: opts.mode, ok: false, errors: [], samples: [], marks: [] };
let browser, server;
try {
  const env = opts.trustCa ? { ...process.env, HOME: homeTrusting(opts.trustCa) } : process.env;
  browser = await chromium.launch({
    env,
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--autoplay-policy=no-user-gesture-required'],
  });
  const page = await browser.newPage({ viewport: { width: 960, height: 640 } });
  page.on('console', (m) => { if (m.type() === 'error') result.errors.push({ fatal: false, type: 'console', details: m.text() }); });
  page.on('pageerror', (e) => result.errors.push({ fatal: true, type: 'pageerror', details: String(e), stack: String(e && e.stack).slice(0, 600) }));
  result.codecSupport = null;

  let getSample, getState;
  if (opts.mode === 'page') {
    await page.goto(opts.url);
    result.pageOrigin = new URL(opts.url).origin;
    getSample = () => page.evaluate(() => window.livegate.stats());
    getState = () => page.evaluate(() => ({ firstFrameMs: window.livegate.stats().firstFrameMs, errors: window.livegate.errors, events: [] }));
  } else {
    server = await serveHarness(opts.vendor);
    const origin = `${opts.harnessTls ? 'https' : 'http'}://localhost:${server.address().port}`;
    result.pageOrigin = origin;
    await page.goto(origin + '/');
    result.codecSupport = await page.evaluate(() => MediaSource.isTypeSupported('video/mp4; codecs="avc1.64001f,mp4a.40.2"'));
    await page.evaluate(([mode, url, sw, sa, seekTo]) => (mode === 'hls' ? H.startHls(url, sw, sa, seekTo)
      : mode === 'file' ? H.startFile(url, seekTo) : H.startFlv(url)),
      [opts.mode, opts.url, opts.switchLevel ?? null, opts.switchAudio ?? null, opts.seekTo ?? null]);
    getSample = () => page.evaluate(() => H.sample());
    getState = () => page.evaluate(() => ({ protocols: [...new Set(performance.getEntriesByType('resource').filter((e) => !e.name.startsWith(location.origin)).map((e) => e.nextHopProtocol))], firstFrameMs: H.firstFrameMs, playingMs: H.playingMs, errors: H.errors, events: H.events, ended: H.ended, mediaInfo: H.mediaInfo || null, seekedAt: H.seekedAt ?? null, seekableAtSeek: H.seekableAtSeek ?? null, duration: Number.isFinite(v.duration) ? v.duration : null }));
  }

  // startup: generous timeout, then watch `seconds` from the first frame
  const start = Date.now();
  let st = await getState();
  while (st.firstFrameMs == null && Date.now() - start < (opts.startupTimeoutMs ?? 20000)) {
    await sleep(100);
    st = await getState();
  }
  if (st.firstFrameMs == null) throw new Error('no video frame within the startup timeout');
  emit('EVENT', { event: 'playing', firstFrameMs: st.firstFrameMs });
  const sampleOnce = async () => {
    const s = await getSample();
    s.at = Date.now();
    result.samples.push(s);
    return s;
  };
  const first = await sampleOnce();
  const watchUntil = Date.now() + seconds * 1000;
  const wanted = opts.waitMarks || [];
  let seen = 0;
  let endAt = watchUntil;
  for (;;) {
    await sleep(500);
    const s = await sampleOnce();
    while (seen < marks.length) {
      result.marks.push({ ...marks[seen], sample: s });
      emit('EVENT', { event: 'mark', name: marks[seen].name, ct: s.ct });
      seen += 1;
      if (wanted.every((w) => marks.some((m) => m.name === w))) endAt = Math.max(watchUntil, Date.now() + (opts.afterMarkSeconds ?? 10) * 1000);
    }
    const allMarks = wanted.every((w) => marks.some((m) => m.name === w));
    if (Date.now() >= endAt && allMarks) break;
    if (Date.now() - start > (opts.maxSeconds ?? 120) * 1000) throw new Error('marks never arrived: ' + wanted.join(','));
  }
  if (opts.screenshot) {
    fs.mkdirSync(path.dirname(opts.screenshot), { recursive: true });
    await page.screenshot({ path: opts.screenshot });
  }
  st = await getState();
  const last = result.samples[result.samples.length - 1];
  const tail = result.samples.slice(Math.floor(result.samples.length / 2));
  const avg = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
  Object.assign(result, {
    ok: true,
    firstFrameMs: st.firstFrameMs,
    playingMs: st.playingMs ?? null,
    mediaAdvance: last.ct - first.ct,
    wallSeconds: (last.at - first.at) / 1000,
    framesDecoded: last.frames - first.frames,
    droppedFrames: last.dropped,
    totalFrames: last.frames,
    audioBytes: last.audioBytes,
    audioBytesGrowth: last.audioBytes - first.audioBytes,
    width: last.w,
    height: last.h,
    latencyAvg: avg(tail.map((s) => s.latency).filter((x) => typeof x === 'number')),
    pdtLatencyAvg: avg(tail.map((s) => s.pdtLatency).filter((x) => typeof x === 'number')),
    audioCodecs: last.audioCodecs ?? null,
    videoCodecs: last.videoCodecs ?? null,
    tracks: last.tracks ?? null,
    parts: last.parts ?? 0,
    canBlockReload: last.canBlockReload ?? false,
    mediaInfo: st.mediaInfo ?? null,
    ended: st.ended ?? false,
    seekedAt: st.seekedAt ?? null,
    seekableAtSeek: st.seekableAtSeek ?? null,
    duration: st.duration ?? null,
    events: st.events,
    protocols: st.protocols ?? null,
  });
  result.errors.push(...st.errors);
} catch (e) {
  result.ok = false;
  result.failure = String(e && e.stack || e);
} finally {
  if (browser) await browser.close().catch(() => {});
  if (server) server.close();
}
emit('RESULT', result);
process.exit(0);
