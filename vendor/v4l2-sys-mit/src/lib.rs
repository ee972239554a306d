//! The bindgen output of `<linux/videodev2.h>` (wrapper.h), generated once per target by
//! scripts/regen-v4l2-bindings.sh, so that the build needs no libclang. Same items and layout
//! tests as the upstream crate's build-time bindings for the same headers.
#![allow(clippy::all)]
#![allow(deref_nullptr)]
#![allow(non_camel_case_types)]
#![allow(non_snake_case)]
#![allow(non_upper_case_globals)]

#[cfg(target_arch = "x86_64")]
include!("bindings_x86_64.rs");
#[cfg(target_arch = "aarch64")]
include!("bindings_aarch64.rs");
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("v4l2 bindings exist for x86_64 and aarch64 only: run scripts/regen-v4l2-bindings.sh with the new target added");
