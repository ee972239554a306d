//! The MJPEG splitter on an arbitrary stream: spans in order, inside the data, never empty;
//! each complete frame then goes through the camera path's decoder (errors are fine).
#![no_main]

use std::sync::Once;

use facegate::camera::mjpeg::{split, SpanStatus};
use facegate::image_limits::{self, ImageLimits};
use libfuzzer_sys::fuzz_target;

static LIMITS: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    LIMITS.call_once(|| {
        image_limits::set(ImageLimits {
            max_width: 4096,
            max_height: 4096,
            max_pixels: 4_000_000,
        })
    });
    let spans = split(data);
    let mut prev_end = 0;
    for s in &spans {
        assert!(
            s.start >= prev_end && s.start < s.end && s.end <= data.len(),
            "{s:?}"
        );
        prev_end = s.end;
    }
    for s in spans.iter().take(4) {
        if matches!(s.status, SpanStatus::Complete { .. }) {
            let _ = facegate::camera::convert::decode_jpeg(&data[s.start..s.end]);
        }
    }
});
