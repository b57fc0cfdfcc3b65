//! Hotkeys that switch a client between sources.
//!
//! A binding is either a chord, `ctrl+alt+right` (the last key pressed while the
//! others, and nothing else, are held), or a tap sequence, `ctrl ctrl 2` (each key
//! but the last pressed and released on its own, each press within
//! [`TAP_INTERVAL`] of the previous one; the last key triggers on press). Keys are
//! named as in [`Key`]'s `FromStr`; key events carry X keysyms ([RFB KeyEvent]).
//!
//! Matching is a pure state machine: [`HotkeyState::key`] takes each key event of
//! one client together with the time it arrived and says whether to forward it,
//! swallow it or switch. Keys that lead up to a binding are forwarded (a tapped
//! ctrl reaches the machine, which is harmless); the press that completes a
//! binding and its release are not.
//!
//! [RFB KeyEvent]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#keyevent

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// The longest gap between the presses of a tap sequence.
pub const TAP_INTERVAL: Duration = Duration::from_secs(1);

/// The most keys a chord or a tap sequence may have.
pub const MAX_KEYS: usize = 8;

/// Named keys and the keysyms each matches (X11 keysymdef.h).
const NAMED_KEYS: &[(&str, &[u32])] = &[
    ("ctrl", &[0xffe3, 0xffe4]),                // Control_L, Control_R
    ("alt", &[0xffe9, 0xffea, 0xffe7, 0xffe8]), // Alt_L, Alt_R, Meta_L, Meta_R
    ("shift", &[0xffe1, 0xffe2]),               // Shift_L, Shift_R
    ("super", &[0xffeb, 0xffec]),               // Super_L, Super_R
    ("altgr", &[0xfe03]),                       // ISO_Level3_Shift
    ("scroll_lock", &[0xff14]),
    ("pause", &[0xff13]),
    ("print", &[0xff61]),
    ("escape", &[0xff1b]),
    ("tab", &[0xff09]),
    ("space", &[0x0020]),
    ("return", &[0xff0d]),
    ("insert", &[0xff63]),
    ("delete", &[0xffff]),
    ("home", &[0xff50]),
    ("end", &[0xff57]),
    ("page_up", &[0xff55]),
    ("page_down", &[0xff56]),
    ("left", &[0xff51]),
    ("up", &[0xff52]),
    ("right", &[0xff53]),
    ("down", &[0xff54]),
];

// Entries of NAMED_KEYS the defaults use (checked by a test).
const CTRL: Key = Key::Named(0);
const LEFT: Key = Key::Named(18);
const RIGHT: Key = Key::Named(20);

/// `F1`; F1..F12 are consecutive.
const KEYSYM_F1: u32 = 0xffbe;
/// `KP_0`; KP_0..KP_9 are consecutive.
const KEYSYM_KP_0: u32 = 0xffb0;

/// One key of a binding. It may match several keysyms: `ctrl` is either Control
/// key, `a` either case, `1` the digit or the keypad digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// An entry of the named-key table (its index).
    Named(usize),
    /// `a`..`z`.
    Letter(u8),
    /// `0`..`9`.
    Digit(u8),
    /// `f1`..`f12`.
    Function(u8),
    /// `keysym:0xNNNN`: exactly that keysym.
    Keysym(u32),
}

impl Key {
    /// Whether a key event with `keysym` is this key.
    pub fn matches(self, keysym: u32) -> bool {
        match self {
            Key::Named(i) => NAMED_KEYS
                .get(i)
                .is_some_and(|(_, keysyms)| keysyms.contains(&keysym)),
            Key::Letter(c) => keysym == u32::from(c) || keysym == u32::from(c.to_ascii_uppercase()),
            Key::Digit(d) => keysym == u32::from(b'0' + d) || keysym == KEYSYM_KP_0 + u32::from(d),
            Key::Function(n) => keysym == KEYSYM_F1 + u32::from(n) - 1,
            Key::Keysym(k) => keysym == k,
        }
    }
}

