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
    ("roundtrip_raw", |d| round_trip(Encoding::RAW, d)),
    ("roundtrip_copyrect", roundtrip_copyrect),
    ("roundtrip_rre", |d| round_trip(Encoding::RRE, d)),
    ("roundtrip_hextile", |d| round_trip(Encoding::HEXTILE, d)),
    ("roundtrip_zlib", |d| round_trip(Encoding::ZLIB, d)),
    ("roundtrip_zrle", |d| round_trip(Encoding::ZRLE, d)),
    ("roundtrip_tight", |d| roundtrip_tight(d, false)),
    ("roundtrip_tight_jpeg", |d| roundtrip_tight(d, true)),
    ("roundtrip_cursor", roundtrip_cursor),
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
    run_session_on(init, stream, chunk, 1)
}

/// [`run_session`] with Tight JPEG decoded on `threads` threads.
fn run_session_on(
    init: &ServerInit,
    stream: &[u8],
    chunk: usize,
    threads: usize,
) -> SessionOutcome {
    let mut session = ClientSession::new(init);
    session.set_decode_threads(threads);
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
/// events, pixels and error. Where the stream is valid, decoding Tight JPEG on two
/// threads must change nothing either.
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
    if whole.error.is_none() {
        // JPEG on several threads draws the same picture, with the same events.
        let threaded = run_session_on(&init, rest, chunk, 2);
        assert!(
            threaded == whole,
            "with JPEG on two threads the session ended {:?} after {} events",
            threaded.error,
            threaded.events.len()
        );
    }
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

// ---- Encoder round trips: encode with ours, decode with ours, compare ----

/// A pixel format from three bytes: the 8-bit colour map, or a true-colour format of
/// 8, 16 or 32 bits per pixel, either byte order, with any channel maxima of 1 to 8
/// bits (not only `2^n - 1`) at any shifts that fit, overlapping or not. `None` for
/// the few combinations [`PixelFormat::validate`] refuses.
pub fn derived_format(a: u8, b: u8, c: u8) -> Option<PixelFormat> {
    if a % 8 == 7 {
        return Some(PixelFormat::COLOURMAP8);
    }
    let bits_per_pixel = [8u8, 16, 32][usize::from(a % 8) % 3];
    // A channel maximum of 1-8 bits: all ones (the usual) or any value of that width.
    let max = |byte: u8, any: bool| -> u16 {
        let bits = u32::from(byte % 8) + 1;
        let all = (1u16 << bits) - 1;
        if any {
            (u16::from(byte) * 37 % (all + 1)).max(1)
        } else {
            all
        }
    };
    let any = a & 0x80 != 0;
    let (red_max, green_max, blue_max) = (max(b, any), max(b >> 3 | c << 5, any), max(c, any));
    let width = |m: u16| 16 - m.leading_zeros() as u8;
    let total = width(red_max) + width(green_max) + width(blue_max);
    let shifts = if total <= bits_per_pixel && a & 0x40 == 0 {
        // Side by side in one of six orders, from a base shift.
        let base = (c >> 3) % (bits_per_pixel - total + 1);
        let order = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ][usize::from(b >> 5) % 6];
        let widths = [width(red_max), width(green_max), width(blue_max)];
        let mut shifts = [0u8; 3];
        let mut at = base;
        for channel in order {
            shifts[channel] = at;
            at += widths[channel];
        }
        shifts
    } else {
        // Anywhere that fits, overlapping allowed.
        let place = |m: u16, k: u8| k % (bits_per_pixel - width(m) + 1);
        [
            place(red_max, b),
            place(green_max, c),
            place(blue_max, a >> 2),
        ]
    };
    let format = PixelFormat {
        bits_per_pixel,
        depth: total.min(bits_per_pixel),
        big_endian: a & 0x20 != 0,
        true_colour: true,
        red_max,
        green_max,
        blue_max,
        red_shift: shifts[0],
        green_shift: shifts[1],
        blue_shift: shifts[2],
    };
    format.validate().ok().map(|()| format)
}

/// What a round trip works on: a pixel format, an image drawn from the input, and the
/// encoding parameters.
struct RoundTrip {
    format: PixelFormat,
    writer: crate::encode::PixelWriter,
    conv: PixelConverter,
    fb: Framebuffer,
    params: crate::encode::EncodeParams,
    /// A second rectangle inside the image, for encoders with stream state.
    second: Rect,
}

