#!/usr/bin/env bash
# Makes the load-benchmark fixtures (not committed):
#   target/bench/fixture.flv        720p30 H.264 High (3 B-frames, 2 s GOP, CBR 2.5 Mbit/s) + AAC-LC 128 kbit/s, 30 s
#   target/bench/fixture-light.flv  360p30 H.264 High (B-frames, 2 s GOP, 600 kbit/s) + AAC-LC 64 kbit/s, 30 s
#     (used by the 100-publisher scenario; --many-fixture picks another file)
# The bench loops them with `ffmpeg -re -stream_loop -1 -c copy -f flv`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_DIR:-target/bench}
mkdir -p "$out"
make() { # name size vbitrate abitrate
  local f="$out/$1.flv"
  if [ -s "$f" ]; then echo "$f exists"; return; fi
  ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i "testsrc2=size=$2:rate=30,noise=alls=12:allf=t" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t 30 -map 0:v -map 1:a \
    -c:v libx264 -preset veryfast -profile:v high -bf 3 -g 60 -keyint_min 60 -sc_threshold 0 \
    -b:v "$3" -minrate "$3" -maxrate "$3" -bufsize "$3" -x264-params nal-hrd=cbr -pix_fmt yuv420p \
    -c:a aac -b:a "$4" -ac 2 \
    -f flv "$f.tmp"
  mv "$f.tmp" "$f"
  echo "$f: $(ffprobe -v error -show_entries format=bit_rate,duration -of csv=p=0 "$f")"
}
make fixture 1280x720 2500k 128k
make fixture-light 640x360 600k 64k
