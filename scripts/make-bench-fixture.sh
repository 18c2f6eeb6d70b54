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

# The ingest scenario's Enhanced RTMP fixtures, with a current ffmpeg (9.x, PyPI
# imageio-ffmpeg: LIVEGATE_FFMPEG9 or the installed Python package; scripts/test.sh fetches
# it into target/ffmpeg-wheel):
#   fixture-hevc.flv    720p30 HEVC (libx265, 2 s GOP, 2.5 Mbit/s) + AAC 128 kbit/s, 30 s
#   fixture-av1.flv     720p30 AV1 (libsvtav1, 2 s GOP, 2.5 Mbit/s: -b:v 2750k, since SVT-AV1
#                       lands at 2.1 Mbit/s given 2500k) + AAC 128 kbit/s, 30 s
#   fixture-multi3.flv  three H.264 tracks (720p 2.5 Mbit/s, 480p 1 Mbit/s, 360p 600 kbit/s,
#                       the same 2 s GOP) + AAC, as one multitrack FLV, 30 s
ffmpeg9=${LIVEGATE_FFMPEG9:-}
[ -x "$ffmpeg9" ] || ffmpeg9=$(ls target/ffmpeg-wheel/imageio_ffmpeg/binaries/ffmpeg-linux-* 2>/dev/null | head -n1 || true)
[ -x "$ffmpeg9" ] || ffmpeg9=$(python3 -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())' 2>/dev/null || true)
if [ ! -x "$ffmpeg9" ]; then
  echo "no ffmpeg 9 (pip install imageio-ffmpeg, or run scripts/test.sh once): skipping the E-RTMP fixtures" >&2
  exit 0
fi
make9() { # name, then the encoder arguments
  local f="$out/$1.flv"; shift
  if [ -s "$f" ]; then echo "$f exists"; return; fi
  SVT_LOG=1 "$ffmpeg9" -hide_banner -loglevel error -y \
    -f lavfi -i "testsrc2=size=1280x720:rate=30,noise=alls=12:allf=t" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000" -t 30 "$@" -c:a aac -b:a 128k -ac 2 -f flv "$f.tmp"
  mv "$f.tmp" "$f"
  echo "$f: $(ffprobe -v error -show_entries format=bit_rate,duration -of csv=p=0 "$f" 2>/dev/null || echo E-RTMP)"
}
make9 fixture-hevc -map 0:v -map 1:a -c:v libx265 -preset ultrafast \
  -x265-params log-level=error:keyint=60:min-keyint=60:scenecut=0:bframes=3:vbv-maxrate=2500:vbv-bufsize=2500:bitrate=2500
make9 fixture-av1 -map 0:v -map 1:a -c:v libsvtav1 -preset 10 -g 60 -b:v 2750k -svtav1-params rc=1:scd=0
make9 fixture-multi3 -map 0:v -map 0:v -map 0:v -map 1:a -c:v libx264 -preset veryfast -bf 3 -g 60 -keyint_min 60 \
  -sc_threshold 0 -pix_fmt yuv420p -s:v:0 1280x720 -b:v:0 2500k -s:v:1 854x480 -b:v:1 1000k -s:v:2 640x360 -b:v:2 600k