/// Reads the input of a round trip: 3 bytes of pixel format ([`derived_format`]),
/// width and height (1-96 by 1-72), compression and quality levels (values past 9
/// mean none), 4 bytes placing a second rectangle, then the image (see [`draw`]).
fn round_trip_input(data: &[u8]) -> Option<RoundTrip> {
    let head = data.get(..11)?;
    let format = derived_format(head[0], head[1], head[2])?;
    let (width, height) = (1 + u16::from(head[3]) % 96, 1 + u16::from(head[4]) % 72);
    let level = |b: u8| (b % 16 < 10).then_some(b % 16);
    let params = crate::encode::EncodeParams {
        compress: level(head[5]),
        quality: level(head[6]),
    };
    let x = u16::from(head[7]) % width;
    let y = u16::from(head[8]) % height;
    let second = Rect::new(
        x,
        y,
        1 + u16::from(head[9]) % (width - x),
        1 + u16::from(head[10]) % (height - y),
    );
    let mut fb = Framebuffer::new(width, height);
    draw(&data[11..], fb.pixels_mut());
    let mut conv = PixelConverter::new(format);
    if !format.true_colour {
        conv.set_colour_map_entries(0, &crate::encode::PixelWriter::colour_map());
    }
    Some(RoundTrip {
        format,
        writer: crate::encode::PixelWriter::new(format),
        conv,
        fb,
        params,
        second,
    })
}

/// Draws pixels from bytes: first up to 16 palette colours (a count, then 3 bytes
/// each), then commands, each a byte whose top two bits say what it is: 0, repeat the
/// last pixel (low 6 bits + 1) times; 1, a palette colour; 2, a new colour from the
/// next 3 bytes; 3, the last colour plus a small step (photo-like). When the commands
/// run out, what they drew is repeated to the end (repeated content, as deflate likes).
fn draw(data: &[u8], pixels: &mut [u32]) {
    let count = data.first().map_or(0, |&n| usize::from(n % 17));
    let mut bytes = data.get(1..).unwrap_or_default().iter().copied();
    let palette: Vec<u32> = (0..count)
        .map_while(|_| {
            let r = bytes.next()?;
            let g = bytes.next()?;
            let b = bytes.next()?;
            Some(u32::from_be_bytes([0, r, g, b]))
        })
        .collect();
    let mut drawn = 0;
    let mut last = 0u32;
    while drawn < pixels.len() {
        let Some(command) = bytes.next() else { break };
        let arg = command & 0x3f;
        let (colour, times) = match command >> 6 {
            0 => (last, usize::from(arg) + 1),
            1 if !palette.is_empty() => (palette[usize::from(arg) % palette.len()], 1),
            1 => (u32::from(arg) * 0x0004_0404, 1),
            2 => {
                let [r, g, b] = [bytes.next(), bytes.next(), bytes.next()].map(|v| v.unwrap_or(0));
                (u32::from_be_bytes([0, r, g, b]), 1)
            }
            _ => {
                // A step of -4..3 in each channel, wrapping within the channel.
                let step = |v: u32, shift: u32, d: u8| {
                    let c = (v >> shift) as u8;
                    u32::from(c.wrapping_add(d.wrapping_sub(4))) << shift
                };
                let next = step(last, 16, arg & 7) | step(last, 8, (arg >> 3) & 7) | (last & 0xff);
                (next, 1)
            }
        };
        last = colour;
        let end = (drawn + times).min(pixels.len());
        pixels[drawn..end].fill(colour);
        drawn = end;
    }
    if drawn > 0 {
        for i in drawn..pixels.len() {
            pixels[i] = pixels[i - drawn];
        }
    }
}

/// A pixel as the client sees it after the pixel format's reduction: written in the
/// format one pixel at a time, read back one pixel at a time.
fn reduced(t: &RoundTrip, rgb: u32) -> u32 {
    let mut bytes = Vec::with_capacity(4);
    t.writer.write(rgb, &mut bytes);
    t.conv.pixel(&bytes)
}

