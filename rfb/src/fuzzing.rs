//! Fuzz oracles: one function per target, shared by the cargo-fuzz targets in `fuzz/`
//! and by the regression test that replays `rfb/tests/data/fuzz_regression/` on every
//! test run. Each takes arbitrary bytes and must neither panic nor allocate more than
//! the framebuffer it works on allows; where a property can be checked (a message
//! written back parses to itself, a resumed measure agrees with a fresh one, a decoder
//! writes only inside its rectangle) the oracle asserts it.

use crate::client::{ClientEvent, ClientSession};
use crate::decode::{cursor, RectDecoder, ScanState};
use crate::error::{DecodeError, Measure, ProtocolError};
use crate::framebuffer::{Framebuffer, Rect};
use crate::handshake::{ClientConfig, ClientHandshake, HandshakeError, ServerInit, Step};
use crate::messages::{
    parse_screens, write_screens, ClipboardMessage, Limits, ParseError, ParseResult, RectHeader,
    ServerMessage,
};
use crate::pixel::{PixelConverter, PixelFormat};
use crate::Encoding;

/// A fuzz oracle: arbitrary bytes in, no panic out.
pub type Oracle = fn(&[u8]);

/// Every target name with its oracle.
pub const TARGETS: &[(&str, Oracle)] = &[
    ("server_stream", server_stream),
    ("client_handshake", client_handshake),
    ("server_message", server_message),
    ("cursor", cursor),
    ("client_message", client_message),
    ("client_stream", client_stream),
    ("decode_raw", |d| decode(Encoding::RAW, d)),
    ("decode_copyrect", |d| decode(Encoding::COPY_RECT, d)),
    ("decode_rre", |d| decode(Encoding::RRE, d)),
    ("decode_corre", |d| decode(Encoding::CORRE, d)),
    ("decode_hextile", |d| decode(Encoding::HEXTILE, d)),
    ("decode_zlib", |d| decode(Encoding::ZLIB, d)),
    ("decode_tight", |d| decode(Encoding::TIGHT, d)),
    ("decode_tightpng", |d| decode(Encoding::TIGHT_PNG, d)),
    ("decode_zrle", |d| decode(Encoding::ZRLE, d)),
    ("decode_trle", |d| decode(Encoding::TRLE, d)),
];

const FORMATS: [PixelFormat; 6] = [
    PixelFormat::RGB888,
    PixelFormat::RGB565,
    PixelFormat::BGR233,
    PixelFormat::COLOURMAP8,
    PixelFormat {
        big_endian: true,
        ..PixelFormat::RGB888
    },
    PixelFormat {
        red_shift: 24,
        green_shift: 16,
        blue_shift: 8,
        ..PixelFormat::RGB888
    },
];

/// What a session did with a stream: its events, its framebuffer, how it ended.
#[derive(Debug, PartialEq)]
struct SessionOutcome {
    events: Vec<ClientEvent>,
    size: (u16, u16),
    pixels: Vec<u32>,
    error: Option<ProtocolError>,
}

fn run_session(init: &ServerInit, stream: &[u8], chunk: usize) -> SessionOutcome {
    let mut session = ClientSession::new(init);
    // Room for resizes, without allocating and clearing the default limit's 256 MiB
    // whenever a mutation makes a desktop larger.
    session.set_limits(Limits {
        max_framebuffer_area: 256 * 256,
        ..Limits::default()
    });
    let mut events = Vec::new();
    let mut error = None;
    for piece in stream.chunks(chunk) {
        let result = session.feed(piece);
        while let Some(event) = session.poll_event() {
            events.push(event);
        }
        if let Err(e) = result {
            error = Some(e);
            break;
        }
    }
    let fb = session.framebuffer();
    SessionOutcome {
        events,
        size: (fb.width(), fb.height()),
        pixels: fb.pixels().to_vec(),
        error,
    }
}

/// More than any one message or rectangle of a 256x256 session waits for (a
/// rectangle's payload limit is 576 KiB).
const PADDING: usize = 1 << 20;

