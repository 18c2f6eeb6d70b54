//! One stream's timeline across publisher reconnects (`[hub] reconnect_grace_ms`): when a
//! publisher comes back to a stream that kept its viewers, its timestamps are rebased so
//! that they continue the previous publisher's one frame interval after its last frame
//! (at most the real pause): DTS never goes backwards and players see no hole in the
//! media (MSE players stall at a hole in their buffer, and an HLS segment spanning a
//! pause would outgrow the target duration); composition offsets are kept as sent. A
//! codec configuration equal to the current one is not sent again, a changed one gets a
//! newer generation. Time is an input (`now`), so this is tested by stepping it.

use std::time::Instant;

use super::HubEvent;
use crate::media::{CodecConfig, Frame};

#[derive(Debug, Default)]
pub(super) struct Timeline {
    /// Added to every timestamp of the current publisher.
    offset: i64,
    /// The last timestamp out, and when it was pushed.
    last: Option<(i64, Instant)>,
    /// The last step between two frames' timestamps (ms, 1 to 100).
    step: i64,
    /// A publisher came back: its first frame fixes `offset`.
    rebase: bool,
    /// Its first configuration is still to come (compared with the current one).
    config_pending: bool,
    /// Added to the generation of the current publisher's configurations.
    generation_offset: u32,
}

impl Timeline {
    /// A publisher took the stream over after another left.
    pub(super) fn reattach(&mut self) {
        self.rebase = true;
        self.config_pending = true;
    }

    /// Adjusts `ev` to the stream's timeline; false when it is not to be sent at all (a
    /// returning publisher's configuration that equals `current`).
    pub(super) fn apply(&mut self, ev: &mut HubEvent, current: &CodecConfig, now: Instant) -> bool {
        match ev {
            HubEvent::Frame(f) => {
                if std::mem::take(&mut self.rebase) {
                    if let Some((last, at)) = self.last {
                        let pause = i64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(i64::MAX);
                        let gap = self.step.clamp(1, 100).min(pause).max(1);
                        self.offset = last.saturating_add(gap).saturating_sub(f.dts());
                    }
                }
                if self.offset != 0 {
                    shift(f, self.offset);
                }
                if let Some((last, _)) = self.last {
                    let step = f.dts() - last;
                    if (1..=100).contains(&step) {
                        self.step = step;
                    }
                }
                self.last = Some((f.dts(), now));
            }
            HubEvent::Config(c) => {
                if std::mem::take(&mut self.config_pending) {
                    if c.video == current.video && c.audio == current.audio {
                        self.generation_offset = current.generation.wrapping_sub(c.generation);
                        return false;
                    }
                    self.generation_offset = current.generation.wrapping_add(1).wrapping_sub(c.generation);
                }
                c.generation = c.generation.wrapping_add(self.generation_offset);
            }
            _ => {}
        }
        true
    }
}

fn shift(f: &mut Frame, by: i64) {
    match f {
        Frame::Video(v) => v.dts = v.dts.saturating_add(by),
        Frame::Audio(a) => a.pts = a.pts.saturating_add(by),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::hub::testutil::{audio, config, video};

    fn dts(ev: &HubEvent) -> i64 {
        match ev {
            HubEvent::Frame(f) => f.dts(),
            _ => panic!("{ev:?}"),
        }
    }

    #[test]
    fn a_returning_publisher_continues_the_timeline_one_frame_after_the_last() {
        let mut t = Timeline::default();
        let cfg = config();
        let t0 = Instant::now();
        for (i, ms) in [0i64, 40, 80].into_iter().enumerate() {
            let mut ev = video(ms, i == 0);
            assert!(t.apply(&mut ev, &cfg, t0 + Duration::from_millis(ms as u64)));
            assert_eq!(dts(&ev), ms, "the first publisher's timestamps are kept");
        }
        // gone at 80 ms; back 1 s later with its clock at 0
        t.reattach();
        let back = t0 + Duration::from_millis(1080);
        let mut same = HubEvent::Config(CodecConfig { generation: 1, ..cfg.clone() });
        assert!(!t.apply(&mut same, &cfg, back), "an unchanged configuration is not sent again");
        let mut first = video(0, true);
        assert!(t.apply(&mut first, &cfg, back));
        assert_eq!(dts(&first), 80 + 40, "one frame interval after the last frame, no hole");
        let mut next = audio(23);
        t.apply(&mut next, &cfg, back + Duration::from_millis(23));
        assert_eq!(dts(&next), 143);
        // a changed configuration later gets a newer generation than the current one
        let mut changed = HubEvent::Config(CodecConfig { generation: 2, video: None, ..cfg.clone() });
        assert!(t.apply(&mut changed, &cfg, back));
        assert!(matches!(&changed, HubEvent::Config(c) if c.generation == cfg.generation + 1), "{changed:?}");
    }

    #[test]
    fn a_returning_publisher_with_other_codecs_sends_them_and_time_never_goes_back() {
        let mut t = Timeline::default();
        let cfg = config();
        let t0 = Instant::now();
        let mut ev = video(5_000, true);
        t.apply(&mut ev, &cfg, t0);
        t.reattach();
        let mut other = HubEvent::Config(CodecConfig { video: None, generation: 1, ..cfg.clone() });
        assert!(t.apply(&mut other, &cfg, t0));
        assert!(matches!(&other, HubEvent::Config(c) if c.generation == cfg.generation + 1));
        // back at once (no measurable pause) with a clock far ahead: still after the last,
        // by at most the real pause
        let mut first = video(90_000, true);
        t.apply(&mut first, &cfg, t0);
        assert_eq!(dts(&first), 5_001);
        let mut again = video(90_040, false);
        t.apply(&mut again, &cfg, t0 + Duration::from_millis(40));
        assert_eq!(dts(&again), 5_041, "then as the publisher sends them");
    }
}
