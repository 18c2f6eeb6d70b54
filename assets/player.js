// livegate's built-in player page: /APP/STREAM plays that stream.
//   ?mode=flv   HTTP-FLV via mpegts.js (low latency; default where MSE exists, for H.264)
//   ?mode=ws    WebSocket-FLV via mpegts.js (the same stream over ws://, for networks that need WebSockets)
//   ?mode=hls   HLS: hls.js where MSE exists, else the browser's own HLS (iPhone Safari)
//   ?engine=native  force the browser's own HLS player
//   ?track=N    HTTP-FLV: track N of a multitrack publish (HLS: the quality menu lists every video
//               track, the audio menu every audio track)
// While the stream is not live the page shows "waiting for stream" and retries.
// window.livegate.stats() exposes the measurements (used by tests/browser.rs).
(function () {
  'use strict';
  const video = document.getElementById('video');
  const statusEl = document.getElementById('status');
  const statsEl = document.getElementById('stats');
  const quality = document.getElementById('quality');
  quality.addEventListener('change', () => { if (hls) hls.currentLevel = Number(quality.value); });
  const audioMenu = document.getElementById('audio');
  audioMenu.addEventListener('change', () => { if (hls) hls.audioTrack = Number(audioMenu.value); });
  const key = location.pathname.replace(/^\/+|\/+$/g, '');
  const params = new URLSearchParams(location.search);
  const hasMse = !!window.MediaSource; // ManagedMediaSource-only browsers (iPhone) use native HLS
  const nativeHls = !!video.canPlayType('application/vnd.apple.mpegurl');
  // Chromium now also answers "maybe" for native HLS; hls.js (MSE) is preferred wherever MSE exists,
  // so latency figures and error handling are the same everywhere except where only native HLS exists.
  const useNativeHls = params.get('engine') === 'native' ? nativeHls : !hasMse && nativeHls;
  let mode = params.get('mode') || (hasMse ? 'flv' : 'hls');
  if (mode !== 'hls' && mode !== 'flv' && mode !== 'ws') mode = 'hls';
  if (mode !== 'hls' && !(hasMse && window.mpegts && mpegts.getFeatureList().mseLivePlayback)) mode = 'hls';

  document.getElementById('title').textContent = key;
  document.title = key + ' · livegate';

  const S = { errors: [], t0: 0, firstFrameMs: null, attempts: 0, engine: '' };
  let hls = null, flv = null, retryTimer = null, generation = 0;

  function setStatus(text) { statusEl.textContent = text; }

  function teardown() {
    generation += 1;
    clearTimeout(retryTimer);
    if (hls) { hls.destroy(); hls = null; }
    if (flv) { try { flv.pause(); flv.unload(); flv.detachMediaElement(); flv.destroy(); } catch (e) { /* already gone */ } flv = null; }
    video.removeAttribute('src');
    video.load();
  }

  function retry(reason) {
    teardown();
    setStatus('waiting for stream… (' + reason + ')');
    retryTimer = setTimeout(start, 2000);
  }

  function watchFirstFrame(gen) {
    const done = () => {
      if (gen !== generation || S.firstFrameMs !== null) return;
      S.firstFrameMs = performance.now() - S.t0;
      setStatus('');
    };
    if ('requestVideoFrameCallback' in video) video.requestVideoFrameCallback(done);
    else video.addEventListener('loadeddata', done, { once: true });
  }

  // HTTP-FLV answers 404 unless live; an HLS playlist stays readable (with EXT-X-ENDLIST) for a while after.
  async function isLive(url) {
    try {
      const r = await fetch(url, { method: mode === 'hls' ? 'GET' : 'HEAD', cache: 'no-store' });
      return r.ok && (mode !== 'hls' || !(await r.text()).includes('#EXT-X-ENDLIST'));
    } catch (e) {
      return false;
    }
  }

  async function start() {
    teardown();
    const gen = generation;
    // a play key given to the page (?key=…) goes along to the media URL
    const playKey = params.get('key');
    // ?track=N: another track of a multitrack publish over HTTP-FLV (HLS offers every track)
    const q = new URLSearchParams();
    if (playKey) q.set('key', playKey);
    if (mode !== 'hls' && params.get('track')) q.set('track', params.get('track'));
    const url = '/' + key + (mode === 'hls' ? '.m3u8' : '.flv') + (q.toString() ? '?' + q : '');
    S.attempts += 1;
    setStatus('connecting…');
    if (!(await isLive(url))) { if (gen === generation) retry('not live'); return; }
    if (gen !== generation) return;
    S.t0 = performance.now();
    S.firstFrameMs = null;
    watchFirstFrame(gen);
    if (mode === 'hls' && (useNativeHls || !(window.Hls && Hls.isSupported()))) {
      S.engine = 'native HLS';
      video.src = url;
      video.play().catch(() => {});
    } else if (mode === 'hls') {
      S.engine = 'hls.js ' + Hls.version;
      // lowLatencyMode: parts and blocking reloads when the playlist offers them (variant = "lowlatency")
      hls = new Hls({ enableWorker: true, lowLatencyMode: true });
      hls.on(Hls.Events.ERROR, (_, d) => {
        S.errors.push({ fatal: !!d.fatal, type: d.type, details: d.details });
        if (d.fatal && gen === generation) retry(d.details);
      });
      // a multitrack publish is an adaptive ladder: a quality menu (Auto = hls.js's choice)
      hls.on(Hls.Events.MANIFEST_PARSED, (_, d) => {
        if (gen !== generation || d.levels.length < 2) return;
        quality.replaceChildren(new Option('Auto', '-1'), ...d.levels
          .map((l, i) => ({ l, i })).sort((a, b) => b.l.bitrate - a.l.bitrate)
          .map(({ l, i }) => new Option(l.height + 'p · ' + Math.round(l.bitrate / 1000) + ' kbit/s', String(i))));
        quality.hidden = false;
      });
      // several audio tracks: an audio menu (the ladder's EXT-X-MEDIA renditions)
      hls.on(Hls.Events.AUDIO_TRACKS_UPDATED, (_, d) => {
        if (gen !== generation) return;
        audioMenu.replaceChildren(...d.audioTracks.map((t, i) =>
          new Option(t.name + (t.lang ? ' (' + t.lang + ')' : ''), String(i))));
        audioMenu.value = String(hls.audioTrack);
        audioMenu.hidden = d.audioTracks.length < 2;
      });
      hls.on(Hls.Events.AUDIO_TRACK_SWITCHED, (_, d) => { audioMenu.value = String(d.id); });
      hls.on(Hls.Events.LEVEL_SWITCHED, (_, d) => {
        const l = hls.levels[d.level];
        if (l && quality.options.length) quality.options[0].text = 'Auto (' + l.height + 'p)';
      });
      hls.loadSource(url);
      hls.attachMedia(video);
    } else {
      S.engine = 'mpegts.js ' + mpegts.version + (mode === 'ws' ? ' (WebSocket)' : '');
      // WebSocket-FLV: the same URL with ws: / wss:
      const media = new URL(url, location.href);
      if (mode === 'ws') media.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
      S.url = media.href;
      flv = mpegts.createPlayer({ type: 'flv', isLive: true, url: media.href },
        { enableStashBuffer: false, liveBufferLatencyChasing: true, lazyLoad: false });
      flv.on(mpegts.Events.ERROR, (type, details) => {
        S.errors.push({ fatal: true, type, details });
        if (gen === generation) retry(details);
      });
      // the publisher left: the FLV body ends
      flv.on(mpegts.Events.LOADING_COMPLETE, () => { if (gen === generation) retry('stream ended'); });
      flv.attachMediaElement(video);
      flv.load();
      flv.play().catch(() => {});
    }
  }

  // HLS via hls.js: the player ends when the playlist gets EXT-X-ENDLIST; look again.
  video.addEventListener('ended', () => retry('stream ended'));
  video.addEventListener('error', () => { if (mode === 'hls' && S.engine === 'native HLS') retry('media error'); });

  function stats() {
    const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : { totalVideoFrames: 0, droppedVideoFrames: 0 };
    const b = video.buffered;
    const bufEnd = b.length ? b.end(b.length - 1) : 0;
    const s = {
      mode, engine: S.engine, url: S.url || null, ct: video.currentTime, bufEnd,
      frames: q.totalVideoFrames, dropped: q.droppedVideoFrames,
      audioBytes: video.webkitAudioDecodedByteCount || 0,
      w: video.videoWidth, h: video.videoHeight, paused: video.paused,
      firstFrameMs: S.firstFrameMs, attempts: S.attempts, latency: null, pdtLatency: null,
    };
    if (hls) {
      s.levels = hls.levels.map((l) => l.width + 'x' + l.height);
      s.audioTracks = hls.audioTracks.map((t) => t.name);
      s.audioTrack = hls.audioTrack;
      s.level = hls.currentLevel;
      s.latency = hls.latency;
      if (hls.playingDate) s.pdtLatency = (Date.now() - hls.playingDate.getTime()) / 1000;
    } else if (mode === 'hls' && video.getStartDate && !isNaN(video.getStartDate().getTime())) {
      // Safari: PROGRAM-DATE-TIME of the stream start
      s.pdtLatency = (Date.now() - video.getStartDate().getTime()) / 1000 - video.currentTime;
      s.latency = s.pdtLatency;
    } else if (mode === 'hls') {
      s.latency = video.seekable.length ? video.seekable.end(video.seekable.length - 1) - video.currentTime : null;
    } else {
      s.latency = bufEnd - video.currentTime;
    }
    return s;
  }
  window.livegate = { stats, errors: S.errors };

  const fmt = (x, d) => (typeof x === 'number' && isFinite(x) ? x.toFixed(d) : '–');
  setInterval(() => {
    const s = stats();
    statsEl.textContent =
      `${s.engine || mode}   latency ${fmt(s.latency, 2)} s` + (s.pdtLatency != null ? ` (PROGRAM-DATE-TIME ${fmt(s.pdtLatency, 2)} s)` : '') +
      `\n${s.w}x${s.h}   first frame ${fmt(s.firstFrameMs, 0)} ms   frames ${s.frames}, dropped ${s.dropped}   buffer ${fmt(s.bufEnd - s.ct, 2)} s`;
  }, 500);

  const buttons = () => { for (const m of ['flv', 'ws', 'hls']) document.getElementById('mode-' + m).setAttribute('aria-pressed', String(m === mode)); };
  for (const m of ['flv', 'ws', 'hls']) {
    const btn = document.getElementById('mode-' + m);
    btn.addEventListener('click', () => {
      const p = new URLSearchParams(location.search);
      p.set('mode', m);
      location.search = p.toString();
    });
  }
  const unmute = document.getElementById('unmute');
  unmute.hidden = false;
  unmute.addEventListener('click', () => { video.muted = false; unmute.hidden = true; video.play().catch(() => {}); });

  buttons();
  // Without an explicit mode, a stream in an Enhanced RTMP codec (HEVC, AV1, VP9) plays over HLS:
  // hls.js reads them from fMP4, mpegts.js 1.8 does not play every one of them from FLV.
  if (!params.get('mode') && mode === 'flv') {
    fetch('/api/streams/' + key, { cache: 'no-store' })
      .then((r) => (r.ok ? r.json() : null))
      .then((info) => {
        const codec = info && info.video && info.video.codec;
        if (codec && !codec.startsWith('avc1')) { mode = 'hls'; buttons(); }
      })
      .catch(() => {})
      .finally(start);
  } else {
    start();
  }
})();
