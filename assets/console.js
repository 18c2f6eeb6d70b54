// livegate's console (GET /): every live stream as a card, kept live by Server-Sent Events.
//   /api/streams      the streams (again for one stream when an event names it)
//   /api/stats        server totals, recent warnings, the bitrate history, the newest event id
//   /api/events       SSE: publish, reconnect, waiting, unpublish, kick, drain, push, record,
//                     refused, limit, and `stats` every 2 s (resumed with Last-Event-ID)
//   /api/streams/APP/STREAM/keyframe   the latest keyframe as a one-sample MP4, decoded here
//                     with WebCodecs (VideoDecoder) onto the card's canvas; a <video> where
//                     WebCodecs lacks the codec
// Everything a server or publisher said is written with textContent, never as HTML.
// The admin token and play keys stay in this tab (sessionStorage).
// window.livegate exposes what the tests look at.
(function () {
  'use strict';
  const $ = (sel, el) => (el || document).querySelector(sel);
  const cards = $('#cards');
  const HISTORY = 150;
  const THUMB_EVERY_MS = 5000;
  const S = {
    streams: new Map(), // "app/name" -> { data, card, history, fetchedAt, visible, thumbAt, busy }
    ports: { rtmp: 1935, rtmps: null },
    adminApi: false,
    server: null,
    thumbs: 0, // thumbnails drawn
    thumbErrors: [],
    events: [], // kinds received (the newest 200), for tests
  };
  const keep = (list, item) => { list.push(item); if (list.length > 200) list.shift(); };
  window.livegate = S;

  const token = () => sessionStorage.getItem('livegate.token') || '';
  const playKey = (app) => sessionStorage.getItem('livegate.key.' + app) || '';
  const enc = encodeURIComponent;
  const path = (d) => enc(d.app) + '/' + enc(d.name);

  function fmtBytes(n) {
    const u = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (n >= 1000 && i < u.length - 1) { n /= 1000; i += 1; }
    return (i ? n.toFixed(1) : String(n)) + ' ' + u[i];
  }
  function fmtDuration(s) {
    s = Math.max(0, Math.floor(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + 'h ' : '') + (h || m ? m + 'm ' : '') + r + 's';
  }
  function fmtRate(kbps) { return kbps >= 1000 ? (kbps / 1000).toFixed(2) + ' Mbit/s' : Math.round(kbps) + ' kbit/s'; }

  let toastTimer = null;
  function toast(text) {
    let t = $('#toast');
    if (!t) {
      t = document.createElement('div');
      t.id = 'toast';
      t.setAttribute('role', 'status');
      t.style.cssText = 'position:fixed;bottom:1rem;right:1rem;background:#222;color:#fff;padding:.5rem .8rem;border-radius:6px;max-width:90vw;z-index:5';
      document.body.appendChild(t);
    }
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 4000);
  }

  async function copy(text) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) {
      // no Clipboard API (a page over plain http from another host): the old way
      const ta = document.createElement('textarea');
      ta.value = text;
      ta.style.position = 'fixed';
      ta.style.opacity = '0';
      document.body.appendChild(ta);
      ta.select();
      document.execCommand('copy');
      ta.remove();
    }
    toast('copied: ' + text);
  }

  // the URLs of a stream, as a viewer or encoder uses them
  function urls(d) {
    const host = location.hostname.includes(':') && !location.hostname.startsWith('[') ? '[' + location.hostname + ']' : location.hostname;
    const key = d.play_key_required ? '?key=' + enc(playKey(d.app)) : '';
    const http = location.origin + '/' + path(d);
    const ws = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/' + path(d);
    const rtmp = 'rtmp://' + host + ':' + S.ports.rtmp + '/' + path(d);
    const list = [['RTMP publish', rtmp]];
    if (S.ports.rtmps) list.push(['RTMPS publish', 'rtmps://' + host + ':' + S.ports.rtmps + '/' + path(d)]);
    list.push(['RTMP play', rtmp + key]);
    if (S.ports.rtmps) list.push(['RTMPS play', 'rtmps://' + host + ':' + S.ports.rtmps + '/' + path(d) + key]);
    list.push(['LL-HLS', http + '.m3u8' + key], ['HTTP-FLV', http + '.flv' + key], ['WebSocket-FLV', ws + '.flv' + key],
      ['Player', http + key]);
    return list;
  }

  function keyLocked(d) { return d.play_key_required && !playKey(d.app); }

  function makeCard(k) {
    const card = $('#card').content.firstElementChild.cloneNode(true);
    card.dataset.stream = k;
    $('.usekey', card).addEventListener('click', () => {
      const d = S.streams.get(k).data;
      sessionStorage.setItem('livegate.key.' + d.app, $('.playkey', card).value);
      for (const e of S.streams.values()) if (e.data.app === d.app) { render(e); thumb(e, true); }
    });
    return card;
  }

  function render(e) {
    const d = e.data, card = e.card;
    $('h2', card).textContent = d.app + '/' + d.name;
    $('.badge', card).textContent = d.waiting_for_publisher_ms != null ? 'waiting for publisher' : '';
    const v = d.video, a = d.audio;
    const media = [];
    if (v) media.push(v.codec + ' ' + v.width + '×' + v.height + ' @ ' + v.fps + ' fps');
    if (a) media.push(a.codec + ' ' + a.sample_rate + ' Hz ' + a.channels + ' ch');
    if (d.tracks && d.tracks.length) media.push('+' + d.tracks.length + ' video tracks');
    if (d.audio_tracks && d.audio_tracks.length) media.push('+' + d.audio_tracks.length + ' audio tracks');
    $('.media', card).textContent = media.join(' · ') || 'no media yet';
    renderLive(e);
    const pushes = $('.pushes', card);
    pushes.replaceChildren(...(d.pushes || []).map((p) => {
      const li = document.createElement('li');
      li.textContent = 'push ' + p.url + ': ' + p.state + (p.last_error ? ' (' + p.last_error + ')' : '') +
        (p.state === 'publishing' ? ' · ' + fmtRate(p.bitrate_kbps) : '');
      if (token()) li.appendChild(button('stop', () => admin('DELETE', '/api/streams/' + path(d) + '/pushes/' + p.id), true));
      return li;
    }));
    const r = d.recording;
    $('.recording', card).textContent = r ? 'recording: ' + r.state + (r.file ? ' · ' + r.file + ' · ' + fmtBytes(r.bytes) : '') +
      (r.last_error ? ' · ' + r.last_error : '') : '';
    $('.keyform', card).hidden = !keyLocked(d);
    const box = $('.urls', card);
    if (keyLocked(d)) {
      const note = document.createElement('span');
      note.textContent = 'This app has play keys: enter one to see its URLs.';
      box.replaceChildren(note);
    } else {
      box.replaceChildren(...urls(d).flatMap(([label, url]) => {
        const l = document.createElement('span');
        l.textContent = label;
        const c = document.createElement('code');
        c.textContent = url;
        const b = button('copy', () => copy(url));
        b.className = 'copy';
        b.dataset.label = label;
        return [l, c, b];
      }));
      const watch = document.createElement('a');
      watch.href = urls(d).find(([l]) => l === 'Player')[1];
      watch.textContent = 'watch ▶';
      watch.className = 'watch';
      box.append(watch);
    }
    const actions = $('.actions', card);
    actions.replaceChildren();
    if (token() && S.adminApi) {
      const base = '/api/streams/' + path(d);
      actions.append(
        button('kick', () => admin('DELETE', base), true),
        button('drain', () => admin('POST', base + '/reconnect')),
        r && r.state === 'recording' ? button('stop recording', () => admin('DELETE', base + '/record')) : button('record', () => admin('POST', base + '/record')),
        button('push…', () => {
          const url = prompt('Push to (rtmp:// or rtmps:// URL)');
          if (url) admin('POST', base + '/pushes', JSON.stringify({ url }));
        }));
    }
  }

  // what changes with every stats event
  function renderLive(e) {
    const d = e.data, card = e.card;
    const vw = d.viewers || {};
    $('.viewers', card).textContent = 'viewers: ' + ['hls', 'http_flv', 'ws_flv', 'rtmp'].map((o) => o + ' ' + (vw[o] || 0)).join(' · ');
    const up = d.uptime_s + (performance.now() - e.fetchedAt) / 1000;
    $('.publisher', card).textContent = 'publisher ' + d.publisher + ' · up ' + fmtDuration(up) +
      ' · reconnects ' + d.reconnects + ' · in ' + fmtBytes(d.bytes_in) + ' · out ' + fmtBytes(d.bytes_out);
    drawSpark(e);
  }

  function button(label, onclick, danger) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = label;
    if (danger) b.classList.add('danger');
    b.addEventListener('click', onclick);
    return b;
  }

  async function admin(method, url, body) {
    try {
      const r = await fetch(url, {
        method, body,
        headers: Object.assign({ Authorization: 'Bearer ' + token() }, body ? { 'Content-Type': 'application/json' } : {}),
      });
      const text = (await r.text()).trim();
      toast(method + ' ' + url + ': ' + r.status + (text && text.length < 200 ? ' ' + text : ''));
      if (r.status === 401) toast('the admin token was refused');
    } catch (err) {
      toast(method + ' ' + url + ' failed: ' + err);
    }
  }

  let accent = '';
  function drawSpark(e) {
    const c = $('.spark', e.card);
    // the canvas' own size (CSS stretches it): reading the laid-out width would force a
    // layout per card, hundreds of times while the list is built
    const w = c.width, h = c.height;
    const g = c.getContext('2d');
    g.clearRect(0, 0, w, h);
    const hs = e.history;
    const last = hs.length ? hs[hs.length - 1] : 0;
    $('.kbps', e.card).textContent = fmtRate(last);
    if (hs.length < 2) return;
    const max = Math.max(1, ...hs);
    g.strokeStyle = accent || (accent = getComputedStyle(document.documentElement).getPropertyValue('--accent') || '#1a7f4b');
    g.lineWidth = 1.5;
    g.beginPath();
    hs.forEach((v, i) => {
      const x = w - (hs.length - 1 - i) * (w / (HISTORY - 1));
      const y = h - 2 - (v / max) * (h - 4);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  }

  // --- thumbnails --------------------------------------------------------------------
  const CONTAINERS = new Set(['moov', 'trak', 'mdia', 'minf', 'stbl']);
  // the decoder configuration record and the sample of a one-sample MP4
  function parseMp4(buf) {
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    const type = (o) => String.fromCharCode(buf[o + 4], buf[o + 5], buf[o + 6], buf[o + 7]);
    let desc = null, data = null;
    function walk(start, end) {
      let o = start;
      while (o + 8 <= end) {
        const size = view.getUint32(o);
        if (size < 8 || o + size > end) return;
        const t = type(o);
        if (CONTAINERS.has(t)) walk(o + 8, o + size);
        else if (t === 'stsd') {
          // full box (4) + entry count (4), then the visual sample entry: its 8-byte header and
          // 78 bytes of fields, then its boxes (avcC, hvcC, av1C, vpcC)
          const entry = o + 16;
          const entryEnd = entry + view.getUint32(entry);
          let b = entry + 8 + 78;
          while (b + 8 <= entryEnd) {
            const bs = view.getUint32(b);
            if (bs < 8) break;
            if (['avcC', 'hvcC', 'av1C', 'vpcC'].includes(type(b))) desc = buf.slice(b + 8, b + bs);
            b += bs;
          }
        } else if (t === 'mdat') data = buf.slice(o + 8, o + size);
        o += size;
      }
    }
    walk(0, buf.length);
    return { desc, data };
  }

  function note(e, text) { $('.note', e.card).textContent = text; }

  function drawFrame(e, source, w, h) {
    const c = $('.thumb canvas', e.card);
    c.width = w;
    c.height = h;
    c.getContext('2d').drawImage(source, 0, 0, w, h);
    note(e, '');
    S.thumbs += 1;
    e.card.dataset.thumb = String(Number(e.card.dataset.thumb || 0) + 1);
  }

  async function decodeWithWebCodecs(e, codec, desc, data) {
    if (!window.VideoDecoder) return false;
    const config = { codec, optimizeForLatency: true };
    if (desc && !codec.startsWith('vp09')) config.description = desc;
    const support = await VideoDecoder.isConfigSupported(config).catch(() => ({ supported: false }));
    if (!support.supported) return false;
    await new Promise((resolve, reject) => {
      const dec = new VideoDecoder({
        output: (frame) => {
          drawFrame(e, frame, frame.displayWidth, frame.displayHeight);
          frame.close();
        },
        error: reject,
      });
      dec.configure(config);
      dec.decode(new EncodedVideoChunk({ type: 'key', timestamp: 0, data }));
      dec.flush().then(() => { dec.close(); resolve(); }, reject);
    });
    e.card.dataset.decoder = 'webcodecs';
    return true;
  }

  function decodeWithVideo(e, buf) {
    return new Promise((resolve) => {
      const v = document.createElement('video');
      v.muted = true;
      const url = URL.createObjectURL(new Blob([buf], { type: 'video/mp4' }));
      const done = (ok) => { URL.revokeObjectURL(url); v.removeAttribute('src'); resolve(ok); };
      v.addEventListener('loadeddata', () => {
        if (v.videoWidth) { drawFrame(e, v, v.videoWidth, v.videoHeight); e.card.dataset.decoder = 'video'; }
        done(!!v.videoWidth);
      }, { once: true });
      v.addEventListener('error', () => done(false), { once: true });
      setTimeout(() => done(false), 4000);
      v.src = url;
    });
  }

  async function thumb(e, force) {
    const d = e.data;
    const now = performance.now();
    if (e.busy || (!force && now - e.thumbAt < THUMB_EVERY_MS)) return;
    if (!d.video) { note(e, d.audio ? 'audio only' : 'no media yet'); return; }
    if (keyLocked(d)) { note(e, 'play key required'); return; }
    e.busy = true;
    e.thumbAt = now;
    try {
      const key = d.play_key_required ? '?key=' + enc(playKey(d.app)) : '';
      const r = await fetch('/api/streams/' + path(d) + '/keyframe' + key, { cache: 'no-store' });
      if (!r.ok) { note(e, r.status === 401 ? 'play key refused' : 'no keyframe yet'); return; }
      const buf = new Uint8Array(await r.arrayBuffer());
      const { desc, data } = parseMp4(buf);
      if (!data) { note(e, 'no keyframe'); return; }
      let ok = false;
      try { ok = await decodeWithWebCodecs(e, d.video.codec, desc, data); } catch (err) { keep(S.thumbErrors, String(err)); }
      if (!ok) ok = await decodeWithVideo(e, buf);
      if (!ok) note(e, d.video.codec + ': this browser cannot decode it');
    } catch (err) {
      keep(S.thumbErrors, String(err));
    } finally {
      e.busy = false;
    }
  }

  const seen = new IntersectionObserver((entries) => {
    for (const it of entries) {
      const e = S.streams.get(it.target.dataset.stream);
      if (e) { e.visible = it.isIntersecting; if (e.visible) thumb(e); }
    }
  });

  setInterval(() => {
    if (document.visibilityState !== 'visible') return;
    for (const e of S.streams.values()) if (e.visible) thumb(e);
  }, 1000);

  // --- state ---------------------------------------------------------------------------
  function upsert(d, history) {
    const k = d.app + '/' + d.name;
    let e = S.streams.get(k);
    if (!e) {
      e = { data: d, card: makeCard(k), history: history || [], fetchedAt: performance.now(), visible: false, thumbAt: -1e9, busy: false };
      S.streams.set(k, e);
      const after = [...cards.children].find((c) => c.dataset.stream > k);
      cards.insertBefore(e.card, after || null);
      // its thumbnail comes when the card is on screen (the observer says so)
      seen.observe(e.card);
    }
    e.data = d;
    e.fetchedAt = performance.now();
    render(e);
    $('#empty').hidden = S.streams.size > 0;
  }

  function remove(k) {
    const e = S.streams.get(k);
    if (!e) return;
    seen.unobserve(e.card);
    e.card.remove();
    S.streams.delete(k);
    $('#empty').hidden = S.streams.size > 0;
  }

  async function loadAll() {
    const [streams, stats] = await Promise.all([
      fetch('/api/streams', { cache: 'no-store' }).then((r) => r.json()),
      fetch('/api/stats', { cache: 'no-store' }).then((r) => r.json()),
    ]);
    S.ports = stats.ports || S.ports;
    S.adminApi = !!stats.admin_api;
    $('#admin-form').hidden = !S.adminApi;
    $('#publish-hint').textContent = 'rtmp://' + location.hostname + ':' + S.ports.rtmp + '/APP/STREAM';
    showServer(stats.server);
    showWarnings(stats.recent_warnings || []);
    const live = new Set();
    for (const d of streams.streams) {
      if (d.name.includes('~')) continue; // a multitrack publish's track streams show on its card
      const k = d.app + '/' + d.name;
      live.add(k);
      upsert(d, (stats.bitrate_history_kbps || {})[k]);
    }
    for (const k of [...S.streams.keys()]) if (!live.has(k)) remove(k);
    $('#empty').hidden = S.streams.size > 0;
    return stats.last_event_id;
  }

  const refreshing = new Map();
  let reloading = null;
  function refresh(k) {
    if (refreshing.has(k) || reloading) return;
    if (refreshing.size >= 8) {
      // many streams changing at once (a publish storm): one reload instead of one request each
      for (const t of refreshing.values()) clearTimeout(t);
      refreshing.clear();
      reloading = setTimeout(() => { reloading = null; loadAll(); }, 1000);
      return;
    }
    refreshing.set(k, setTimeout(async () => {
      refreshing.delete(k);
      const [app, name] = k.split('/');
      const r = await fetch('/api/streams/' + enc(app) + '/' + enc(name), { cache: 'no-store' }).catch(() => null);
      if (r && r.ok) upsert(await r.json());
      else if (r && r.status === 404) remove(k);
    }, 150));
  }

  function showServer(sv) {
    if (!sv) return;
    S.server = sv;
    const warnings = Object.values(sv.warnings || {}).reduce((a, b) => a + b, 0);
    const items = [['streams', sv.streams], ['viewers', sv.viewers], ['in', fmtBytes(sv.bytes_in)], ['out', fmtBytes(sv.bytes_out)],
      ['up', fmtDuration(sv.uptime_s)], ['consoles', sv.consoles], ['warnings', warnings]];
    $('#totals').replaceChildren(...items.map(([l, v]) => {
      const s = document.createElement('span');
      s.append(l + ' ');
      const b = document.createElement('b');
      b.textContent = String(v);
      b.dataset.total = l;
      s.append(b);
      return s;
    }));
    $('#version').textContent = 'livegate ' + sv.version;
  }

  function showWarnings(list) {
    const box = $('#warnings');
    const ol = $('ol', box);
    for (const w of list) {
      const li = document.createElement('li');
      const when = new Date(w.t).toLocaleTimeString();
      const what = w.kind === 'limit' ? 'limit hit: ' + w.limit : 'refused (' + w.reason + ')' + (w.why ? ': ' + w.why : '') + (w.peer ? ' from ' + w.peer : '');
      li.textContent = when + ' ' + what + (w.suppressed ? ' (+' + w.suppressed + ' more)' : '');
      ol.prepend(li);
    }
    while (ol.children.length > 20) ol.lastElementChild.remove();
    box.hidden = ol.children.length === 0;
  }

  function onStats(st) {
    showServer(st.server);
    for (const [k, s] of Object.entries(st.streams || {})) {
      const e = S.streams.get(k);
      if (!e) { if (!k.includes('~')) refresh(k); continue; }
      e.history.push(s.bitrate_in_kbps);
      if (e.history.length > HISTORY) e.history.shift();
      e.data.viewers = s.viewers;
      e.data.bytes_out = s.bytes_out;
      renderLive(e);
      // a new stream's codecs come with its first frames
      if (!e.data.video && !e.data.audio) refresh(k);
    }
    for (const k of S.streams.keys()) if (!(k in (st.streams || {}))) refresh(k);
  }

  function connect(lastId) {
    const es = new EventSource('/api/events' + (lastId ? '?last_event_id=' + enc(lastId) : ''));
    es.onopen = () => $('#sse').classList.add('on');
    es.onerror = () => $('#sse').classList.remove('on');
    const lifecycle = ['publish', 'reconnect', 'waiting', 'unpublish', 'kick', 'drain', 'push', 'record'];
    for (const kind of lifecycle) {
      es.addEventListener(kind, (ev) => {
        const d = JSON.parse(ev.data);
        keep(S.events, kind);
        if (kind === 'unpublish') remove(d.stream); else refresh(d.stream);
      });
    }
    for (const kind of ['refused', 'limit']) {
      es.addEventListener(kind, (ev) => { keep(S.events, kind); showWarnings([JSON.parse(ev.data)]); });
    }
    es.addEventListener('reset', () => { keep(S.events, 'reset'); loadAll(); });
    es.addEventListener('stats', (ev) => onStats(JSON.parse(ev.data)));
    S.source = es;
  }

  // --- admin token -----------------------------------------------------------------------
  function showToken() {
    $('#token').hidden = !!token();
    $('#token-set').hidden = !!token();
    $('#token-clear').hidden = !token();
    for (const e of S.streams.values()) render(e);
  }
  $('#admin-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem('livegate.token', $('#token').value);
    $('#token').value = '';
    showToken();
  });
  $('#token-clear').addEventListener('click', () => { sessionStorage.removeItem('livegate.token'); showToken(); });

  loadAll().then((id) => { showToken(); connect(id); S.ready = true; }, (err) => toast('cannot load /api/streams: ' + err));
})();