/// The server side of a connection after ServerInit: arbitrary bytes into a 64x48
/// session (which may grow to 256x256 pixels), once whole and once in chunks whose
/// sizes the first byte chooses. How the bytes are cut must change nothing: the same
/// events, pixels and error.
///
/// With one exception: a measure asks for the bytes that complete a rectangle, and a
/// rectangle may prove invalid from fewer (an RRE count too large for the rectangle
/// once its first 4 bytes are in, of the 8 asked for). Where the stream ends inside
/// such a rectangle, the side fed in larger pieces may have looked again and failed
/// while the other still waits: given more bytes, the waiting side must then fail in
/// exactly the same way.
pub fn server_stream(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let format = FORMATS[usize::from(first >> 4) % FORMATS.len()];
    let chunk = usize::from(first & 0x0f) * 7 + 1;
    let init = ServerInit {
        width: 64,
        height: 48,
        pixel_format: format,
        name: String::new(),
    };
    let chunked = run_session(&init, rest, chunk);
    let whole = run_session(&init, rest, rest.len().max(1));
    if chunked == whole {
        return;
    }
    let padded = |chunk: usize| {
        let mut stream = rest.to_vec();
        stream.resize(rest.len() + PADDING, 0);
        run_session(&init, &stream, chunk)
    };
    let waited = match (&chunked.error, &whole.error) {
        (None, Some(_)) => Some(padded(chunk)),
        (Some(_), None) => Some(padded(PADDING)),
        _ => None,
    };
    let failed = if whole.error.is_some() {
        &whole
    } else {
        &chunked
    };
    assert!(
        waited.as_ref() == Some(failed),
        "fed in {chunk}-byte chunks the session ended {:?} after {} events, fed whole {:?} \
         after {} events; the one that waited, given more: {:?}",
        chunked.error,
        chunked.events.len(),
        whole.error,
        whole.events.len(),
        waited.map(|w| (w.error, w.events.len())),
    );
}

/// What a client handshake did with the server's bytes.
#[derive(Debug, PartialEq)]
struct HandshakeOutcome {
    result: Result<ServerInit, HandshakeError>,
    sent: Vec<u8>,
    tls_starts: usize,
    /// After `Done`: the bytes left for the session.
    leftover: Vec<u8>,
}

/// Delivers `server` in chunks of `chunk` bytes to a handshake as a driver would;
/// after `StartTls` the bytes that follow stand for the plaintext inside TLS.
/// Running out of bytes ends like a closed connection.
fn run_handshake(config: ClientConfig, server: &[u8], chunk: usize) -> HandshakeOutcome {
    let mut hs = ClientHandshake::new(config);
    let mut sent = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = 0;
    let mut tls_starts = 0;
    let mut consumed_total = 0u64;
    loop {
        let mut out = Vec::new();
        let step = hs.step(&buf, &mut out);
        sent.extend_from_slice(&out);
        let consumed = match step {
            Ok(Step::Continue { consumed })
            | Ok(Step::StartTls { consumed })
            | Ok(Step::Done { consumed, .. }) => consumed,
            Err(_) => 0,
        };
        assert!(
            consumed <= buf.len(),
            "consumed {consumed} of {}",
            buf.len()
        );
        consumed_total += consumed as u64;
        buf.drain(..consumed);
        match step {
            Ok(Step::Continue { .. }) => {
                if pos == server.len() {
                    return HandshakeOutcome {
                        result: Err(hs.closed(&buf)),
                        sent,
                        tls_starts,
                        leftover: Vec::new(),
                    };
                }
                let end = (pos + chunk).min(server.len());
                buf.extend_from_slice(&server[pos..end]);
                pos = end;
            }
            Ok(Step::StartTls { .. }) => {
                tls_starts += 1;
                assert!(tls_starts == 1, "TLS started twice");
            }
            Ok(Step::Done { init, .. }) => {
                assert!(hs.is_done());
                assert_eq!(hs.offset(), consumed_total);
                buf.extend_from_slice(&server[pos..]);
                return HandshakeOutcome {
                    result: Ok(init),
                    sent,
                    tls_starts,
                    leftover: buf,
                };
            }
            Err(e) => {
                // Only the escaped bytes of a non-RFB greeting depend on how many
                // had arrived.
                let e = match e {
                    HandshakeError::NotRfb { .. } => HandshakeError::NotRfb { got: String::new() },
                    e => e,
                };
                return HandshakeOutcome {
                    result: Err(e),
                    sent,
                    tls_starts,
                    leftover: Vec::new(),
                };
            }
        }
    }
}