impl FromStr for Key {
    type Err = String;
    fn from_str(s: &str) -> Result<Key, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = NAMED_KEYS.iter().position(|(name, _)| *name == lower) {
            return Ok(Key::Named(i));
        }
        if let [c] = lower.as_bytes() {
            match c {
                b'a'..=b'z' => return Ok(Key::Letter(*c)),
                b'0'..=b'9' => return Ok(Key::Digit(c - b'0')),
                _ => {}
            }
        }
        if let Some(n) = lower.strip_prefix('f').and_then(|n| n.parse::<u8>().ok()) {
            if (1..=12).contains(&n) && !lower.starts_with("f0") {
                return Ok(Key::Function(n));
            }
        }
        if let Some(hex) = lower.strip_prefix("keysym:") {
            return match hex.strip_prefix("0x").map(|h| u32::from_str_radix(h, 16)) {
                Some(Ok(k)) if k != 0 => Ok(Key::Keysym(k)),
                _ => Err(format!(
                    "invalid keysym '{s}' (expected keysym:0x followed by hex digits)"
                )),
            };
        }
        Err(format!(
            "unknown key '{s}' (expected ctrl, alt, shift, super, a letter, a digit, f1..f12, \
             a name such as scroll_lock, pause, left or right, or keysym:0xNNNN)"
        ))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Key::Named(i) => match NAMED_KEYS.get(i) {
                Some((name, _)) => f.write_str(name),
                None => write!(f, "key{i}"),
            },
            Key::Letter(c) => write!(f, "{}", char::from(c)),
            Key::Digit(d) => write!(f, "{d}"),
            Key::Function(n) => write!(f, "f{n}"),
            Key::Keysym(k) => write!(f, "keysym:0x{k:04x}"),
        }
    }
}

/// The keys of a binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCombo {
    /// `ctrl+alt+f2`: the last key pressed while exactly the others are held. A
    /// single key (`pause`) is a chord of one: pressed while nothing else is held.
    Chord(Vec<Key>),
    /// `ctrl ctrl 2`: each key but the last tapped on its own, then the last pressed.
    Taps(Vec<Key>),
}

impl KeyCombo {
    fn keys(&self) -> &[Key] {
        match self {
            KeyCombo::Chord(keys) | KeyCombo::Taps(keys) => keys,
        }
    }
}

impl FromStr for KeyCombo {
    type Err = String;
    fn from_str(s: &str) -> Result<KeyCombo, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let chord = match words[..] {
            [] => return Err("no keys given".into()),
            [_] => true,
            _ if words.iter().any(|w| w.contains('+')) => {
                return Err(format!(
                    "'{s}' mixes a chord ('+') and a tap sequence (spaces); use one or the other"
                ))
            }
            _ => false,
        };
        let names: Vec<&str> = if chord {
            words[0].split('+').collect()
        } else {
            words
        };
        if names.len() > MAX_KEYS {
            return Err(format!("'{s}' has more than {MAX_KEYS} keys"));
        }
        let keys = names
            .iter()
            .map(|name| match *name {
                "" => Err(format!("'{s}' has an empty key name")),
                name => name.parse::<Key>(),
            })
            .collect::<Result<Vec<Key>, String>>()?;
        if chord {
            let mut keys = keys;
            for (i, key) in keys.iter().enumerate() {
                if keys[..i].contains(key) {
                    return Err(format!("'{s}' names {key} twice"));
                }
            }
            // The held keys in one order (ctrl, alt, shift, super, ...), so that
            // `alt+ctrl+x` and `ctrl+alt+x` are the same chord.
            if let Some((_, held)) = keys.split_last_mut() {
                held.sort();
            }
            Ok(KeyCombo::Chord(keys))
        } else {
            Ok(KeyCombo::Taps(keys))
        }
    }
}

impl fmt::Display for KeyCombo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let separator = match self {
            KeyCombo::Chord(_) => "+",
            KeyCombo::Taps(_) => " ",
        };
        for (i, key) in self.keys().iter().enumerate() {
            if i > 0 {
                f.write_str(separator)?;
            }
            write!(f, "{key}")?;
        }
        Ok(())
    }
}

/// What a binding in the configuration switches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The source with this name.
    Source(String),
    Next,
    Previous,
}

