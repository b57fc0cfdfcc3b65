//! kvmux's own extensions (see `docs/PROTOCOL.md`): the source list a kvmux proxy
//! sends to clients that list [`Encoding::KVMUX_SOURCES`], and the selection message
//! (client message 75) they answer with.

use crate::encoding::Encoding;
use crate::error::{DecodeError, Measure};
use crate::framebuffer::Rect;

use super::RectHeader;

/// The state of one source behind a kvmux proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SourceState {
    Connected = 0,
    Connecting = 1,
    Retrying = 2,
    AuthenticationFailed = 3,
    Stopped = 4,
}

impl SourceState {
    pub fn from_u8(value: u8) -> Option<SourceState> {
        Some(match value {
            0 => SourceState::Connected,
            1 => SourceState::Connecting,
            2 => SourceState::Retrying,
            3 => SourceState::AuthenticationFailed,
            4 => SourceState::Stopped,
            _ => return None,
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            SourceState::Connected => "connected",
            SourceState::Connecting => "connecting",
            SourceState::Retrying => "retrying",
            SourceState::AuthenticationFailed => "authentication failed",
            SourceState::Stopped => "stopped",
        }
    }
}

/// One entry of the source list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    pub state: SourceState,
    /// The source's framebuffer size; 0x0 while unknown.
    pub width: u16,
    pub height: u16,
    pub name: String,
    /// Human-readable state, e.g. "retrying in 4 s: connection refused"; may be empty.
    pub status: String,
}

/// The source list: every source, and which one this client watches.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceList {
    pub active: u16,
    pub sources: Vec<SourceInfo>,
}

/// What a client asks of the proxy with message 75.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SelectAction {
    /// The source at this index of the list.
    Index(u16),
    Next,
    Previous,
}

/// Message-type byte of the selection message.
pub const KVMUX_SELECT: u8 = 75;
/// Size of the selection message.
pub const KVMUX_SELECT_SIZE: usize = 1 /* message-type */ + 1 /* action */ + 2 /* index */;

impl SelectAction {
    /// Action byte and index as on the wire; `None` for an unknown action.
    pub fn from_wire(action: u8, index: u16) -> Option<SelectAction> {
        match action {
            0 => Some(SelectAction::Index(index)),
            1 => Some(SelectAction::Next),
            2 => Some(SelectAction::Previous),
            _ => None,
        }
    }

    pub fn to_wire(self) -> (u8, u16) {
        match self {
            SelectAction::Index(i) => (0, i),
            SelectAction::Next => (1, 0),
            SelectAction::Previous => (2, 0),
        }
    }
}

/// Longest name and status text accepted in a list (they are one-line labels).
const MAX_NAME: usize = u8::MAX as usize;
const MAX_STATUS: usize = 1024;

impl SourceList {
    /// Appends the list as a pseudo-rectangle (header included). Names and status
    /// texts longer than their fields allow are cut at a character boundary; more than
    /// 65535 sources are cut to 65535.
    pub fn write(&self, out: &mut Vec<u8>) {
        let sources = &self.sources[..self.sources.len().min(usize::from(u16::MAX))];
        RectHeader {
            // INVARIANT: at most u16::MAX after the cut above.
            rect: Rect::new(self.active, sources.len() as u16, 0, 0),
            encoding: Encoding::KVMUX_SOURCES,
        }
        .write(out);
        for s in sources {
            let name = cut_utf8(&s.name, MAX_NAME);
            let status = cut_utf8(&s.status, MAX_STATUS);
            out.push(s.state as u8);
            out.extend_from_slice(&s.width.to_be_bytes());
            out.extend_from_slice(&s.height.to_be_bytes());
            // INVARIANT: cut to MAX_NAME (255) and MAX_STATUS (1024) bytes above.
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(status.len() as u16).to_be_bytes());
            out.extend_from_slice(status.as_bytes());
        }
    }

    /// How many payload bytes follow a source-list header of `count` entries, given
    /// the bytes received so far. Stateless and cheap; every length is checked
    /// before anything is kept.
    pub fn measure(count: u16, buf: &[u8]) -> Result<Measure, DecodeError> {
        let mut at = 0usize;
        for _ in 0..count {
            const FIXED: usize = 1 /* state */ + 2 /* width */ + 2 /* height */ + 1 /* name-length */;
            let Some(fixed) = buf.get(at..at + FIXED) else {
                return Ok(Measure::Need(at + FIXED));
            };
            let name_len = usize::from(fixed[5]);
            at += FIXED + name_len;
            let Some(len) = buf.get(at..at + 2) else {
                return Ok(Measure::Need(at + 2));
            };
            let status_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            if status_len > MAX_STATUS {
                return Err(DecodeError::TooLong {
                    context: "kvmux source status",
                    length: status_len as u64,
                    limit: MAX_STATUS as u64,
                });
            }
            at += 2 + status_len;
        }
        Ok(if buf.len() >= at {
            Measure::Complete(at)
        } else {
            Measure::Need(at)
        })
    }

    /// Parses the payload of a source-list pseudo-rectangle whose header carried
    /// `active` (x) and `count` (y); `payload` is exactly what [`SourceList::measure`]
    /// found.
    pub fn parse(active: u16, count: u16, payload: &[u8]) -> Result<SourceList, DecodeError> {
        const WHAT: &str = "kvmux source list";
        if count > 0 && active >= count {
            return Err(DecodeError::invalid(
                WHAT,
                format!("active source {active} is not below the count {count}"),
            ));
        }
        let mut r = crate::decode::Reader::new(payload, WHAT);
        let mut sources = Vec::with_capacity(usize::from(count).min(payload.len() / 7 + 1));
        for _ in 0..count {
            let state = r.u8()?;
            let state = SourceState::from_u8(state).ok_or_else(|| {
                DecodeError::invalid(WHAT, format!("unknown source state {state}"))
            })?;
            let width = r.u16()?;
            let height = r.u16()?;
            let name_len = usize::from(r.u8()?);
            let name = utf8(r.take(name_len)?, "source name")?;
            let status_len = usize::from(r.u16()?);
            let status = utf8(r.take(status_len)?, "source status")?;
            sources.push(SourceInfo {
                state,
                width,
                height,
                name,
                status,
            });
        }
        Ok(SourceList { active, sources })
    }
}

