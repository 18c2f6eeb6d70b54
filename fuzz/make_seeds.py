#!/usr/bin/env python3
"""Writes the committed seed corpora, fuzz/seeds/<target>/, from fixtures.

    python3 fuzz/make_seeds.py

Sources: fixtures/rtmp/ffmpeg_publish.bin (a real ffmpeg publish, client to
server: C0 C1 C2 then chunks), split into its messages; hand-made AMF0 values
and a play session; small segmenter programs (see livegate::fuzzing for the
input formats). Deterministic; standard library only.
"""
import os
import shutil
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "seeds")
HS = 1536


def amf_str(s):
    b = s.encode()
    return b"\x02" + struct.pack(">H", len(b)) + b


def amf_num(n):
    return b"\x00" + struct.pack(">d", n)


def amf_obj(props, marker=b"\x03"):
    out = marker
    for k, v in props:
        kb = k.encode()
        out += struct.pack(">H", len(kb)) + kb + v
    return out + b"\x00\x00\x09"


def chunk0(csid, ts, type_id, sid, payload, chunk_size=128):
    """A message as chunks: type-0 header then type-3 continuations."""
    ext = ts >= 0xFFFFFF
    head = bytes([csid]) + struct.pack(">I", min(ts, 0xFFFFFF))[1:] + struct.pack(">I", len(payload))[1:]
    head += bytes([type_id]) + struct.pack("<I", sid)
    if ext:
        head += struct.pack(">I", ts)
    out = head
    for i in range(0, max(len(payload), 1), chunk_size):
        if i:
            out += bytes([0xC0 | csid]) + (struct.pack(">I", ts) if ext else b"")
        out += payload[i : i + chunk_size]
    return out


def parse_chunks(data):
    """Client chunk stream -> [(type_id, timestamp, payload)]."""
    msgs, streams, pos, chunk_size = [], {}, 0, 128
    while pos < len(data):
        b = data[pos]
        fmt, csid = b >> 6, b & 0x3F
        pos += 1
        if csid == 0:
            csid, pos = 64 + data[pos], pos + 1
        elif csid == 1:
            csid, pos = 64 + data[pos] + (data[pos + 1] << 8), pos + 2
        st = streams.setdefault(csid, {"ts": 0, "len": 0, "type": 0, "sid": 0, "buf": b"", "delta": 0})
        if fmt <= 2:
            tsf = int.from_bytes(data[pos : pos + 3], "big")
            pos += 3
        if fmt <= 1:
            st["len"] = int.from_bytes(data[pos : pos + 3], "big")
            st["type"] = data[pos + 3]
            pos += 4
        if fmt == 0:
            st["sid"] = struct.unpack("<I", data[pos : pos + 4])[0]
            pos += 4
        if fmt <= 2 and tsf == 0xFFFFFF:
            tsf = struct.unpack(">I", data[pos : pos + 4])[0]
            pos += 4
        if not st["buf"]:
            if fmt == 0:
                st["ts"] = tsf
            elif fmt <= 2:
                st["delta"] = tsf
                st["ts"] += tsf
            else:
                st["ts"] += st["delta"]
        n = min(chunk_size, st["len"] - len(st["buf"]))
        st["buf"] += data[pos : pos + n]
        pos += n
        if len(st["buf"]) == st["len"]:
            msgs.append((st["type"], st["ts"], st["buf"]))
            if st["type"] == 1:
                chunk_size = struct.unpack(">I", st["buf"][:4])[0]
            st["buf"] = b""
    return msgs


