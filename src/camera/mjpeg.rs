//! Splitting an MJPEG byte stream (concatenated JPEGs, as a USB camera sends them in MJPEG
//! mode and as `ffmpeg -f mjpeg` records them) into frames.
//!
//! Searching for the next `FF D9` is not enough: EXIF thumbnails inside APP1 carry their own
//! SOI/EOI, and a cut-off frame followed by a good one would swallow the good one. So each
//! frame is walked the way a decoder walks it: from SOI, marker segment by marker segment
//! (each with its 16-bit length) up to SOS, then through the entropy-coded data, where an
//! `FF` is followed by `00` (byte stuffing), `D0..D7` (restart markers) or `FF` (fill), and any
//! other byte ends the scan; the walk goes on (progressive JPEGs have several scans) until
//! EOI. A new SOI before EOI, a segment running past the data, or a byte that should be a
//! marker and isn't, marks the frame broken; the walk then resynchronises on the next SOI.
//! Bytes between frames are ignored.
//!
//! This runs over a byte slice and never panics: every index is checked.

/// One frame found in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JpegSpan {
    /// Offset of the SOI marker.
    pub start: usize,
    /// One past the EOI marker (complete) or where the broken frame was given up.
    pub end: usize,
    pub status: SpanStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanStatus {
    /// SOI to EOI, well formed. `has_dht`: the frame carries its own Huffman tables.
    Complete { has_dht: bool },
    /// Not decodable as found; the reason says why (cut off, garbage where a marker belongs).
    Broken(String),
}

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const DHT: u8 = 0xC4;

/// Offset of the next `FF D8 FF` (SOI followed by the start of another marker) at or after
/// `from`. Requiring the third byte keeps stray `FF D8` pairs in garbage from starting frames.
fn find_soi(data: &[u8], from: usize) -> Option<usize> {
    let tail = data.get(from..)?;
    tail.windows(3)
        .position(|w| w == [0xFF, SOI, 0xFF])
        .map(|p| from + p)
}

enum Walk {
    Complete {
        end: usize,
        has_dht: bool,
    },
    /// `resume`: where to look for the next frame.
    Broken {
        reason: String,
        resume: usize,
    },
}

