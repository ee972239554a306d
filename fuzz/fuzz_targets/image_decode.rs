//! The image decoders (JPEG through libjpeg-turbo, PNG) on arbitrary bytes: an error is
//! fine, a panic, an abort or an allocation past the size limit is a bug.
#![no_main]

use std::path::Path;
use std::sync::Once;

use facegate::image_limits::{self, ImageLimits};
use libfuzzer_sys::fuzz_target;

static LIMITS: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // A smaller limit than the default keeps each run fast; the check is the same code.
    LIMITS.call_once(|| {
        image_limits::set(ImageLimits {
            max_width: 4096,
            max_height: 4096,
            max_pixels: 4_000_000,
        })
    });
    if let Ok(img) = facegate::image_io::decode_rgb(data, Path::new("fuzz.img")) {
        let l = image_limits::current();
        assert!(img.width() <= l.max_width && img.height() <= l.max_height);
        assert!(u64::from(img.width()) * u64::from(img.height()) <= l.max_pixels);
    }
});
