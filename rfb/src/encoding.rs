//! Encoding and pseudo-encoding numbers (the RFB registry, plus kvmux's own).

use std::fmt;

/// An encoding number as carried in SetEncodings and rectangle headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Encoding(pub i32);

impl Encoding {
    pub const RAW: Encoding = Encoding(0);
    pub const COPY_RECT: Encoding = Encoding(1);
    pub const RRE: Encoding = Encoding(2);
    pub const CORRE: Encoding = Encoding(4);
    pub const HEXTILE: Encoding = Encoding(5);
    pub const ZLIB: Encoding = Encoding(6);
    pub const TIGHT: Encoding = Encoding(7);
    pub const ZLIBHEX: Encoding = Encoding(8);
    pub const TRLE: Encoding = Encoding(15);
    pub const ZRLE: Encoding = Encoding(16);
    pub const ZYWRLE: Encoding = Encoding(17);
    pub const JPEG: Encoding = Encoding(21);
    pub const OPEN_H264: Encoding = Encoding(50);
    pub const TIGHT_PNG: Encoding = Encoding(-260);

    /// JPEG quality level 0 (`-32`) to 9 (`-23`).
    pub const fn jpeg_quality(level: u8) -> Encoding {
        Encoding(-32 + level as i32)
    }
    /// Compression level 0 (`-256`) to 9 (`-247`).
    pub const fn compress_level(level: u8) -> Encoding {
        Encoding(-256 + level as i32)
    }

    pub const DESKTOP_SIZE: Encoding = Encoding(-223);
    pub const LAST_RECT: Encoding = Encoding(-224);
    pub const CURSOR: Encoding = Encoding(-239);
    pub const X_CURSOR: Encoding = Encoding(-240);
    pub const QEMU_POINTER_MOTION_CHANGE: Encoding = Encoding(-257);
    pub const QEMU_EXTENDED_KEY_EVENT: Encoding = Encoding(-258);
    pub const QEMU_AUDIO: Encoding = Encoding(-259);
    pub const QEMU_LED_STATE: Encoding = Encoding(-261);
    pub const DESKTOP_NAME: Encoding = Encoding(-307);
    pub const EXTENDED_DESKTOP_SIZE: Encoding = Encoding(-308);
    pub const XVP: Encoding = Encoding(-309);
    pub const FENCE: Encoding = Encoding(-312);
    pub const CONTINUOUS_UPDATES: Encoding = Encoding(-313);
    pub const CURSOR_WITH_ALPHA: Encoding = Encoding(-314);
    pub const EXTENDED_MOUSE_BUTTONS: Encoding = Encoding(-316);
    pub const EXTENDED_CLIPBOARD: Encoding = Encoding(0xc0a1_e5ce_u32 as i32);
    pub const VMWARE_LED_STATE: Encoding = Encoding(0x574d_5668);

    /// kvmux zlib-stream-reset (docs/PROTOCOL.md): on this pseudo-rectangle the client
    /// discards its Zlib, ZRLE and Tight inflater state and starts new streams.
    pub const KVMUX_ZLIB_RESET: Encoding = Encoding(0x4b56_4d01);
    /// kvmux-sources (docs/PROTOCOL.md): the client understands a kvmux proxy's source
    /// list and may send the selection message (75).
    pub const KVMUX_SOURCES: Encoding = Encoding(0x4b56_4d02);

    /// The encodings that carry pixels, with the names `kvmux snapshot --encoding` takes.
    pub const NAMED: &'static [(&'static str, Encoding)] = &[
        ("raw", Encoding::RAW),
        ("copyrect", Encoding::COPY_RECT),
        ("rre", Encoding::RRE),
        ("corre", Encoding::CORRE),
        ("hextile", Encoding::HEXTILE),
        ("zlib", Encoding::ZLIB),
        ("tight", Encoding::TIGHT),
        ("tightpng", Encoding::TIGHT_PNG),
        ("zrle", Encoding::ZRLE),
        ("trle", Encoding::TRLE),
        ("h264", Encoding::OPEN_H264),
    ];

    pub fn from_name(name: &str) -> Option<Encoding> {
        let lower = name.to_ascii_lowercase();
        Encoding::NAMED
            .iter()
            .find(|(n, _)| *n == lower)
            .map(|(_, e)| *e)
    }

    pub fn name(self) -> Option<&'static str> {
        Encoding::NAMED
            .iter()
            .find(|(_, e)| *e == self)
            .map(|(n, _)| *n)
            .or(match self {
                Encoding::DESKTOP_SIZE => Some("DesktopSize"),
                Encoding::LAST_RECT => Some("LastRect"),
                Encoding::CURSOR => Some("Cursor"),
                Encoding::X_CURSOR => Some("XCursor"),
                Encoding::CURSOR_WITH_ALPHA => Some("CursorWithAlpha"),
                Encoding::DESKTOP_NAME => Some("DesktopName"),
                Encoding::EXTENDED_DESKTOP_SIZE => Some("ExtendedDesktopSize"),
                Encoding::QEMU_EXTENDED_KEY_EVENT => Some("QEMUExtendedKeyEvent"),
                Encoding::QEMU_LED_STATE => Some("QEMULEDState"),
                Encoding::QEMU_POINTER_MOTION_CHANGE => Some("QEMUPointerMotionChange"),
                Encoding::VMWARE_LED_STATE => Some("VMwareLEDState"),
                Encoding::XVP => Some("xvp"),
                Encoding::FENCE => Some("Fence"),
                Encoding::CONTINUOUS_UPDATES => Some("ContinuousUpdates"),
                Encoding::EXTENDED_CLIPBOARD => Some("ExtendedClipboard"),
                Encoding::KVMUX_ZLIB_RESET => Some("KvmuxZlibReset"),
                Encoding::KVMUX_SOURCES => Some("KvmuxSources"),
                _ => None,
            })
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "encoding {}", self.0),
        }
    }
}
