//! `kvmux snapshot` against TigerVNC's Xvnc 1.12.
//!
//! Xvnc answers with Raw, RRE, Hextile, Tight and ZRLE (CopyRect only for moves, never
//! in a first update); it sends Raw for Zlib, CoRRE, TRLE, ZYWRLE, TightPNG and H.264.
//! With RRE preferred it uses RRE for few-colour rectangles and Raw for the rest.

use std::sync::OnceLock;

use kvmux_tests::{VncServer, Xvnc, XvncOptions};

use crate::{assert_tight_jpeg_close, lossless_tests, picture, reduced_tests, shared, Shown};

fn xvnc() -> &'static Shown<Xvnc> {
    static SERVER: OnceLock<Result<Shown<Xvnc>, String>> = OnceLock::new();
    shared(&SERVER, picture(), || Xvnc::start(XvncOptions::default()))
}

lossless_tests! { xvnc;
    raw: ["--encoding", "raw"];
    rre: ["--encoding", "rre"];
    hextile: ["--encoding", "hextile"];
    tight_lossless: ["--encoding", "tight"];
    zrle: ["--encoding", "zrle"];
    // CopyRect is never used for a first update; offered with Raw it must not get in the way.
    copyrect_with_raw: ["--encoding", "copyrect", "--encoding", "raw"];
    // Offered in order of preference; Xvnc takes the first it knows.
    zrle_preferred_over_raw: ["--encoding", "zrle", "--encoding", "raw"];
}

// Xvnc reduces colours by rounding: level = (value * max + 128) / 255.
reduced_tests! { xvnc, bias 128;
    rgb565_raw: "rgb565", "raw";
    rgb565_hextile: "rgb565", "hextile";
    rgb565_tight: "rgb565", "tight";
    rgb565_zrle: "rgb565", "zrle";
    rgb555_raw: "rgb555", "raw";
    rgb555_tight: "rgb555", "tight";
    rgb555_zrle: "rgb555", "zrle";
    bgr233_raw: "bgr233", "raw";
    bgr233_hextile: "bgr233", "hextile";
    bgr233_tight: "bgr233", "tight";
    bgr233_zrle: "bgr233", "zrle";
}

#[test]
fn tight_jpeg_quality_8() {
    assert_tight_jpeg_close(xvnc());
}