/// Checks that `decoded` shows `source`'s pixels of `rect`, reduced, exactly, and
/// `background` elsewhere.
fn assert_exact(t: &RoundTrip, decoded: &Framebuffer, rect: Rect, background: &[u32], what: &str) {
    let width = usize::from(t.fb.width());
    for (i, (&got, &src)) in decoded.pixels().iter().zip(t.fb.pixels()).enumerate() {
        let (x, y) = ((i % width) as u16, (i / width) as u16);
        let inside = rect.intersects(&Rect::new(x, y, 1, 1));
        let want = if inside {
            reduced(t, src)
        } else {
            background[i]
        };
        assert_eq!(
            got, want,
            "{what}: pixel ({x}, {y}) of {rect} in {:?} is {got:06x}, not {want:06x} (source {src:06x})",
            t.format
        );
    }
}

/// Measures a payload as a client would, in one piece and resumed byte by byte; both
/// must find exactly its length.
fn assert_measures(decoder: &dyn RectDecoder, t: &RoundTrip, rect: Rect, payload: &[u8]) {
    let mut scan = ScanState::default();
    let whole = decoder.measure(rect, &t.conv, payload, &mut scan);
    assert_eq!(
        whole,
        Ok(Measure::Complete(payload.len())),
        "measure of {rect}"
    );
}

/// Encodes the whole image, then the second rectangle in the same streams, with the
/// encoder for `encoding`; decodes both in turn with ours; every pixel must be the
/// source's after the format's reduction.
fn round_trip(encoding: Encoding, data: &[u8]) {
    let Some(t) = round_trip_input(data) else {
        return;
    };
    let mut encoders = crate::server::Encoders::default();
    let mut decoders = crate::decode::Decoders::default();
    let encoder = encoders.get(encoding);
    let Some(decoder) = decoders.get_mut(encoding) else {
        return;
    };
    let mut decoded = Framebuffer::new(t.fb.width(), t.fb.height());
    let background = decoded.pixels().to_vec();
    for (i, rect) in [t.fb.bounds(), t.second].into_iter().enumerate() {
        let mut payload = Vec::new();
        encoder.encode(&t.fb, rect, &t.writer, &t.params, &mut payload);
        assert_measures(&*decoder, &t, rect, &payload);
        decoder
            .decode(rect, &payload, &t.conv, &mut decoded)
            .unwrap_or_else(|e| panic!("{encoding} rectangle {i} ({rect}) does not decode: {e}"));
        assert_exact(&t, &decoded, t.fb.bounds(), &background, "round trip");
    }
}

/// CopyRect: the second rectangle's pixels copied to the top-left corner (source and
/// destination may overlap); the client must show what the source showed before.
fn roundtrip_copyrect(data: &[u8]) {
    let Some(t) = round_trip_input(data) else {
        return;
    };
    let src = t.second;
    let dst = Rect::new(
        u16::from(data.get(11).copied().unwrap_or(0)) % (t.fb.width() - src.width + 1),
        u16::from(data.get(12).copied().unwrap_or(0)) % (t.fb.height() - src.height + 1),
        src.width,
        src.height,
    );
    let mut payload = Vec::new();
    crate::encode::copyrect::write_copyrect(src.x, src.y, &mut payload);
    let mut decoders = crate::decode::Decoders::default();
    let mut client = t.fb.clone();
    assert_measures(&decoders.copy_rect, &t, dst, &payload);
    decoders
        .copy_rect
        .decode(dst, &payload, &t.conv, &mut client)
        .unwrap_or_else(|e| panic!("copyrect does not decode: {e}"));
    let width = usize::from(t.fb.width());
    for (i, &got) in client.pixels().iter().enumerate() {
        let (x, y) = (i % width, i / width);
        let inside = (usize::from(dst.x)..dst.right() as usize).contains(&x)
            && (usize::from(dst.y)..dst.bottom() as usize).contains(&y);
        let want = if inside {
            let (sx, sy) = (
                x - usize::from(dst.x) + usize::from(src.x),
                y - usize::from(dst.y) + usize::from(src.y),
            );
            t.fb.pixels()[sy * width + sx]
        } else {
            t.fb.pixels()[i]
        };
        assert_eq!(got, want, "pixel ({x}, {y}) after copying {src} to {dst}");
    }
}