/// A client handshake (with a username and password, TLS allowed) fed arbitrary
/// server bytes: byte 0 picks the chunk size and two configuration flags. Fed whole
/// or in chunks, it must end the same way having sent the same bytes.
pub fn client_handshake(data: &[u8]) {
    let Some((&first, server)) = data.split_first() else {
        return;
    };
    let config = ClientConfig {
        shared: first & 0x80 != 0,
        username: Some("user".into()),
        password: Some("secret".into()),
        allow_tls: true,
        allow_plain_without_tls: first & 0x40 != 0,
    };
    let chunk = usize::from(first & 0x3f) + 1;
    let chunked = run_handshake(config.clone(), server, chunk);
    let whole = run_handshake(config, server, server.len().max(1));
    assert_eq!(chunked, whole, "fed in {chunk}-byte chunks, then whole");
}

/// Checks the streaming contract of a parser over every prefix of the `len` bytes it
/// parsed (sampled for long messages): each must ask for more than it has and no
/// more than `len`.
fn check_prefixes<T: std::fmt::Debug>(
    what: &str,
    bytes: &[u8],
    len: usize,
    parse: impl Fn(&[u8]) -> ParseResult<T>,
) {
    let step = (len / 256).max(1);
    for cut in (0..len).step_by(step).chain(len.saturating_sub(4)..len) {
        match parse(&bytes[..cut]) {
            Err(ParseError::Incomplete(need)) => assert!(
                need > cut && need <= len,
                "{what}: a {cut}-byte prefix of a {len}-byte message asks for {need} bytes"
            ),
            other => panic!("{what}: a {cut}-byte prefix of a {len}-byte message gave {other:?}"),
        }
    }
}

/// The message parsers on arbitrary bytes: ServerMessage, RectHeader, the
/// ExtendedDesktopSize screens and ExtendedClipboard payloads. Whatever parses must
/// write back to bytes that parse to the same value, and every prefix of a parsed
/// message must ask for more.
pub fn server_message(data: &[u8]) {
    let limits = Limits::default();

    let parse = |b: &[u8]| ServerMessage::parse(b, &limits);
    if let Ok((message, used)) = parse(data) {
        assert!(
            used > 0 && used <= data.len(),
            "used {used} of {}",
            data.len()
        );
        check_prefixes("ServerMessage", data, used, parse);
        let mut out = Vec::new();
        message.write(&mut out);
        assert_eq!(parse(&out), Ok((message, out.len())), "written {out:02x?}");
        check_prefixes("written ServerMessage", &out, out.len(), parse);
    }

    if let Ok((header, used)) = RectHeader::parse(data) {
        assert_eq!(used, RectHeader::SIZE);
        let mut out = Vec::new();
        header.write(&mut out);
        assert_eq!(out, data[..used], "{header:?}");
    }

    if let Ok((screens, used)) = parse_screens(data) {
        assert!(used <= data.len());
        check_prefixes("screens", data, used, parse_screens);
        let mut out = Vec::new();
        write_screens(&screens, &mut out);
        assert_eq!(parse_screens(&out), Ok((screens, used)));
    }

    if let Ok(message) = ClipboardMessage::parse(data, &limits) {
        let mut out = Vec::new();
        message.write(&mut out);
        assert_eq!(
            ClipboardMessage::parse(&out, &limits),
            Ok(message),
            "written {out:02x?}"
        );
    }
}