fn utf8(bytes: &[u8], what: &'static str) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| DecodeError::invalid("kvmux source list", format!("{what} is not UTF-8")))
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-source list written out by hand from docs/PROTOCOL.md.
    fn spec_bytes() -> Vec<u8> {
        let mut b = vec![
            0, 1, // x: active source 1
            0, 2, // y: two sources
            0, 0, 0, 0, // width, height
            0x4b, 0x56, 0x4d, 0x02, // encoding
        ];
        b.extend_from_slice(&[0, 0x05, 0x00, 0x02, 0xd0, 3, b'o', b'n', b'e', 0, 0]);
        b.extend_from_slice(&[2, 0, 0, 0, 0, 2, 0xc3, 0xa9]); // "é"
        b.extend_from_slice(&[0, 4, b'w', b'a', b'i', b't']);
        b
    }

    fn spec_list() -> SourceList {
        SourceList {
            active: 1,
            sources: vec![
                SourceInfo {
                    state: SourceState::Connected,
                    width: 1280,
                    height: 720,
                    name: "one".into(),
                    status: String::new(),
                },
                SourceInfo {
                    state: SourceState::Retrying,
                    width: 0,
                    height: 0,
                    name: "é".into(),
                    status: "wait".into(),
                },
            ],
        }
    }

    #[test]
    fn writes_the_documented_bytes() {
        let mut out = Vec::new();
        spec_list().write(&mut out);
        assert_eq!(out, spec_bytes());
    }

    #[test]
    fn measures_and_parses_the_documented_bytes() {
        let bytes = spec_bytes();
        let payload = &bytes[12..];
        for cut in 0..payload.len() {
            assert!(
                matches!(SourceList::measure(2, &payload[..cut]), Ok(Measure::Need(n)) if n > cut),
                "cut at {cut}"
            );
        }
        assert_eq!(
            SourceList::measure(2, payload).ok(),
            Some(Measure::Complete(payload.len()))
        );
        assert_eq!(SourceList::parse(1, 2, payload).ok(), Some(spec_list()));
    }

    #[test]
    fn refuses_bad_lists() {
        let bytes = spec_bytes();
        let payload = &bytes[12..];
        assert!(
            SourceList::parse(2, 2, payload).is_err(),
            "active out of range"
        );
        let mut bad_state = payload.to_vec();
        bad_state[0] = 9;
        assert!(SourceList::parse(1, 2, &bad_state).is_err());
        let mut bad_utf8 = payload.to_vec();
        bad_utf8[6] = 0xff;
        assert!(SourceList::parse(1, 2, &bad_utf8).is_err());
        // A status longer than the limit is refused before it is buffered.
        let huge = [0, 0, 0, 0, 0, 0, 0xff, 0xff];
        assert!(SourceList::measure(1, &huge).is_err());
    }

    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        let list = SourceList {
            active: 0,
            sources: vec![SourceInfo {
                state: SourceState::Stopped,
                width: 1,
                height: 1,
                name: "é".repeat(200),
                status: String::new(),
            }],
        };
        let mut out = Vec::new();
        list.write(&mut out);
        let payload = &out[12..];
        assert_eq!(payload[5], 254, "127 two-byte characters");
        let back = SourceList::parse(0, 1, payload).map(|l| l.sources[0].name.chars().count());
        assert_eq!(back.ok(), Some(127));
    }

    #[test]
    fn select_action_wire_values() {
        assert_eq!(SelectAction::from_wire(0, 7), Some(SelectAction::Index(7)));
        assert_eq!(SelectAction::from_wire(1, 7), Some(SelectAction::Next));
        assert_eq!(SelectAction::from_wire(2, 0), Some(SelectAction::Previous));
        assert_eq!(SelectAction::from_wire(3, 0), None);
        assert_eq!(SelectAction::Next.to_wire(), (1, 0));
    }
}