/// A binding as configured: keys and a source named, not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub keys: KeyCombo,
    pub target: Target,
}

/// What a triggered hotkey asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Switch to the source at this index in the configuration.
    Source(usize),
    /// The next source, wrapping around.
    Next,
    /// The previous source, wrapping around.
    Previous,
}

/// The hotkeys in effect, with sources resolved to indices.
#[derive(Debug, Clone)]
pub struct Hotkeys {
    bindings: Vec<(KeyCombo, Action)>,
    source_names: Vec<String>,
    /// The most completed taps any tap sequence needs to look back at.
    tap_history: usize,
}

impl Hotkeys {
    /// Resolves `bindings` against the sources. With `defaults`, the default
    /// bindings (see [`default_bindings`]) are added after them, except those
    /// whose keys a configured binding already uses.
    pub fn new(bindings: &[Binding], defaults: bool, source_names: &[String]) -> Result<Hotkeys> {
        let mut resolved: Vec<(KeyCombo, Action)> = Vec::new();
        for binding in bindings {
            if resolved.iter().any(|(keys, _)| *keys == binding.keys) {
                bail!("hotkey '{}' is bound twice", binding.keys);
            }
            let action = match &binding.target {
                Target::Next => Action::Next,
                Target::Previous => Action::Previous,
                Target::Source(name) => match source_names.iter().position(|n| n == name) {
                    Some(i) => Action::Source(i),
                    None => bail!("hotkey '{}' names an unknown source '{name}'", binding.keys),
                },
            };
            resolved.push((binding.keys.clone(), action));
        }
        if defaults {
            for (keys, action) in default_bindings(source_names.len()) {
                if !resolved.iter().any(|(k, _)| *k == keys) {
                    resolved.push((keys, action));
                }
            }
        }
        let tap_history = resolved
            .iter()
            .map(|(keys, _)| match keys {
                KeyCombo::Taps(keys) => keys.len() - 1,
                KeyCombo::Chord(_) => 0,
            })
            .max()
            .unwrap_or(0);
        Ok(Hotkeys {
            bindings: resolved,
            source_names: source_names.to_vec(),
            tap_history,
        })
    }

    /// One line per binding, e.g. `ctrl ctrl 1: switch to db1`.
    pub fn describe(&self) -> Vec<String> {
        self.bindings
            .iter()
            .map(|(keys, action)| match action {
                Action::Source(i) => {
                    let name = self.source_names.get(*i).map_or("?", String::as_str);
                    format!("{keys}: switch to {name}")
                }
                Action::Next => format!("{keys}: next source"),
                Action::Previous => format!("{keys}: previous source"),
            })
            .collect()
    }
}

/// `ctrl ctrl 1`..`ctrl ctrl 9` for the first nine sources, `ctrl ctrl left` and
/// `ctrl ctrl right` for the previous and next source.
pub fn default_bindings(sources: usize) -> Vec<(KeyCombo, Action)> {
    let mut bindings: Vec<(KeyCombo, Action)> = (0..sources.min(9))
        .map(|i| {
            // INVARIANT: i < 9, so the digit is 1..=9.
            let digit = Key::Digit(i as u8 + 1);
            (KeyCombo::Taps(vec![CTRL, CTRL, digit]), Action::Source(i))
        })
        .collect();
    bindings.push((KeyCombo::Taps(vec![CTRL, CTRL, LEFT]), Action::Previous));
    bindings.push((KeyCombo::Taps(vec![CTRL, CTRL, RIGHT]), Action::Next));
    bindings
}

/// What to do with a key event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOutcome {
    /// Send it on to the current source.
    Forward,
    /// Drop it: the release (or a repeat) of a key that triggered a hotkey.
    Swallow,
    /// Drop it and switch: this press completed a binding.
    Trigger(Action),
}

/// A completed tap: a key pressed and released with no other key event between.
#[derive(Debug, Clone, Copy)]
struct Tap {
    keysym: u32,
    pressed: Instant,
}