/// The cursor pseudo-encodings: byte 0 picks the pixel format, bytes 1-2 the
/// hotspot, 3-4 the size, byte 5 the kind (bit 0: with alpha) and a scale for the
/// size (bit 1: past the size limit); the rest is the payload.
pub fn cursor(data: &[u8]) {
    if data.len() < 6 {
        return;
    }
    let conv = PixelConverter::new(FORMATS[usize::from(data[0]) % FORMATS.len()]);
    let with_alpha = data[5] & 1 != 0;
    let scale = if data[5] & 2 != 0 { 9 } else { 1 };
    let rect = Rect::new(
        u16::from(data[1]),
        u16::from(data[2]),
        u16::from(data[3] % 48) * scale,
        u16::from(data[4] % 48) * scale,
    );
    let payload = &data[6..];
    let measure = |buf: &[u8]| {
        if with_alpha {
            cursor::measure_alpha_cursor(rect, buf)
        } else {
            cursor::measure_cursor(rect, &conv, buf)
        }
    };
    let decode = |buf: &[u8]| {
        if with_alpha {
            cursor::decode_alpha_cursor(rect, buf)
        } else {
            cursor::decode_cursor(rect, buf, &conv)
        }
    };
    let len = match measure(payload) {
        Ok(Measure::Complete(len)) => len,
        Ok(Measure::Need(need)) => {
            assert!(need > payload.len(), "need {need} of {}", payload.len());
            return;
        }
        Err(_) => return,
    };
    assert!(len <= payload.len());
    for cut in [0, len / 2, len.saturating_sub(1)] {
        if cut < len {
            match measure(&payload[..cut]) {
                Ok(Measure::Need(need)) => assert!(need > cut && need <= len),
                other => panic!("a {cut}-byte prefix of a {len}-byte cursor: {other:?}"),
            }
            assert!(decode(&payload[..cut]).is_err(), "{cut} of {len} bytes");
        }
    }
    if len < payload.len() {
        assert!(decode(&payload[..len + 1]).is_err(), "one byte too many");
    }
    let image = match decode(&payload[..len]) {
        Ok(image) => image,
        Err(e) => panic!("a cursor that measures complete is refused: {e}"),
    };
    assert_eq!(
        (image.hotspot_x, image.hotspot_y, image.width, image.height),
        (rect.x, rect.y, rect.width, rect.height)
    );
    assert_eq!(image.rgba.len(), rect.area() * 4);
    for px in image.rgba.chunks_exact(4) {
        if px[3] == 0 {
            assert_eq!(px, [0, 0, 0, 0], "a transparent pixel keeps a colour");
        } else if !with_alpha {
            assert_eq!(px[3], 0xff, "a bitmask cursor is opaque or transparent");
        }
    }
}

/// A new decoder of one kind (a whole [`Decoders`](crate::decode::Decoders) would set
/// up ten inflaters for every input).
fn new_decoder(encoding: Encoding) -> Option<Box<dyn RectDecoder>> {
    use crate::decode::{copyrect, hextile, raw, rre, tight, trle, zlib, zrle};
    Some(match encoding {
        Encoding::RAW => Box::new(raw::RawDecoder),
        Encoding::COPY_RECT => Box::new(copyrect::CopyRectDecoder),
        Encoding::RRE => Box::<rre::RreDecoder>::default(),
        Encoding::CORRE => Box::<rre::CoRreDecoder>::default(),
        Encoding::HEXTILE => Box::new(hextile::HextileDecoder),
        Encoding::ZLIB => Box::<zlib::ZlibDecoder>::default(),
        Encoding::TIGHT => Box::<tight::TightDecoder>::default(),
        Encoding::TIGHT_PNG => Box::<tight::TightPngDecoder>::default(),
        Encoding::ZRLE => Box::<zrle::ZrleDecoder>::default(),
        Encoding::TRLE => Box::new(trle::TrleDecoder),
        _ => return None,
    })
}

/// The decode oracles' framebuffer width and height.
const DECODE_SIZE: u8 = 72;

/// A pattern no decoder writes: decoders produce `0x00RRGGBB`, so any pixel still
/// carrying this top byte was left alone.
const UNTOUCHED: u32 = 0xa500_0000;