fn walk_frame(data: &[u8], start: usize) -> Walk {
    let len = data.len();
    // On malformed data the next frame is searched from where the walk went wrong (never
    // before start + 2): SOIs inside segments already walked (EXIF thumbnails) are skipped.
    let resync = |from: usize, reason: String| Walk::Broken {
        resume: find_soi(data, from.max(start + 2)).unwrap_or(len),
        reason,
    };
    let mut pos = start + 2;
    let mut has_dht = false;
    // Start of the last length-prefixed segment walked: if its length was wrong (cut-off
    // frame), the next frame's SOI may lie inside what it claimed, so resync from there.
    let mut seg_start = start;
    loop {
        if pos >= len {
            return Walk::Broken {
                reason: format!("cut off: data ends after {} bytes, before EOI", len - start),
                resume: len,
            };
        }
        if data[pos] != 0xFF {
            return resync(
                seg_start,
                format!(
                    "byte {:#04x} at frame offset {} where a marker belongs",
                    data[pos],
                    pos - start
                ),
            );
        }
        // Skip fill bytes (any number of FF before the marker code).
        while pos < len && data[pos] == 0xFF {
            pos += 1;
        }
        if pos >= len {
            return Walk::Broken {
                reason: "cut off inside a marker".to_string(),
                resume: len,
            };
        }
        let marker_at = pos - 1;
        let code = data[pos];
        match code {
            EOI => {
                return Walk::Complete {
                    end: pos + 1,
                    has_dht,
                }
            }
            SOI => {
                return Walk::Broken {
                    reason: format!(
                        "cut off: a new frame starts at frame offset {} before EOI",
                        marker_at - start
                    ),
                    resume: marker_at,
                }
            }
            // Stand-alone markers without a length.
            0x01 | 0xD0..=0xD7 => pos += 1,
            0x00 => {
                return resync(
                    marker_at,
                    "stuffed FF 00 outside entropy-coded data".to_string(),
                )
            }
            _ => {
                let Some(&[hi, lo]) = data.get(pos + 1..pos + 3) else {
                    return resync(
                        marker_at,
                        format!("cut off in the length of marker FF{code:02X}"),
                    );
                };
                let seg_len = u16::from_be_bytes([hi, lo]) as usize;
                if seg_len < 2 {
                    return resync(
                        marker_at,
                        format!("marker FF{code:02X} has length {seg_len} < 2"),
                    );
                }
                let seg_end = pos + 1 + seg_len;
                if seg_end > len {
                    return resync(
                        marker_at,
                        format!(
                            "marker FF{code:02X} segment of {seg_len} bytes runs past the data"
                        ),
                    );
                }
                if code == DHT {
                    has_dht = true;
                }
                seg_start = marker_at;
                pos = seg_end;
                if code == SOS {
                    // Entropy-coded data: up to the first FF that starts a real marker.
                    loop {
                        let Some(off) = data[pos..].iter().position(|&b| b == 0xFF) else {
                            return Walk::Broken {
                                reason: "cut off inside entropy-coded data".to_string(),
                                resume: len,
                            };
                        };
                        let ff = pos + off;
                        match data.get(ff + 1) {
                            None => {
                                return Walk::Broken {
                                    reason: "cut off inside entropy-coded data".to_string(),
                                    resume: len,
                                }
                            }
                            Some(0x00) | Some(0xD0..=0xD7) => pos = ff + 2,
                            Some(0xFF) => pos = ff + 1,
                            Some(_) => {
                                pos = ff;
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Every frame in `data`, complete or broken, in stream order.
pub fn split(data: &[u8]) -> Vec<JpegSpan> {
    let mut spans = Vec::new();
    let mut pos = 0;
    while let Some(start) = find_soi(data, pos) {
        match walk_frame(data, start) {
            Walk::Complete { end, has_dht } => {
                spans.push(JpegSpan {
                    start,
                    end,
                    status: SpanStatus::Complete { has_dht },
                });
                pos = end;
            }
            Walk::Broken { reason, resume } => {
                // `resume > start` always holds (it is a later SOI or the end), so this
                // loop makes progress; guard anyway rather than spin.
                let end = resume.max(start + 2);
                spans.push(JpegSpan {
                    start,
                    end,
                    status: SpanStatus::Broken(reason),
                });
                pos = end;
            }
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal syntactically valid frame: SOI, a DHT-tagged dummy segment, SOS with the
    /// given entropy bytes, EOI. (Not decodable; the splitter does not decode.)
    fn frame(entropy: &[u8], dht: bool) -> Vec<u8> {
        let mut f = vec![0xFF, 0xD8];
        if dht {
            f.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x04, 0xAA, 0xBB]);
        }
        // APP1 whose payload holds a whole "thumbnail" JPEG (SOI ... EOI)
        f.extend_from_slice(&[0xFF, 0xE1, 0x00, 0x08, 0xFF, 0xD8, 0xFF, 0xD9, 0xFF, 0xD9]);
        f.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x03, 0x01]);
        f.extend_from_slice(entropy);
        f.extend_from_slice(&[0xFF, 0xD9]);
        f
    }

    #[test]
    fn splits_on_real_structure_not_on_stray_bytes() {
        // entropy data with stuffing (FF 00), a restart marker, fill bytes and FF D9-lookalikes
        // only in stuffed form
        let e1 = [
            0x12, 0xFF, 0x00, 0xD9, 0xFF, 0xD3, 0x44, 0xFF, 0xFF, 0x00, 0x55,
        ];
        let f1 = frame(&e1, true);
        let f2 = frame(&[1, 2, 3], false);
        let mut data = vec![0x00, 0x11]; // leading garbage
        data.extend_from_slice(&f1);
        data.extend_from_slice(&[0xAB, 0xCD]); // garbage between frames
        data.extend_from_slice(&f2);
        let spans = split(&data);
        assert_eq!(spans.len(), 2, "{spans:?}");
        assert_eq!(spans[0].start, 2);
        assert_eq!(spans[0].end, 2 + f1.len());
        assert_eq!(spans[0].status, SpanStatus::Complete { has_dht: true });
        let s2 = 2 + f1.len() + 2;
        assert_eq!(spans[1].start, s2);
        assert_eq!(spans[1].end, s2 + f2.len());
        assert_eq!(spans[1].status, SpanStatus::Complete { has_dht: false });
    }

    #[test]
    fn frame_cut_in_entropy_data_is_broken_and_next_frame_survives() {
        let f1 = frame(&[9; 40], true);
        let f2 = frame(&[7; 40], true);
        let cut = f1.len() - 20;
        let mut data = f1[..cut].to_vec();
        data.extend_from_slice(&f2);
        data.extend_from_slice(&f2);
        let spans = split(&data);
        assert_eq!(spans.len(), 3, "{spans:?}");
        assert!(matches!(&spans[0].status, SpanStatus::Broken(r) if r.contains("new frame")));
        assert_eq!((spans[0].start, spans[0].end), (0, cut));
        assert_eq!(spans[1].start, cut);
        assert_eq!(spans[1].status, SpanStatus::Complete { has_dht: true });
        assert_eq!(spans[2].end, data.len());
    }

    #[test]
    fn frame_cut_in_headers_resyncs_on_next_soi() {
        let f1 = frame(&[9; 40], true);
        let f2 = frame(&[7; 40], true);
        // cut inside the APP1 segment: its length now points into the next frame
        let cut = 12;
        let mut data = f1[..cut].to_vec();
        data.extend_from_slice(&f2);
        let spans = split(&data);
        assert_eq!(spans.len(), 2, "{spans:?}");
        assert!(matches!(spans[0].status, SpanStatus::Broken(_)));
        assert_eq!(spans[1].start, cut);
        assert_eq!(spans[1].end, data.len());
        assert!(matches!(spans[1].status, SpanStatus::Complete { .. }));
    }

    #[test]
    fn truncated_tail_and_tiny_inputs() {
        let f1 = frame(&[9; 40], true);
        for cut in 0..f1.len() {
            let mut data = f1.clone();
            data.extend_from_slice(&f1[..cut]);
            let spans = split(&data);
            // A cut inside the APP1 segment may expose the thumbnail it holds as one more
            // (complete) frame; a decoder then sees a tiny image. Nothing else appears.
            assert!(spans.len() <= 3, "cut {cut}: {spans:?}");
            assert_eq!(spans[0].status, SpanStatus::Complete { has_dht: true });
            assert_eq!((spans[0].start, spans[0].end), (0, f1.len()));
            if spans.len() >= 2 {
                assert!(matches!(spans[1].status, SpanStatus::Broken(_)));
                assert!(spans.iter().all(|s| s.start < s.end && s.end <= data.len()));
            }
        }
        assert!(split(&[]).is_empty());
        assert!(split(&[0xFF]).is_empty());
        assert!(split(&[0xFF, 0xD8]).is_empty());
        let s = split(&[0xFF, 0xD8, 0xFF]);
        assert_eq!(s.len(), 1);
        assert!(matches!(s[0].status, SpanStatus::Broken(_)));
    }
}