/// Hotkey matching for one client's keyboard.
#[derive(Debug, Clone, Default)]
pub struct HotkeyState {
    /// Keys down now, in the order they were pressed.
    held: Vec<u32>,
    /// Completed taps, oldest first, at most `Hotkeys::tap_history` of them.
    taps: Vec<Tap>,
    /// The key pressed last, if nothing else has happened since: it becomes a tap
    /// when it is released.
    pending: Option<Tap>,
    /// Keys that triggered a binding and are still down: their repeats and
    /// release are swallowed.
    swallowed: Vec<u32>,
}

/// Bound for `held`: a keyboard reports few keys at once, a peer could claim more.
const MAX_HELD: usize = 32;

impl HotkeyState {
    #[cfg(test)]
    pub fn new() -> HotkeyState {
        HotkeyState::default()
    }

    /// Feeds one key event that arrived at `now`.
    pub fn key(&mut self, hk: &Hotkeys, keysym: u32, down: bool, now: Instant) -> KeyOutcome {
        if !down {
            self.held.retain(|&k| k != keysym);
            if let Some(tap) = self.pending.take() {
                if tap.keysym == keysym && hk.tap_history > 0 {
                    while self.taps.len() >= hk.tap_history {
                        self.taps.remove(0);
                    }
                    self.taps.push(tap);
                } else {
                    self.taps.clear();
                }
            }
            return match self.swallowed.iter().position(|&k| k == keysym) {
                Some(i) => {
                    self.swallowed.swap_remove(i);
                    KeyOutcome::Swallow
                }
                None => KeyOutcome::Forward,
            };
        }

        if self.held.contains(&keysym) {
            // Auto-repeat: a held key is not a tap and completes nothing.
            self.pending = None;
            self.taps.clear();
            return if self.swallowed.contains(&keysym) {
                KeyOutcome::Swallow
            } else {
                KeyOutcome::Forward
            };
        }

        let action = hk
            .bindings
            .iter()
            .find(|(keys, _)| self.completes(keys, keysym, now))
            .map(|(_, action)| *action);

        // A press with another key held can be part of a chord but not a tap.
        let alone = self.held.is_empty();
        if self.held.len() < MAX_HELD {
            self.held.push(keysym);
        }
        match action {
            Some(action) => {
                self.pending = None;
                self.taps.clear();
                if self.swallowed.len() < MAX_HELD {
                    self.swallowed.push(keysym);
                }
                KeyOutcome::Trigger(action)
            }
            None => {
                if alone {
                    self.pending = Some(Tap {
                        keysym,
                        pressed: now,
                    });
                } else {
                    self.pending = None;
                    self.taps.clear();
                }
                KeyOutcome::Forward
            }
        }
    }