/// Measures `payload` as a session would (growing prefixes, one resumed
/// [`ScanState`]) and checks the result against a fresh measure of the whole: a
/// resumed measure must agree with a fresh one, a prefix of a rectangle that
/// measures complete must never be refused nor ask for more than the rectangle.
/// Returns the payload length when complete.
fn measure_as_session(
    decoder: &dyn RectDecoder,
    rect: Rect,
    conv: &PixelConverter,
    payload: &[u8],
) -> Option<usize> {
    let fresh = decoder.measure(rect, conv, payload, &mut ScanState::default());
    let complete = match fresh {
        Ok(Measure::Complete(len)) => {
            assert!(
                len <= payload.len(),
                "complete at {len} of {}",
                payload.len()
            );
            Some(len)
        }
        _ => None,
    };
    let n = payload.len();
    let mut scan = ScanState::default();
    for cut in [n / 4, n / 3, n / 2, 2 * n / 3, n.saturating_sub(1), n] {
        let resumed = decoder.measure(rect, conv, &payload[..cut], &mut scan);
        match resumed {
            Ok(Measure::Need(need)) => {
                assert!(need > cut, "a {cut}-byte prefix asks for {need} bytes");
                if let Some(len) = complete {
                    assert!(
                        need <= len,
                        "a {cut}-byte prefix asks for {need} bytes of a {len}-byte rectangle"
                    );
                }
                if cut == n {
                    assert_eq!(resumed, fresh, "resumed and fresh measures of {n} bytes");
                }
            }
            Ok(Measure::Complete(len)) => {
                assert_eq!(
                    Some(len),
                    complete,
                    "resumed measure after {cut} bytes, fresh measure {fresh:?}"
                );
                return complete;
            }
            Err(e) => {
                assert!(
                    fresh.is_err(),
                    "a {cut}-byte prefix is refused ({e}) but the whole measures {fresh:?}"
                );
                return None;
            }
        }
    }
    assert!(
        complete.is_none(),
        "the whole measures {fresh:?}, resumed not"
    );
    None
}

/// After a decode: every pixel that changed lies inside `rect`, holds `0x00RRGGBB`
/// (CopyRect copies what it finds) and, when the decode succeeded, inside the damage.
/// Whole rows and the parts of rows beside `rect` are compared as slices: an oracle
/// that looks at every pixel of the framebuffer would cost more than most decodes.
fn check_writes(encoding: Encoding, rect: Rect, before: &[u32], fb: &Framebuffer, ok: bool) {
    let width = usize::from(fb.width());
    let (left, right) = (usize::from(rect.x), rect.right() as usize);
    let rows = u32::from(rect.y)..rect.bottom();
    for (y, (old, new)) in before
        .chunks_exact(width)
        .zip(fb.pixels().chunks_exact(width))
        .enumerate()
    {
        if old == new {
            continue;
        }
        // INVARIANT: the framebuffer has fewer than 2^16 rows.
        let y = y as u32;
        assert!(
            rows.contains(&y) && old[..left] == new[..left] && old[right..] == new[right..],
            "{encoding} into {rect} wrote outside it in row {y}"
        );
        for (x, (&was, &is)) in old.iter().zip(new).enumerate().take(right).skip(left) {
            if was == is {
                continue;
            }
            if encoding != Encoding::COPY_RECT {
                assert_eq!(is >> 24, 0, "{encoding} wrote 0x{is:08x} at ({x}, {y})");
            }
            // INVARIANT: x < the framebuffer's width.
            let x = x as u32;
            if ok {
                assert!(
                    fb.damage().rects().iter().any(|r| u32::from(r.x) <= x
                        && x < r.right()
                        && u32::from(r.y) <= y
                        && y < r.bottom()),
                    "{encoding} changed ({x}, {y}) outside its damage {:?}",
                    fb.damage()
                );
            }
        }
    }
}

/// The pattern the decode oracles' framebuffer starts with.
fn untouched() -> &'static [u32] {
    static PATTERN: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| {
        let size = usize::from(DECODE_SIZE);
        // INVARIANT: 72 * 72 pixels; the index fits in the low 24 bits.
        (0..size * size).map(|i| UNTOUCHED | i as u32).collect()
    })
}

