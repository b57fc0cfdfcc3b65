//! Keys: X hardware keycodes to the scancodes of QEMU extended key events, and the
//! keysyms of the special key combinations the viewer can send.
//!
//! GDK keyvals are X keysyms, so key events carry the keysym as is. QEMU's extended key
//! event ([rfbproto §7.5.9.1](https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#qemu-extended-key-event-message))
//! adds the key's position as an XT (PC scancode set 1) code, with keys that
//! have an `0xE0` prefix written as `0x80 | code`; with it the server does not have to
//! guess the key from the keysym, and the remote keyboard layout applies.
//!
//! On X11 (and in GDK on Wayland) a hardware keycode is the Linux evdev code plus 8.

/// XT scancode (set 1, `0xE0` prefix folded into bit 7) for each Linux evdev key code
/// below 128; 0 where there is none.
///
/// Codes 1-83 are the original PC/XT keys, whose evdev numbers were taken from their
/// scancodes, so they map to themselves.
const EVDEV_TO_XT: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut code = 1;
    while code <= 83 {
        t[code] = code as u8;
        code += 1;
    }
    t[85] = 0x76; // ZENKAKUHANKAKU
    t[86] = 0x56; // 102ND (the key left of Z on ISO keyboards)
    t[87] = 0x57; // F11
    t[88] = 0x58; // F12
    t[89] = 0x73; // RO
    t[90] = 0x78; // KATAKANA
    t[91] = 0x77; // HIRAGANA
    t[92] = 0x79; // HENKAN
    t[93] = 0x70; // KATAKANAHIRAGANA
    t[94] = 0x7b; // MUHENKAN
    t[95] = 0x5c; // KPJPCOMMA
    t[96] = 0x9c; // KPENTER: E0 1C
    t[97] = 0x9d; // RIGHTCTRL: E0 1D
    t[98] = 0xb5; // KPSLASH: E0 35
    t[99] = 0xb7; // SYSRQ (Print Screen): E0 37
    t[100] = 0xb8; // RIGHTALT: E0 38
    t[102] = 0xc7; // HOME: E0 47
    t[103] = 0xc8; // UP: E0 48
    t[104] = 0xc9; // PAGEUP: E0 49
    t[105] = 0xcb; // LEFT: E0 4B
    t[106] = 0xcd; // RIGHT: E0 4D
    t[107] = 0xcf; // END: E0 4F
    t[108] = 0xd0; // DOWN: E0 50
    t[109] = 0xd1; // PAGEDOWN: E0 51
    t[110] = 0xd2; // INSERT: E0 52
    t[111] = 0xd3; // DELETE: E0 53
    t[113] = 0xa0; // MUTE: E0 20
    t[114] = 0xae; // VOLUMEDOWN: E0 2E
    t[115] = 0xb0; // VOLUMEUP: E0 30
    t[116] = 0xde; // POWER: E0 5E
    t[117] = 0x59; // KPEQUAL
    t[119] = 0xc6; // PAUSE (as QEMU numbers it)
    t[121] = 0x7e; // KPCOMMA
    t[124] = 0x7d; // YEN
    t[125] = 0xdb; // LEFTMETA: E0 5B
    t[126] = 0xdc; // RIGHTMETA: E0 5C
    t[127] = 0xdd; // COMPOSE (Menu): E0 5D
    t
};

/// The QEMU scancode of an X hardware keycode, if the key has one.
pub fn x_keycode_to_qemu(keycode: u32) -> Option<u32> {
    let evdev = keycode.checked_sub(8)?;
    let xt = *EVDEV_TO_XT.get(usize::try_from(evdev).ok()?)?;
    (xt != 0).then_some(u32::from(xt))
}

/// X keysyms used by the viewer's key combinations.
pub mod keysym {
    pub const CONTROL_L: u32 = 0xffe3;
    pub const ALT_L: u32 = 0xffe9;
    pub const SHIFT_L: u32 = 0xffe1;
    pub const SUPER_L: u32 = 0xffeb;
    pub const DELETE: u32 = 0xffff;
    pub const BACKSPACE: u32 = 0xff08;
    pub const PRINT: u32 = 0xff61;
    pub const SYS_REQ: u32 = 0xff15;
    pub const ESCAPE: u32 = 0xff1b;
    /// F1; F2..F12 follow.
    pub const F1: u32 = 0xffbe;
}

/// One key of a combination: keysym and QEMU scancode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub keysym: u32,
    pub scancode: u32,
}