    /// Whether pressing `keysym` at `now` completes `combo`.
    fn completes(&self, combo: &KeyCombo, keysym: u32, now: Instant) -> bool {
        match combo {
            KeyCombo::Chord(keys) => {
                let Some((last, others)) = keys.split_last() else {
                    return false;
                };
                last.matches(keysym)
                    && others
                        .iter()
                        .all(|key| self.held.iter().any(|&held| key.matches(held)))
                    && self
                        .held
                        .iter()
                        .all(|&held| others.iter().any(|key| key.matches(held)))
            }
            KeyCombo::Taps(keys) => {
                let Some((last, tapped)) = keys.split_last() else {
                    return false;
                };
                if !self.held.is_empty() || !last.matches(keysym) || self.taps.len() < tapped.len()
                {
                    return false;
                }
                let taps = &self.taps[self.taps.len() - tapped.len()..];
                let mut next_press = now;
                for (key, tap) in tapped.iter().zip(taps).rev() {
                    if !key.matches(tap.keysym)
                        || next_press.saturating_duration_since(tap.pressed) > TAP_INTERVAL
                    {
                        return false;
                    }
                    next_press = tap.pressed;
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTRL_L: u32 = 0xffe3;
    const CTRL_R: u32 = 0xffe4;
    const ALT_L: u32 = 0xffe9;
    const META_L: u32 = 0xffe7;
    const SHIFT_L: u32 = 0xffe1;
    const LEFT: u32 = 0xff51;
    const RIGHT: u32 = 0xff53;
    const F2: u32 = 0xffbf;
    const KP_2: u32 = 0xffb2;
    const SCROLL_LOCK: u32 = 0xff14;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("m{i}")).collect()
    }

    fn binding(keys: &str, target: Target) -> Binding {
        Binding {
            keys: keys.parse().expect("test binding parses"),
            target,
        }
    }

    /// Plays `(keysym, down, milliseconds since start)` events and returns the outcomes.
    fn play(hk: &Hotkeys, events: &[(u32, bool, u64)]) -> Vec<KeyOutcome> {
        let start = Instant::now();
        let mut state = HotkeyState::new();
        events
            .iter()
            .map(|&(k, down, ms)| state.key(hk, k, down, start + Duration::from_millis(ms)))
            .collect()
    }

    use KeyOutcome::{Forward as F, Swallow as S, Trigger as T};

    #[test]
    fn key_names() {
        let cases: &[(&str, &[u32], &[u32])] = &[
            ("ctrl", &[0xffe3, 0xffe4], &[0xffe1, 0x63]),
            ("alt", &[0xffe9, 0xffea, 0xffe7, 0xffe8], &[0xffe3]),
            ("shift", &[0xffe1, 0xffe2], &[0xffe3]),
            ("super", &[0xffeb, 0xffec], &[0xffe7]),
            ("scroll_lock", &[0xff14], &[0xff13]),
            ("Scroll_Lock", &[0xff14], &[]),
            ("pause", &[0xff13], &[0xff14]),
            ("left", &[0xff51], &[0xff53]),
            ("right", &[0xff53], &[]),
            ("up", &[0xff52], &[]),
            ("down", &[0xff54], &[]),
            ("f1", &[0xffbe], &[0xffbf]),
            ("F12", &[0xffc9], &[0xffc8]),
            ("0", &[0x30, 0xffb0], &[0x31]),
            ("7", &[0x37, 0xffb7], &[0xffb0]),
            ("a", &[0x61, 0x41], &[0x62]),
            ("Z", &[0x7a, 0x5a], &[]),
            ("keysym:0x1008ff13", &[0x1008ff13], &[0xff13]),
            ("keysym:0xFF14", &[0xff14], &[]),
        ];
        for (name, yes, no) in cases {
            let key: Key = name.parse().unwrap_or_else(|e| panic!("{name}: {e}"));
            for k in *yes {
                assert!(key.matches(*k), "{name} should match 0x{k:x}");
            }
            for k in *no {
                assert!(!key.matches(*k), "{name} should not match 0x{k:x}");
            }
        }
    }

    #[test]
    fn default_keys_are_the_named_ones() {
        assert_eq!(
            (
                CTRL.to_string(),
                super::LEFT.to_string(),
                super::RIGHT.to_string()
            ),
            ("ctrl".into(), "left".into(), "right".into())
        );
        assert_eq!(
            Key::Named(usize::MAX).to_string(),
            format!("key{}", usize::MAX)
        );
        assert!(!Key::Named(usize::MAX).matches(0xffe3));
    }

    #[test]
    fn bad_key_names() {
        for name in [
            "ctl",
            "f0",
            "f13",
            "f01",
            "keysym:ff14",
            "keysym:0x",
            "keysym:0xzz",
            "aa",
            "",
            "keysym:0x0",
        ] {
            let err = name.parse::<Key>().expect_err(name);
            assert!(err.contains(&format!("'{name}'")), "{name}: {err}");
        }
        for combo in [
            "",
            "ctrl+",
            "ctrl+alt ctrl",
            "ctrl+ctrl",
            "ctrl ctl 1",
            "a b c d e f g h i",
        ] {
            assert!(
                combo.parse::<KeyCombo>().is_err(),
                "{combo:?} should not parse"
            );
        }
    }

    #[test]
    fn combos_parse_and_display() {
        let ctrl = Key::Named(0);
        assert_eq!(
            "ctrl ctrl 2".parse::<KeyCombo>(),
            Ok(KeyCombo::Taps(vec![ctrl, ctrl, Key::Digit(2)]))
        );
        assert_eq!(
            "Ctrl+Alt+F2".parse::<KeyCombo>(),
            Ok(KeyCombo::Chord(vec![ctrl, Key::Named(1), Key::Function(2)]))
        );
        assert_eq!(
            "pause".parse::<KeyCombo>(),
            Ok(KeyCombo::Chord(vec![Key::Named(6)]))
        );
        for (text, shown) in [
            ("ctrl ctrl 2", "ctrl ctrl 2"),
            (
                "  scroll_lock   scroll_lock  1 ",
                "scroll_lock scroll_lock 1",
            ),
            ("CTRL+alt+Right", "ctrl+alt+right"),
            ("keysym:0xFF13", "keysym:0xff13"),
            ("keysym:0x41", "keysym:0x0041"),
            ("super+A", "super+a"),
            ("alt+ctrl+f2", "ctrl+alt+f2"),
            ("shift+super+ctrl+x", "ctrl+shift+super+x"),
        ] {
            let combo: KeyCombo = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(combo.to_string(), shown);
        }
    }

    #[test]
    #[rustfmt::skip]
    fn default_taps() {
        let hk = Hotkeys::new(&[], true, &names(3)).expect("defaults");
        // ctrl ctrl 2 → the second source; both ctrl taps reach the machine.
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (CTRL_L, false, 80), (CTRL_L, true, 200), (CTRL_L, false, 280), (0x32, true, 400), (0x32, false, 480)]),
            [F, F, F, F, T(Action::Source(1)), S]
        );
        // Left and right control both count, and the keypad digit too.
        assert_eq!(
            play(&hk, &[(CTRL_R, true, 0), (CTRL_R, false, 50), (CTRL_L, true, 100), (CTRL_L, false, 150), (KP_2, true, 200), (KP_2, false, 250)]),
            [F, F, F, F, T(Action::Source(1)), S]
        );
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (CTRL_L, false, 50), (CTRL_L, true, 100), (CTRL_L, false, 150), (RIGHT, true, 200), (RIGHT, false, 250)]),
            [F, F, F, F, T(Action::Next), S]
        );
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (CTRL_L, false, 50), (CTRL_L, true, 100), (CTRL_L, false, 150), (LEFT, true, 200), (LEFT, false, 250)]),
            [F, F, F, F, T(Action::Previous), S]
        );
        // Only the sources that exist: there is no fourth.
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (CTRL_L, false, 50), (CTRL_L, true, 100), (CTRL_L, false, 150), (0x34, true, 200), (0x34, false, 250)]),
            [F, F, F, F, F, F]
        );
    }

    #[test]
    #[rustfmt::skip]
    fn taps_too_slow() {
        let hk = Hotkeys::new(&[], true, &names(3)).expect("defaults");
        // 1.2 s between the two ctrl presses.
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (CTRL_L, false, 50), (CTRL_L, true, 1200), (CTRL_L, false, 1250), (0x32, true, 1300)]),
            [F, F, F, F, F]
        );
        // 1.1 s between the second ctrl and the digit.
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (CTRL_L, false, 50), (CTRL_L, true, 500), (CTRL_L, false, 550), (0x32, true, 1600)]),
            [F, F, F, F, F]
        );
        // Held for two seconds before the release: not a tap.
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (CTRL_L, false, 2000), (CTRL_L, true, 2100), (CTRL_L, false, 2150), (0x32, true, 2200)]),
            [F, F, F, F, F]
        );
        // Exactly one second apart still counts.
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (CTRL_L, false, 50), (CTRL_L, true, 1000), (CTRL_L, false, 1050), (0x32, true, 2000)]),
            [F, F, F, F, T(Action::Source(1))]
        );
    }

    #[test]
    #[rustfmt::skip]
    fn another_key_breaks_taps() {
        let hk = Hotkeys::new(&[], true, &names(3)).expect("defaults");
        // A tap of 'x' between the ctrl taps.
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (CTRL_L, false, 50), (0x78, true, 100), (0x78, false, 150), (CTRL_L, true, 200), (CTRL_L, false, 250), (0x32, true, 300)]),
            [F, F, F, F, F, F, F]
        );
        // Shift pressed during the second ctrl tap.
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (CTRL_L, false, 50), (CTRL_L, true, 100), (SHIFT_L, true, 120), (SHIFT_L, false, 130), (CTRL_L, false, 150), (0x32, true, 200)]),
            [F, F, F, F, F, F, F]
        );
        // The digit pressed while shift is held.
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (CTRL_L, false, 50), (CTRL_L, true, 100), (CTRL_L, false, 150), (SHIFT_L, true, 160), (0x32, true, 200)]),
            [F, F, F, F, F, F]
        );
        // Three taps then the digit still completes the last two taps and the digit.
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (CTRL_L, false, 50), (CTRL_L, true, 100), (CTRL_L, false, 150), (CTRL_L, true, 200), (CTRL_L, false, 250), (0x33, true, 300)]),
            [F, F, F, F, F, F, T(Action::Source(2))]
        );
    }

    #[test]
    #[rustfmt::skip]
    fn key_repeat_is_not_a_tap() {
        let hk = Hotkeys::new(&[], true, &names(3)).expect("defaults");
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (CTRL_L, false, 50), (CTRL_L, true, 100), (CTRL_L, true, 130), (CTRL_L, true, 160), (CTRL_L, false, 200), (0x32, true, 300)]),
            [F, F, F, F, F, F, F]
        );
        // A repeating trigger key is swallowed until it is released.
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (CTRL_L, false, 50), (CTRL_L, true, 100), (CTRL_L, false, 150), (0x32, true, 200), (0x32, true, 700), (0x32, true, 730), (0x32, false, 800), (0x32, true, 900)]),
            [F, F, F, F, T(Action::Source(1)), S, S, S, F]
        );
    }

    #[test]
    #[rustfmt::skip]
    fn taps_start_again_after_a_trigger() {
        let hk = Hotkeys::new(&[], true, &names(3)).expect("defaults");
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (CTRL_L, false, 50), (CTRL_L, true, 100), (CTRL_L, false, 150), (0x32, true, 200), (0x32, false, 250), (0x33, true, 300), (0x33, false, 350), (CTRL_L, true, 400), (CTRL_L, false, 450), (CTRL_L, true, 500), (CTRL_L, false, 550), (0x33, true, 600), (0x33, false, 650)]),
            [F, F, F, F, T(Action::Source(1)), S, F, F, F, F, F, F, T(Action::Source(2)), S]
        );
    }

    #[test]
    #[rustfmt::skip]
    fn chords_in_any_order() {
        let binds = [binding("ctrl+alt+f2", Target::Source("m2".into()))];
        let hk = Hotkeys::new(&binds, false, &names(2)).expect("bindings");
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (ALT_L, true, 10), (F2, true, 20), (F2, false, 30), (ALT_L, false, 40), (CTRL_L, false, 50)]),
            [F, F, T(Action::Source(1)), S, F, F]
        );
        // Alt first, as Meta, with the right control key; any timing.
        assert_eq!(
            play(&hk, &[(META_L, true, 0), (CTRL_R, true, 5000), (F2, true, 9000), (CTRL_R, false, 9100), (F2, false, 9200), (META_L, false, 9300)]),
            [F, F, T(Action::Source(1)), F, S, F]
        );
        // Another modifier held as well: not this chord.
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (SHIFT_L, true, 5), (ALT_L, true, 10), (F2, true, 20)]),
            [F, F, F, F]
        );
        // A modifier missing, or the last key pressed first.
        assert_eq!(play(&hk, &[(CTRL_L, true, 0), (F2, true, 20)]), [F, F]);
        assert_eq!(
            play(&hk, &[(F2, true, 0), (CTRL_L, true, 10), (ALT_L, true, 20)]),
            [F, F, F]
        );
        // Defaults off: ctrl ctrl 1 is ordinary typing.
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (CTRL_L, false, 50), (CTRL_L, true, 100), (CTRL_L, false, 150), (0x31, true, 200)]),
            [F, F, F, F, F]
        );
    }

    #[test]
    #[rustfmt::skip]
    fn ordinary_typing_is_forwarded() {
        let binds = [binding("ctrl+alt+right", Target::Next)];
        let hk = Hotkeys::new(&binds, true, &names(9)).expect("bindings");
        // ctrl+c, then "2", then "hi", then ctrl+right (word jump).
        let events = [
            (CTRL_L, true, 0), (0x63, true, 50), (0x63, false, 90), (CTRL_L, false, 120),
            (0x32, true, 300), (0x32, false, 350),
            (0x68, true, 400), (0x68, false, 420), (0x69, true, 440), (0x69, false, 460),
            (CTRL_L, true, 500), (RIGHT, true, 550), (RIGHT, false, 600), (CTRL_L, false, 650),
            (SHIFT_L, true, 700), (0x41, true, 720), (0x41, false, 740), (SHIFT_L, false, 760),
        ];
        let out = play(&hk, &events);
        assert!(out.iter().all(|o| *o == F), "{out:?}");
        // A single ctrl tap before a digit is not enough either.
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (CTRL_L, false, 50), (0x31, true, 100)]),
            [F, F, F]
        );
    }

    #[test]
    #[rustfmt::skip]
    fn configured_bindings() {
        let binds = [
            binding("scroll_lock scroll_lock 1", Target::Source("m3".into())),
            binding("ctrl ctrl right", Target::Previous),
            binding("pause", Target::Next),
        ];
        let hk = Hotkeys::new(&binds, true, &names(3)).expect("bindings");
        assert_eq!(
            play(&hk, &[(SCROLL_LOCK, true, 0), (SCROLL_LOCK, false, 50), (SCROLL_LOCK, true, 100), (SCROLL_LOCK, false, 150), (0x31, true, 200)]),
            [F, F, F, F, T(Action::Source(2))]
        );
        // The configured binding replaces the default with the same keys.
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (CTRL_L, false, 50), (CTRL_L, true, 100), (CTRL_L, false, 150), (RIGHT, true, 200)]),
            [F, F, F, F, T(Action::Previous)]
        );
        // The other defaults stay.
        assert_eq!(
            play(&hk, &[(CTRL_L, true, 0), (CTRL_L, false, 50), (CTRL_L, true, 100), (CTRL_L, false, 150), (0x31, true, 200)]),
            [F, F, F, F, T(Action::Source(0))]
        );
        // A single key with nothing else held; with a modifier held it is typing.
        assert_eq!(play(&hk, &[(0xff13, true, 0), (0xff13, false, 10)]), [T(Action::Next), S]);
        assert_eq!(play(&hk, &[(SHIFT_L, true, 0), (0xff13, true, 10)]), [F, F]);
    }

    #[test]
    fn resolve_errors() {
        let err = Hotkeys::new(
            &[binding("pause", Target::Source("db9".into()))],
            true,
            &names(2),
        )
        .expect_err("unknown source");
        assert_eq!(
            err.to_string(),
            "hotkey 'pause' names an unknown source 'db9'"
        );
        let twice = [
            binding("ctrl+alt+f1", Target::Next),
            binding("alt+ctrl+f1", Target::Previous),
        ];
        let err = Hotkeys::new(&twice, true, &names(2)).expect_err("bound twice");
        assert_eq!(err.to_string(), "hotkey 'ctrl+alt+f1' is bound twice");
        let twice = [
            binding("pause", Target::Next),
            binding("Pause", Target::Previous),
        ];
        let err = Hotkeys::new(&twice, true, &names(2)).expect_err("bound twice");
        assert_eq!(err.to_string(), "hotkey 'pause' is bound twice");
    }

    #[test]
    fn describe_lists_every_binding() {
        let binds = [binding("ctrl+alt+f2", Target::Source("m2".into()))];
        let hk = Hotkeys::new(&binds, true, &names(2)).expect("bindings");
        assert_eq!(
            hk.describe(),
            [
                "ctrl+alt+f2: switch to m2",
                "ctrl ctrl 1: switch to m1",
                "ctrl ctrl 2: switch to m2",
                "ctrl ctrl left: previous source",
                "ctrl ctrl right: next source",
            ]
        );
        // Defaults stop at nine sources.
        let hk = Hotkeys::new(&[], true, &names(12)).expect("defaults");
        assert_eq!(hk.describe().len(), 11);
        assert_eq!(hk.describe()[8], "ctrl ctrl 9: switch to m9");
    }
}