/// One rectangle of `encoding`: byte 0 picks the pixel format, bytes 1-4 the
/// rectangle inside a 72x72 framebuffer (room for two ZRLE tiles each way), the rest
/// is the payload, decoded twice (stateful decoders keep their streams in between).
/// Each payload is measured as a session would (`measure_as_session`); the
/// framebuffer starts with a pattern no decoder writes, so writes outside the
/// rectangle show (`check_writes`).
pub fn decode(encoding: Encoding, data: &[u8]) {
    if data.len() < 5 {
        return;
    }
    let format = FORMATS[usize::from(data[0]) % FORMATS.len()];
    let rect = Rect::new(
        u16::from(data[1] % DECODE_SIZE),
        u16::from(data[2] % DECODE_SIZE),
        u16::from(data[3] % (DECODE_SIZE + 1)),
        u16::from(data[4] % (DECODE_SIZE + 1)),
    );
    let conv = PixelConverter::new(format);
    let mut fb = Framebuffer::new(DECODE_SIZE.into(), DECODE_SIZE.into());
    fb.pixels_mut().copy_from_slice(untouched());
    let Some(mut decoder) = new_decoder(encoding) else {
        return;
    };
    let decoder = decoder.as_mut();
    let mut payload = &data[5..];
    for _ in 0..2 {
        if fb.check(&rect).is_err() {
            return;
        }
        let Some(len) = measure_as_session(decoder, rect, &conv, payload) else {
            return;
        };
        let before = fb.pixels().to_vec();
        fb.take_damage();
        let result: Result<(), DecodeError> = decoder.decode(rect, &payload[..len], &conv, &mut fb);
        check_writes(encoding, rect, &before, &fb, result.is_ok());
        if result.is_err() {
            return;
        }
        payload = &payload[len..];
    }
}

/// `ClientMessage::parse` on arbitrary bytes: whatever parses writes back and parses
/// again to the same value.
pub fn client_message(data: &[u8]) {
    let limits = Limits::default();
    if let Ok((message, used)) = crate::messages::ClientMessage::parse(data, &limits) {
        assert!(
            used > 0 && used <= data.len(),
            "used {used} of {}",
            data.len()
        );
        let mut out = Vec::new();
        message.write(&mut out);
        assert_eq!(
            crate::messages::ClientMessage::parse(&out, &limits),
            Ok((message, out.len())),
            "written {out:02x?}"
        );
    }
}

/// The client side of a connection as a server sees it: arbitrary bytes fed in chunks
/// (the first byte chooses their size) into a 64x48 `ServerSession`, writing an update
/// whenever one is due. Output must stay bounded by what the framebuffer can need.
pub fn client_stream(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first & 0x0f) * 5 + 1;
    let mut fb = Framebuffer::new(64, 48);
    for (i, p) in fb.pixels_mut().iter_mut().enumerate() {
        *p = (i as u32).wrapping_mul(0x9e37_79b9) & 0x00ff_ffff;
    }
    let mut session = crate::server::ServerSession::new(64, 48, PixelFormat::RGB888, "fuzz");
    session.enable_xvp(first & 0x10 != 0);
    let mut out = Vec::new();
    for piece in rest.chunks(chunk) {
        if session.feed(piece, &mut out).is_err() {
            return;
        }
        while session.poll_event().is_some() {}
        session.add_damage(Rect::new(u16::from(piece[0] % 64), 0, 8, 8));
        session.write_update(&fb, &mut out);
        // Raw at 32 bpp is the largest legal update; colour maps and replies add a little.
        assert!(
            out.len() < 64 * 48 * 4 * 4 + 64 * 1024,
            "{} bytes of output",
            out.len()
        );
        out.clear();
    }
}