/// PSNR in dB of `got` against `want` over the RGB channels of `rect`.
fn psnr(got: &Framebuffer, want: &[u32], rect: Rect) -> f64 {
    let width = usize::from(got.width());
    let mut sum = 0f64;
    for y in usize::from(rect.y)..rect.bottom() as usize {
        for x in usize::from(rect.x)..rect.right() as usize {
            let (a, b) = (got.pixels()[y * width + x], want[y * width + x]);
            for shift in [0, 8, 16] {
                let d = f64::from((a >> shift) as u8) - f64::from((b >> shift) as u8);
                sum += d * d;
            }
        }
    }
    let mse = sum / (rect.area() as f64 * 3.0);
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

/// The lowest PSNR a Tight JPEG rectangle may have, by JPEG quality level: images drawn
/// by [`draw`] are the worst case for JPEG (saturated single-pixel detail, which 4:2:0
/// chroma subsampling at the lowest levels averages away).
fn jpeg_min_psnr(quality: u8) -> f64 {
    match quality {
        0..=2 => 6.0,
        3..=5 => 9.0,
        _ => 14.0,
    }
}

/// Tight through [`TightEncoder::encode_many`](crate::encode::tight::TightEncoder::encode_many),
/// lossless (fills, palettes, gradient and copy filters) or with JPEG: the whole image,
/// then the second rectangle, each batch decoded with ours. The pieces must cover the
/// rectangle exactly once; every piece but a JPEG one must be exact, JPEG ones within
/// [`jpeg_min_psnr`] of the source.
fn roundtrip_tight(data: &[u8], jpeg: bool) {
    let Some(mut t) = round_trip_input(data) else {
        return;
    };
    if jpeg {
        t.params.quality.get_or_insert(data[6] % 10);
    } else {
        t.params.quality = None;
    }
    let mut encoder = crate::encode::tight::TightEncoder::new();
    let mut decoder = crate::decode::tight::TightDecoder::default();
    let mut decoded = Framebuffer::new(t.fb.width(), t.fb.height());
    let expected: Vec<u32> = t.fb.pixels().iter().map(|&p| reduced(&t, p)).collect();
    let width = usize::from(t.fb.width());
    for rect in [t.fb.bounds(), t.second] {
        let mut pieces = Vec::new();
        encoder.encode_many(&t.fb, &[rect], &t.writer, &t.params, &mut pieces);
        let mut covered = vec![0u8; t.fb.pixels().len()];
        let mut jpeg_rects = Vec::new();
        for (piece, payload) in &pieces {
            assert!(
                piece.width <= crate::encode::tight::MAX_WIDTH,
                "{piece} too wide"
            );
            assert_measures(&decoder, &t, *piece, payload);
            decoder
                .decode(*piece, payload, &t.conv, &mut decoded)
                .unwrap_or_else(|e| panic!("tight piece {piece} does not decode: {e}"));
            let is_jpeg = payload.first().is_some_and(|&c| c >> 4 == 0x9);
            assert!(jpeg || !is_jpeg, "JPEG without a quality level");
            if is_jpeg {
                jpeg_rects.push(*piece);
            }
            for y in piece.y..piece.y + piece.height {
                for x in piece.x..piece.x + piece.width {
                    covered[usize::from(y) * width + usize::from(x)] += 1;
                }
            }
        }
        for (i, &n) in covered.iter().enumerate() {
            let (x, y) = ((i % width) as u16, (i / width) as u16);
            let inside = rect.intersects(&Rect::new(x, y, 1, 1));
            assert_eq!(
                n,
                u8::from(inside),
                "pixel ({x}, {y}) covered {n} times for {rect}"
            );
        }
        for &piece in &jpeg_rects {
            let quality = t.params.quality.unwrap_or(0);
            let p = psnr(&decoded, &expected, piece);
            assert!(
                p >= jpeg_min_psnr(quality),
                "JPEG piece {piece} at quality {quality}: PSNR {p:.1} dB"
            );
        }
        // Everything else in this batch's rectangle exact.
        for y in rect.y..rect.y + rect.height {
            for x in rect.x..rect.x + rect.width {
                let at = Rect::new(x, y, 1, 1);
                if jpeg_rects.iter().any(|r| r.intersects(&at)) {
                    continue;
                }
                let i = usize::from(y) * width + usize::from(x);
                assert_eq!(
                    decoded.pixels()[i],
                    expected[i],
                    "tight: pixel ({x}, {y}) of {rect} in {:?} (source {:06x})",
                    t.format,
                    t.fb.pixels()[i]
                );
            }
        }
    }
}

/// Cursor and Cursor with alpha: a cursor image from the input (size from two bytes,
/// RGBA from the rest, repeated), written by ours and read back by ours. Cursor keeps
/// colours (reduced by the format) where alpha is at least half, nothing elsewhere;
/// Cursor with alpha keeps alpha exactly and colours within premultiplication's steps.
fn roundtrip_cursor(data: &[u8]) {
    let Some(t) = round_trip_input(data) else {
        return;
    };
    let (width, height) = (t.second.width.min(64), t.second.height.min(64));
    let bytes = data.get(11..).unwrap_or_default();
    let rgba: Vec<u8> = if bytes.is_empty() {
        vec![0; usize::from(width) * usize::from(height) * 4]
    } else {
        bytes
            .iter()
            .copied()
            .cycle()
            .take(usize::from(width) * usize::from(height) * 4)
            .collect()
    };
    let image = cursor::CursorImage {
        hotspot_x: t.second.x,
        hotspot_y: t.second.y,
        width,
        height,
        rgba,
    };
    for alpha in [false, true] {
        let mut out = Vec::new();
        if alpha {
            crate::encode::cursor::write_alpha_cursor(&image, &mut out);
        } else {
            crate::encode::cursor::write_cursor(&image, &t.writer, &mut out);
        }
        let (header, used) = match RectHeader::parse(&out) {
            Ok(ok) => ok,
            Err(e) => panic!("cursor header does not parse: {e:?}"),
        };
        let payload = &out[used..];
        let rect = header.rect;
        assert_eq!(
            (rect.x, rect.y, rect.width, rect.height),
            (image.hotspot_x, image.hotspot_y, width, height)
        );
        let (measured, decoded) = if alpha {
            (
                cursor::measure_alpha_cursor(rect, payload),
                cursor::decode_alpha_cursor(rect, payload),
            )
        } else {
            (
                cursor::measure_cursor(rect, &t.conv, payload),
                cursor::decode_cursor(rect, payload, &t.conv),
            )
        };
        assert_eq!(measured, Ok(Measure::Complete(payload.len())));
        let decoded = decoded.unwrap_or_else(|e| panic!("cursor does not decode: {e}"));
        for (i, (got, src)) in decoded
            .rgba
            .chunks_exact(4)
            .zip(image.rgba.chunks_exact(4))
            .enumerate()
        {
            let rgb = u32::from_be_bytes([0, src[0], src[1], src[2]]);
            if alpha {
                let a = src[3];
                assert_eq!(got[3], a, "alpha of cursor pixel {i}");
                // Premultiplied channels come in steps of 255 / alpha.
                let step = if a == 0 { 255 } else { 255 / u16::from(a) + 1 };
                for c in 0..3 {
                    let d = u16::from(got[c].abs_diff(if a == 0 { 0 } else { src[c] }));
                    assert!(
                        d <= step,
                        "channel {c} of cursor pixel {i}: {got:?} from {src:?}"
                    );
                }
            } else if src[3] >= 128 {
                let want = reduced(&t, rgb).to_be_bytes();
                assert_eq!(got, [want[1], want[2], want[3], 0xff], "cursor pixel {i}");
            } else {
                assert_eq!(got, [0, 0, 0, 0], "masked cursor pixel {i}");
            }
        }
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

    #[test]
    fn derived_formats_hand_checked() {
        assert_eq!(derived_format(2, 191, 7), Some(PixelFormat::RGB888));
        assert_eq!(derived_format(1, 172, 4), Some(PixelFormat::RGB565));
        assert_eq!(derived_format(7, 0, 0), Some(PixelFormat::COLOURMAP8));
        // Every derived format is valid, and all three sizes and both byte orders occur.
        let mut seen = std::collections::BTreeSet::new();
        for a in 0..=255u8 {
            for b in [0u8, 0x5a, 0xff] {
                if let Some(f) = derived_format(a, b, a ^ b) {
                    assert_eq!(f.validate(), Ok(()));
                    seen.insert((f.bits_per_pixel, f.big_endian, f.true_colour));
                }
            }
        }
        assert_eq!(seen.len(), 7, "{seen:?}");
    }

    #[test]
    fn round_trip_oracles_accept_random_inputs() {
        let mut seed = 0x9e37_79b9u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for round in 0..300 {
            let len = 12 + (next() % 400) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Every other input with a palette, as the fuzzers' seeds have.
            if round % 2 == 0 {
                data[11] = 4;
            }
            for (name, oracle) in TARGETS.iter().filter(|(n, _)| n.starts_with("roundtrip_")) {
                eprintln!("{name} {data:02x?}");
                oracle(&data);
            }
        }
    }

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