impl Key {
    pub const CONTROL: Key = Key {
        keysym: keysym::CONTROL_L,
        scancode: 0x1d,
    };
    pub const ALT: Key = Key {
        keysym: keysym::ALT_L,
        scancode: 0x38,
    };
    pub const SHIFT: Key = Key {
        keysym: keysym::SHIFT_L,
        scancode: 0x2a,
    };
    pub const SUPER: Key = Key {
        keysym: keysym::SUPER_L,
        scancode: 0xdb,
    };
    pub const DELETE: Key = Key {
        keysym: keysym::DELETE,
        scancode: 0xd3,
    };
    pub const BACKSPACE: Key = Key {
        keysym: keysym::BACKSPACE,
        scancode: 0x0e,
    };
    pub const PRINT: Key = Key {
        keysym: keysym::PRINT,
        scancode: 0xb7,
    };
    pub const ESCAPE: Key = Key {
        keysym: keysym::ESCAPE,
        scancode: 0x01,
    };

    /// F1 to F12 (`n` in 1..=12).
    pub fn function(n: u8) -> Option<Key> {
        let scancode = match n {
            1..=10 => 0x3a + u32::from(n), // F1 = 0x3B .. F10 = 0x44
            11 => 0x57,
            12 => 0x58,
            _ => return None,
        };
        Some(Key {
            keysym: keysym::F1 + u32::from(n) - 1,
            scancode,
        })
    }
}

/// A key combination to send: pressed in order, released in reverse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combination {
    /// What menus call it, e.g. `Ctrl+Alt+Del`.
    pub label: String,
    pub keys: Vec<Key>,
}

/// The combinations of the "send keys" menu.
pub fn special_combinations() -> Vec<Combination> {
    let combo = |label: &str, keys: &[Key]| Combination {
        label: label.to_owned(),
        keys: keys.to_vec(),
    };
    let mut list = vec![
        combo("Ctrl+Alt+Del", &[Key::CONTROL, Key::ALT, Key::DELETE]),
        combo(
            "Ctrl+Alt+Backspace",
            &[Key::CONTROL, Key::ALT, Key::BACKSPACE],
        ),
        combo("Print Screen", &[Key::PRINT]),
        combo("Super", &[Key::SUPER]),
        combo("Ctrl+Esc", &[Key::CONTROL, Key::ESCAPE]),
    ];
    for n in 1..=12 {
        if let Some(f) = Key::function(n) {
            list.push(combo(
                &format!("Ctrl+Alt+F{n}"),
                &[Key::CONTROL, Key::ALT, f],
            ));
        }
    }
    list
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// X keycodes of a US PC keyboard under evdev (`xmodmap -pke`) and the XT set-1 make
    /// codes of those keys (IBM PC AT technical reference; `E0`-prefixed keys as 0x80|code).
    #[test]
    fn x_keycodes_to_xt_scancodes() {
        let table: [(u32, &str, Option<u32>); 22] = [
            (9, "Escape", Some(0x01)),
            (10, "1", Some(0x02)),
            (22, "BackSpace", Some(0x0e)),
            (23, "Tab", Some(0x0f)),
            (24, "q", Some(0x10)),
            (36, "Return", Some(0x1c)),
            (37, "Control_L", Some(0x1d)),
            (38, "a", Some(0x1e)),
            (50, "Shift_L", Some(0x2a)),
            (52, "z", Some(0x2c)),
            (64, "Alt_L", Some(0x38)),
            (65, "space", Some(0x39)),
            (67, "F1", Some(0x3b)),
            (95, "F11", Some(0x57)),
            (104, "KP_Enter", Some(0x9c)),
            (105, "Control_R", Some(0x9d)),
            (108, "Alt_R", Some(0xb8)),
            (111, "Up", Some(0xc8)),
            (119, "Delete", Some(0xd3)),
            (133, "Super_L", Some(0xdb)),
            (7, "(below the first keycode)", None),
            (300, "(past the table)", None),
        ];
        for (keycode, name, want) in table {
            assert_eq!(
                x_keycode_to_qemu(keycode),
                want,
                "keycode {keycode} ({name})"
            );
        }
    }

    #[test]
    fn function_keys() {
        let f1 = Key::function(1).unwrap();
        let f10 = Key::function(10).unwrap();
        let f12 = Key::function(12).unwrap();
        assert_eq!((f1.keysym, f1.scancode), (0xffbe, 0x3b));
        assert_eq!((f10.keysym, f10.scancode), (0xffc7, 0x44));
        assert_eq!((f12.keysym, f12.scancode), (0xffc9, 0x58));
        assert_eq!(Key::function(13), None);
    }

    #[test]
    fn combinations_match_the_keyboard_table() {
        // The fixed scancodes agree with what the keycode table gives the same keys.
        for (key, keycode) in [
            (Key::CONTROL, 37),
            (Key::ALT, 64),
            (Key::SHIFT, 50),
            (Key::DELETE, 119),
            (Key::BACKSPACE, 22),
            (Key::PRINT, 107),
            (Key::ESCAPE, 9),
            (Key::SUPER, 133),
        ] {
            assert_eq!(x_keycode_to_qemu(keycode), Some(key.scancode), "{key:?}");
        }
        let list = special_combinations();
        assert_eq!(list[0].label, "Ctrl+Alt+Del");
        assert_eq!(list.len(), 5 + 12);
    }
}
