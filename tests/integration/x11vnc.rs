//! `kvmux snapshot` against x11vnc 0.9.16 (libvncserver 0.9.14) on Xvfb.
//!
//! x11vnc answers with Raw, RRE, CoRRE, Hextile, Zlib, Tight, ZRLE, ZYWRLE and Ultra; it
//! sends Raw for TRLE, ZlibHex, TightPNG (Debian builds libvncserver without libpng) and
//! H.264. It sends the whole screen as one rectangle and falls back to Raw when RRE
//! would be larger, which it is for the photo-like test picture: RRE is tested on the
//! flat picture.

use std::sync::OnceLock;

use kvmux_tests::{VncServer, X11vnc};

use crate::{
    assert_tight_jpeg_close, flat_picture, lossless_tests, picture, reduced_tests, shared, Shown,
    HEIGHT, WIDTH,
};

fn x11vnc() -> &'static Shown<X11vnc> {
    static SERVER: OnceLock<Result<Shown<X11vnc>, String>> = OnceLock::new();
    shared(&SERVER, picture(), || X11vnc::start(WIDTH, HEIGHT))
}

fn x11vnc_flat() -> &'static Shown<X11vnc> {
    static SERVER: OnceLock<Result<Shown<X11vnc>, String>> = OnceLock::new();
    shared(&SERVER, flat_picture(), || X11vnc::start(WIDTH, HEIGHT))
}

lossless_tests! { x11vnc;
    raw: ["--encoding", "raw"];
    corre: ["--encoding", "corre"];
    hextile: ["--encoding", "hextile"];
    zlib: ["--encoding", "zlib"];
    tight_lossless: ["--encoding", "tight"];
    zrle: ["--encoding", "zrle"];
}

lossless_tests! { x11vnc_flat;
    rre_flat: ["--encoding", "rre"];
    corre_flat: ["--encoding", "corre"];
    hextile_flat: ["--encoding", "hextile"];
    tight_flat: ["--encoding", "tight"];
    zrle_flat: ["--encoding", "zrle"];
}

// x11vnc (libvncserver) reduces colours by rounding: level = (value * max + 127) / 255.
reduced_tests! { x11vnc, bias 127;
    rgb565_raw: "rgb565", "raw";
    rgb565_hextile: "rgb565", "hextile";
    rgb565_tight: "rgb565", "tight";
    rgb565_zrle: "rgb565", "zrle";
    rgb555_raw: "rgb555", "raw";
    rgb555_zlib: "rgb555", "zlib";
    // No rgb555 ZRLE: libvncserver 0.9.14 sends raw ZRLE tiles at depth 15 with one byte
    // per pixel instead of two (its 15-bit template sizes CPIXELs as 15 / 8), which no
    // client can decode; kvmux stops with "invalid zrle tile: subencoding N".
    bgr233_raw: "bgr233", "raw";
    bgr233_corre: "bgr233", "corre";
    bgr233_tight: "bgr233", "tight";
    bgr233_zrle: "bgr233", "zrle";
}

#[test]
fn tight_jpeg_quality_8() {
    assert_tight_jpeg_close(x11vnc());
}
