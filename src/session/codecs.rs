//! Which of a stream's codecs a peer has to have announced before it is sent them (Enhanced
//! RTMP's `fourCcList`): one rule for an RTMP viewer (`server::rtmp::play`) and a push
//! target (`relay::push`), each of which words its own refusal.

use crate::media::{AudioCodec, CodecConfig, VideoCodec};
use crate::rtmp::ClientCapabilities;

/// The first codec of `codec` that a peer with capabilities `caps` is not to be sent, by its
/// FourCC; None when it may have them all. H.264, AAC and MP3 go out as legacy FLV, which
/// needs no announcement; another codec only to a peer that listed it (or `*`). A peer that
/// listed nothing (or gave no capabilities: `caps` None) is taken to take every codec when
/// `unlisted_ok`, none when not.
pub fn unannounced_codec(
    codec: &CodecConfig,
    caps: Option<&ClientCapabilities>,
    unlisted_ok: bool,
) -> Option<&'static [u8; 4]> {
    let video = codec.video.as_ref().map(|v| v.codec()).filter(|c| *c != VideoCodec::Avc).map(|c| c.fourcc());
    let audio = codec.audio.as_ref().map(|a| a.codec()).filter(|c| !matches!(c, AudioCodec::Aac | AudioCodec::Mp3));
    video.into_iter().chain(audio.map(AudioCodec::fourcc)).find(|fourcc| {
        let announced = caps.and_then(|c| c.announced(fourcc)).unwrap_or(unlisted_ok);
        !announced
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::media::{AudioConfig, OpusConfig};

    #[test]
    fn enhanced_codecs_go_only_where_announced() {
        let head = Bytes::from_static(b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00");
        let opus = OpusConfig::parse(head).unwrap();
        let codec = CodecConfig { audio: Some(Arc::new(AudioConfig::Opus(opus))), ..CodecConfig::default() };
        let listed =
            |l: &[&str]| ClientCapabilities { codecs: Some(l.iter().map(|s| s.to_string()).collect()), caps_ex: 0 };
        assert_eq!(unannounced_codec(&codec, None, false), Some(b"Opus"));
        assert_eq!(unannounced_codec(&codec, None, true), None);
        assert_eq!(unannounced_codec(&codec, Some(&ClientCapabilities::default()), true), None, "no list");
        assert_eq!(unannounced_codec(&codec, Some(&listed(&["hvc1"])), true), Some(b"Opus"));
        assert_eq!(unannounced_codec(&codec, Some(&listed(&["Opus"])), false), None);
        assert_eq!(unannounced_codec(&codec, Some(&listed(&["*"])), false), None);
        // nothing enhanced: anyone takes it
        assert_eq!(unannounced_codec(&CodecConfig::default(), None, false), None);
    }
}