def flv_tags(path):
    """An FLV file -> [(tag type, timestamp, body)]."""
    d = open(path, "rb").read()
    pos, tags = 13, []
    while pos + 11 <= len(d):
        t = d[pos]
        size = int.from_bytes(d[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(d[pos + 4 : pos + 7], "big") | (d[pos + 7] << 24)
        tags.append((t, ts, d[pos + 11 : pos + 11 + size]))
        pos += 11 + size + 4
    return tags


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def play_session(ts):
    connect = amf_str("connect") + amf_num(1) + amf_obj([("app", amf_str("live")), ("tcUrl", amf_str("rtmp://h/live"))])
    create = amf_str("createStream") + amf_num(2) + b"\x05"
    play = amf_str("play") + amf_num(3) + b"\x05" + amf_str("demo")
    out = chunk0(3, 0, 20, 0, connect) + chunk0(3, 0, 20, 0, create) + chunk0(8, 0, 20, 1, play)
    out += chunk0(2, 0, 1, 0, struct.pack(">I", 4096))
    out += chunk0(2, 0, 4, 0, struct.pack(">HI", 6, ts))  # ping request
    out += chunk0(8, 0, 20, 1, amf_str("deleteStream") + amf_num(4) + b"\x05" + amf_num(1))
    return out


def aggregate_publish():
    """connect, createStream, publish, then an Aggregate (type 22) of video, audio and data tags."""
    connect = amf_str("connect") + amf_num(1) + amf_obj([("app", amf_str("live")), ("tcUrl", amf_str("rtmp://h/live"))])
    create = amf_str("createStream") + amf_num(2) + b"\x05"
    publish = amf_str("publish") + amf_num(3) + b"\x05" + amf_str("demo") + amf_str("live")
    out = chunk0(3, 0, 20, 0, connect) + chunk0(3, 0, 20, 0, create) + chunk0(8, 0, 20, 1, publish)

    def tag(t, ts, body):
        head = bytes([t]) + struct.pack(">I", len(body))[1:] + struct.pack(">I", ts)[1:] + bytes([ts >> 24]) + b"\0\0\0"
        return head + body + struct.pack(">I", 11 + len(body))

    meta = amf_str("onMetaData") + amf_obj([("width", amf_num(320))], marker=b"\x08\x00\x00\x00\x01")
    agg = tag(18, 1000, meta) + tag(9, 1000, bytes([0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]))
    agg += tag(8, 1010, bytes([0xAF, 1, 0x21])) + tag(9, 1033, bytes([0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41]))
    return out + chunk0(6, 5000, 22, 1, agg)


def segmenter_program(seconds, video=True, audio=True, gop=30, jump_at=None):
    """cfg byte, a config, then 30 fps video and ~43 fps audio interleaved (ops documented in fuzzing.rs)."""
    kind = (1 if video else 0) | ((1 if audio else 0) << 2)
    out = bytes([0x03, 0x00, kind])  # segmenter config byte, config op, track kinds
    vt = at = 0
    for i in range(seconds * 30):
        if jump_at is not None and i == jump_at:
            out += bytes([11])  # Discontinuity
        if video:
            key = i % gop == 0
            op = 0x41 if key else 0x01  # video; 0x40: keyframe
            size = 3000 if key else 400
            out += bytes([op]) + struct.pack(">H", 33 if i else 0) + struct.pack(">h", 66)
            out += bytes([1]) + struct.pack(">H", size)
            out += bytes([7])  # type of the first of two NAL units (SPS-like)
        while audio and at <= i * 33:
            out += bytes([6]) + struct.pack(">H", 23)  # audio: +23 ms, 23 bytes
            at += 23
    out += bytes([0x0F])  # flush
    return out


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    fixture = open(os.path.join(ROOT, "fixtures", "rtmp", "ffmpeg_publish.bin"), "rb").read()
    hs_len = 1 + 2 * HS
    stream = fixture[hs_len:]
    msgs = parse_chunks(stream)
    assert any(t == 9 for t, _, _ in msgs), "no video in the fixture"

    # handshake: piece-size byte, then the client's bytes from C0 on
    write("handshake", "ffmpeg_c0c1c2_commands", b"\x00" + fixture[: hs_len + 600])
    write("handshake", "ffmpeg_c0c1_bytewise", b"\x00" + fixture[: 1 + HS])
    write("handshake", "ffmpeg_c0c1c2_big_pieces", b"\x40" + fixture[: hs_len + 64])

    # session: policy byte, piece-size byte, chunk stream after the handshake
    write("session", "ffmpeg_publish_full", b"\xff\x40" + stream)
    write("session", "ffmpeg_publish_head", b"\xff\x02" + stream[:4096])
    write("session", "ffmpeg_publish_rejected", b"\x00\x10" + stream[:4096])
    write("session", "play_extended_ts", b"\xff\x08" + play_session(0x01000010))
    write("session", "play_then_delete", b"\x01\x00" + play_session(5))
    write("session", "aggregate_publish", b"\xff\x20" + aggregate_publish())

    # amf0: every command and data message of the fixture, plus hand-made values
    n = 0
    for t, _, p in msgs:
        if t in (18, 20):
            write("amf0", f"ffmpeg_msg{n:02}", p)
            n += 1
    write("amf0", "all_types",
          amf_num(1.5) + b"\x01\x01" + amf_str("s") + amf_obj([("a", amf_num(0)), ("b", b"\x05")]) + b"\x06"
          + b"\x07\x00\x01" + amf_obj([("w", amf_num(320))], b"\x08\x00\x00\x00\x01") + b"\x0a\x00\x00\x00\x02"
          + amf_num(1) + b"\x05" + b"\x0b" + struct.pack(">dh", 1e12, 0) + b"\x0c\x00\x00\x00\x03abc"
          + b"\x10\x00\x01C" + b"\x00\x00\x09" + b"\x0f\x00\x00\x00\x01x" + b"\x0d")
    write("amf0", "nested", b"\x03\x00\x01a" * 10 + b"\x05" + b"\x00\x00\x09" * 10)

    # flv_demux: kind byte (bit 7: audio), 8-byte timestamp, tag body
    seen = set()
    for t, ts, p in msgs:
        if t not in (8, 9) or not p:
            continue
        key = (t, p[0], p[1] if len(p) > 1 else None)
        if key in seen:
            continue
        seen.add(key)
        kind = 0x80 if t == 8 else 0x00
        write("flv_demux", f"ffmpeg_{'audio' if t == 8 else 'video'}_{p[0]:02x}_{p[1]:02x}",
              bytes([kind]) + struct.pack(">q", ts) + p[:2048])
    write("flv_demux", "bframe_negative_cts", b"\x00" + struct.pack(">q", 1040) + bytes([0x27, 1, 0xFF, 0xFF, 0xD8, 0, 0, 0, 1, 1]))
    # Enhanced RTMP: the first body of each (kind, header byte) in the ffmpeg 9 captures
    for name in sorted(os.listdir(os.path.join(ROOT, "fixtures", "ertmp"))):
        seen = set()
        for t, ts, body in flv_tags(os.path.join(ROOT, "fixtures", "ertmp", name)):
            if t not in (8, 9) or not body or (t, body[0]) in seen:
                continue
            seen.add((t, body[0]))
            kind = 0x80 if t == 8 else 0x00
            write("flv_demux", f"ertmp_{name[:-4]}_{'audio' if t == 8 else 'video'}_{body[0]:02x}",
                  bytes([kind]) + struct.pack(">q", ts) + body[:2048])
    # hand-made E-RTMP structures: ModEx, ManyTracks, ManyTracksManyCodecs, multitrack audio
    ex = [
        ("modex_nano_codedx", b"\x97\x02\x00\x01\xf4\x03av01\x12\x00\x32\x00"),
        ("many_tracks_avc1", b"\x96\x13avc1" + b"".join(bytes([t, 0, 0, 5, 0, 0, 0, 1, 0x65]) for t in (0, 2))),
        ("many_codecs", b"\x96\x23hvc1\x00\x00\x00\x02\xaa\xbbav01\x01\x00\x00\x01\xcc"),
        ("modex_loop", b"\x97" + b"\x00\x00\x07" * 12),
    ]
    for n, body in ex:
        write("flv_demux", f"ertmp_{n}", b"\x00" + struct.pack(">q", 40) + body)
    write("flv_demux", "ertmp_audio_one_track_opus", b"\x80" + struct.pack(">q", 40) + b"\x95\x01Opus\x03\x78\xaa")

    # segmenter programs
    write("segmenter", "av_4s", segmenter_program(4))
    write("segmenter", "video_only_3s_gop15", segmenter_program(3, audio=False, gop=15))
    write("segmenter", "audio_only_3s", segmenter_program(3, video=False))
    write("segmenter", "av_discontinuity", segmenter_program(3, jump_at=40))
    return 0


if __name__ == "__main__":
    sys.exit(main())
