//! Weight packing: every layout unpacks to what was packed, and f16 packing is f32 packing
//! of the same values.

use super::*;

#[test]
fn packing_round_trips() {
    let mut rng = Rng::new(9);
    for &(n, k) in &[(1usize, 1usize), (2, 576), (20, 27), (30, 5), (130, 33)] {
        let w = rng.vf32(n * k);
        assert_eq!(unpack_pw(&pack_pw_f32(&w, n, k)), w, "f32 n={n} k={k}");
        let w = rng.vi8(n * k);
        assert_eq!(unpack_pw_i8(&pack_pw_i8(&w, n, k)), w, "i8 n={n} k={k}");
    }
}

#[test]
fn f16_packing_matches_f32() {
    let mut rng = Rng::new(7);
    let wh = to_f16(&rng.vf32(17 * 33));
    let w = widen(&wh);
    let p16 = pack_pw_f16(&wh, 17, 33);
    assert_eq!(widen(&p16.data), pack_pw_f32(&w, 17, 33).data);
    assert_eq!(p16.widen().data, pack_pw_f32(&w, 17, 33).data);
    let d = pack_dw(&wh[..17 * 9], 17, 3);
    assert_eq!(widen(&d.data), pack_dw(&w[..17 * 9], 17, 3).data);
    let c = pack_conv_f16(&wh[..5 * 3 * 9], 5, 3, 3, 3);
    assert_eq!((c.k, c.n), (27, 5));
    assert_eq!(
        widen(&c.data),
        pack_conv_f32(&w[..5 * 3 * 9], 5, 3, 3, 3).data
    );
}