/// Runs the oracle of the target called `name`.
pub fn run(name: &str, data: &[u8]) {
    if let Some((_, oracle)) = TARGETS.iter().find(|(n, _)| *n == name) {
        oracle(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterned() -> (Framebuffer, Vec<u32>) {
        let mut fb = Framebuffer::new(DECODE_SIZE.into(), DECODE_SIZE.into());
        fb.pixels_mut().copy_from_slice(untouched());
        let before = fb.pixels().to_vec();
        (fb, before)
    }

    #[test]
    fn writes_inside_the_rectangle_pass() {
        let (mut fb, before) = patterned();
        fb.fill(Rect::new(1, 3, 4, 2), 0x123456).expect("inside");
        check_writes(Encoding::RAW, Rect::new(1, 3, 4, 2), &before, &fb, true);
    }

    #[test]
    #[should_panic(expected = "wrote outside it in row 3")]
    fn a_write_beside_the_rectangle_is_caught() {
        let (mut fb, before) = patterned();
        fb.fill(Rect::new(0, 3, 5, 1), 0).expect("inside");
        check_writes(Encoding::RAW, Rect::new(1, 3, 4, 1), &before, &fb, true);
    }

    #[test]
    #[should_panic(expected = "wrote outside it in row 71")]
    fn a_write_below_the_rectangle_is_caught() {
        let (mut fb, before) = patterned();
        fb.fill(Rect::new(71, 71, 1, 1), 0).expect("inside");
        check_writes(
            Encoding::COPY_RECT,
            Rect::new(0, 0, 72, 71),
            &before,
            &fb,
            false,
        );
    }

    #[test]
    #[should_panic(expected = "outside its damage")]
    fn a_change_without_damage_is_caught() {
        let (mut fb, before) = patterned();
        fb.pixels_mut()[72 + 1] = 0;
        check_writes(Encoding::RAW, Rect::new(0, 0, 2, 2), &before, &fb, true);
    }

    #[test]
    #[should_panic(expected = "wrote 0xa5000042 at (0, 0)")]
    fn a_pixel_with_a_top_byte_is_caught() {
        let (mut fb, before) = patterned();
        fb.fill(Rect::new(0, 0, 1, 1), UNTOUCHED | 0x42)
            .expect("inside");
        check_writes(Encoding::HEXTILE, Rect::new(0, 0, 1, 1), &before, &fb, true);
    }

    /// Measures 8 bytes, but counts a byte more for every time it was asked to
    /// resume: what a decoder that mishandles its [`ScanState`] would do.
    struct Forgetful;

    impl RectDecoder for Forgetful {
        fn measure(
            &self,
            _: Rect,
            _: &PixelConverter,
            buf: &[u8],
            scan: &mut ScanState,
        ) -> Result<Measure, DecodeError> {
            if buf.len() >= 8 {
                return Ok(Measure::Complete(8 + scan.offset));
            }
            scan.offset += 1;
            Ok(Measure::Need(8))
        }

        fn decode(
            &mut self,
            _: Rect,
            _: &[u8],
            _: &PixelConverter,
            _: &mut Framebuffer,
        ) -> Result<(), DecodeError> {
            Ok(())
        }
    }

    /// Refuses anything shorter than 8 bytes, although 8 bytes measure complete.
    struct Impatient;

    impl RectDecoder for Impatient {
        fn measure(
            &self,
            _: Rect,
            _: &PixelConverter,
            buf: &[u8],
            _: &mut ScanState,
        ) -> Result<Measure, DecodeError> {
            if buf.len() >= 8 {
                return Ok(Measure::Complete(8));
            }
            Err(DecodeError::invalid("impatient", "too short"))
        }

        fn decode(
            &mut self,
            _: Rect,
            _: &[u8],
            _: &PixelConverter,
            _: &mut Framebuffer,
        ) -> Result<(), DecodeError> {
            Ok(())
        }
    }

    fn conv() -> PixelConverter {
        PixelConverter::new(PixelFormat::RGB888)
    }

    #[test]
    #[should_panic(expected = "resumed measure after 8 bytes")]
    fn a_resumed_measure_that_disagrees_is_caught() {
        measure_as_session(&Forgetful, Rect::new(0, 0, 1, 1), &conv(), &[0; 16]);
    }

    #[test]
    fn a_raw_rectangle_measures_as_in_a_session() {
        // 2x2 at 4 bytes a pixel: 16 bytes, whatever follows.
        let raw = crate::decode::raw::RawDecoder;
        let rect = Rect::new(0, 0, 2, 2);
        assert_eq!(measure_as_session(&raw, rect, &conv(), &[0; 20]), Some(16));
        assert_eq!(measure_as_session(&raw, rect, &conv(), &[0; 15]), None);
    }

    #[test]
    #[should_panic(expected = "prefix is refused")]
    fn a_refused_prefix_of_a_complete_rectangle_is_caught() {
        measure_as_session(&Impatient, Rect::new(0, 0, 1, 1), &conv(), &[0; 16]);
    }
}
