//! Tight (7) and TightPNG (-260) encodings.
//!
//! Spec: [Tight Encoding] and [Tight PNG Encoding] in the RFB community specification.
//!
//! A rectangle starts with a *compression-control* byte. Its low four bits reset zlib
//! streams 0..3 before anything else happens (for every kind of rectangle); its high
//! four bits choose the method:
//!
//! - `0..=7`, Tight only, **BasicCompression**: bits 4-5 pick the zlib stream, bit 6
//!   says a *filter-id* byte follows (copy, palette or gradient). The filtered data is
//!   sent as is when shorter than 12 bytes, otherwise as a compact length and zlib data.
//! - `8`, **FillCompression**: one `TPIXEL` for the whole rectangle.
//! - `9`, **JpegCompression**: a compact length and a JFIF stream.
//! - `0xA`, TightPNG only, **PngCompression**: a compact length and a PNG stream.
//!
//! TightPNG is Tight without BasicCompression, so both decoders share one parser
//! (`scan`) and one drawing routine (`decode_rect`); only TightPNG accepts PNG and
//! only Tight keeps zlib streams.
//!
//! **BasicCompression Without Zlib** (`0xA`/`0xE` in Tight, only after the client
//! advertised pseudo-encoding -317) is not accepted: kvmux does not advertise it.
//!
//! [Tight Encoding]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#tight-encoding
//! [Tight PNG Encoding]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#tight-png-encoding

use super::zstream::ZStream;
use super::{payload_limit, RectDecoder, ScanState};
use crate::error::{DecodeError, Measure};
use crate::framebuffer::{Framebuffer, Rect};
use crate::jpeg::{JpegDecoder, JpegPool};
use crate::pixel::PixelConverter;
use std::ops::Range;

/// Filtered data shorter than this is sent uncompressed.
const MIN_TO_COMPRESS: usize = 12;

/// Zlib streams a Tight connection keeps.
const STREAM_COUNT: usize = 4;

/// Largest value a compact length can carry (22 bits).
const MAX_COMPACT_LENGTH: usize = (1 << 22) - 1;

/// Which of the two encodings a rectangle belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Tight,
    TightPng,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Tight => "tight",
            Variant::TightPng => "tightpng",
        }
    }
}

/// The compression method chosen by the high nibble of the control byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Basic { stream: usize, filter_id: bool },
    Fill,
    Jpeg,
    Png,
}

fn method(variant: Variant, control: u8) -> Result<Method, DecodeError> {
    let high = control >> 4;
    match (variant, high) {
        (Variant::Tight, 0..=7) => Ok(Method::Basic {
            stream: usize::from(high & 0x3),
            filter_id: high & 0x4 != 0,
        }),
        (_, 8) => Ok(Method::Fill),
        (_, 9) => Ok(Method::Jpeg),
        (Variant::TightPng, 0xA) => Ok(Method::Png),
        (Variant::Tight, 0xA) => Err(DecodeError::invalid(
            "tight compression control",
            format!("0x{control:02x} (png compression is only valid in tightpng)"),
        )),
        (Variant::TightPng, 0..=7) => Err(DecodeError::invalid(
            "tightpng compression control",
            format!("0x{control:02x} (basic compression is not allowed in tightpng)"),
        )),
        _ => Err(DecodeError::invalid(
            if variant == Variant::Tight {
                "tight compression control"
            } else {
                "tightpng compression control"
            },
            format!("0x{control:02x}"),
        )),
    }
}

/// How BasicCompression data was filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    Copy,
    /// `colours` is 1..=256: the count byte plus one, never held in a `u8`.
    Palette {
        colours: usize,
    },
    Gradient,
}

/// Where the parts of a complete rectangle lie in its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    method: Method,
    filter: Filter,
    /// The palette's TPIXELs (empty unless the palette filter is used).
    palette: Range<usize>,
    /// Bytes of filtered data (BasicCompression only).
    filtered_len: usize,
    /// The data on the wire: the fill TPIXEL, the JPEG/PNG stream, or the filtered
    /// data (zlib-compressed when `compressed`).
    data: Range<usize>,
    compressed: bool,
}

/// The outcome of [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scan {
    Complete(Layout),
    /// This many bytes in total are needed before looking again.
    Need(usize),
}

/// Reads a compact length (1-3 bytes, 7 + 7 + 8 bits, least significant first) at
/// `pos`. `Err(n)`: `n` bytes in total are needed to read it.
fn compact_length(buf: &[u8], pos: usize) -> Result<(usize, usize), usize> {
    let byte = |i: usize| buf.get(pos + i).copied().ok_or(pos + i + 1);
    let b0 = byte(0)?;
    let mut len = usize::from(b0 & 0x7f);
    if b0 & 0x80 == 0 {
        return Ok((len, pos + 1));
    }
    let b1 = byte(1)?;
    len |= usize::from(b1 & 0x7f) << 7;
    if b1 & 0x80 == 0 {
        return Ok((len, pos + 2));
    }
    let b2 = byte(2)?;
    len |= usize::from(b2) << 14;
    debug_assert!(len <= MAX_COMPACT_LENGTH);
    Ok((len, pos + 3))
}

/// Parses the framing of one rectangle from `buf` without looking at its pixel data.
fn scan(
    variant: Variant,
    rect: Rect,
    conv: &PixelConverter,
    buf: &[u8],
) -> Result<Scan, DecodeError> {
    let limit = payload_limit(rect);
    let Some(&control) = buf.first() else {
        return Ok(Scan::Need(1));
    };
    let tpixel = conv.tpixel_size();
    // Reads a compact length at `pos` and places that many bytes after it.
    let counted =
        |pos: usize, context: &'static str| -> Result<Result<Range<usize>, usize>, DecodeError> {
            let (len, start) = match compact_length(buf, pos) {
                Ok(v) => v,
                Err(need) => return Ok(Err(need)),
            };
            if len as u64 > limit {
                return Err(DecodeError::TooLong {
                    context,
                    length: len as u64,
                    limit,
                });
            }
            Ok(Ok(start..start + len))
        };
    let complete = |layout: Layout| {
        Ok(if buf.len() >= layout.data.end {
            Scan::Complete(layout)
        } else {
            Scan::Need(layout.data.end)
        })
    };
    let method = method(variant, control)?;
    let filter = Filter::Copy;
    match method {
        Method::Fill => complete(Layout {
            method,
            filter,
            palette: 0..0,
            filtered_len: 0,
            data: 1..1 + tpixel,
            compressed: false,
        }),
        Method::Jpeg | Method::Png => {
            let context = if method == Method::Jpeg {
                "tight jpeg data"
            } else {
                "tightpng png data"
            };
            match counted(1, context)? {
                Ok(data) => complete(Layout {
                    method,
                    filter,
                    palette: 0..0,
                    filtered_len: 0,
                    data,
                    compressed: false,
                }),
                Err(need) => Ok(Scan::Need(need)),
            }
        }
        Method::Basic { filter_id, .. } => {
            let mut pos = 1 /* compression-control */;
            let filter = if filter_id {
                let Some(&id) = buf.get(pos) else {
                    return Ok(Scan::Need(pos + 1));
                };
                pos += 1 /* filter-id */;
                match id {
                    0 => Filter::Copy,
                    1 => {
                        let Some(&count) = buf.get(pos) else {
                            return Ok(Scan::Need(pos + 1));
                        };
                        pos += 1 /* number-of-colours - 1 */;
                        Filter::Palette {
                            colours: usize::from(count) + 1,
                        }
                    }
                    2 => {
                        if !conv.format().true_colour {
                            return Err(DecodeError::invalid(
                                "tight gradient filter",
                                "used with a colour-mapped pixel format",
                            ));
                        }
                        Filter::Gradient
                    }
                    _ => return Err(DecodeError::invalid("tight filter", format!("id {id}"))),
                }
            } else {
                Filter::Copy
            };
            let palette = match filter {
                Filter::Palette { colours } => pos..pos + colours * tpixel,
                _ => pos..pos,
            };
            pos = palette.end;
            let area = rect.area();
            let filtered_len = match filter {
                Filter::Copy | Filter::Gradient => area * tpixel,
                Filter::Palette { colours: 2 } => {
                    usize::from(rect.width).div_ceil(8) * usize::from(rect.height)
                }
                Filter::Palette { .. } => area,
            };
            if filtered_len < MIN_TO_COMPRESS {
                return complete(Layout {
                    method,
                    filter,
                    palette,
                    filtered_len,
                    data: pos..pos + filtered_len,
                    compressed: false,
                });
            }
            match counted(pos, "tight zlib data")? {
                Ok(data) => complete(Layout {
                    method,
                    filter,
                    palette,
                    filtered_len,
                    data,
                    compressed: true,
                }),
                Err(need) => Ok(Scan::Need(need)),
            }
        }
    }
}

fn measure(
    variant: Variant,
    rect: Rect,
    conv: &PixelConverter,
    buf: &[u8],
) -> Result<Measure, DecodeError> {
    Ok(match scan(variant, rect, conv, buf)? {
        Scan::Complete(layout) => Measure::Complete(layout.data.end),
        Scan::Need(n) => Measure::Need(n),
    })
}

/// Buffers reused from one rectangle to the next.
#[derive(Debug, Default)]
struct Scratch {
    /// Inflated filter data.
    inflated: Vec<u8>,
    /// Decoded PNG samples.
    image: Vec<u8>,
    jpeg: JpegDecoder,
    /// With more than one, JPEG rectangles go to a pool of this many threads rather
    /// than being decoded here (Tight only).
    jpeg_threads: usize,
    /// The pool, started with the first JPEG rectangle.
    jpeg_pool: Option<JpegPool>,
    /// Gradient filter: channel values of the row above.
    above: Vec<[i32; 3]>,
}

/// Decodes one complete rectangle of either variant. `streams` is empty for TightPNG.
fn decode_rect(
    variant: Variant,
    streams: &mut [ZStream],
    scratch: &mut Scratch,
    rect: Rect,
    payload: &[u8],
    conv: &PixelConverter,
    fb: &mut Framebuffer,
) -> Result<(), DecodeError> {
    fb.check(&rect)?;
    let Some(&control) = payload.first() else {
        return Err(DecodeError::Truncated {
            context: "tight rectangle",
            needed: 1,
        });
    };
    // Resets come first, whatever the method (spec, NOTE1).
    for (i, stream) in streams.iter_mut().enumerate() {
        if control & (1 << i) != 0 {
            stream.reset();
        }
    }
    let layout = match scan(variant, rect, conv, payload)? {
        Scan::Complete(layout) => layout,
        Scan::Need(n) => {
            return Err(DecodeError::Truncated {
                context: if variant == Variant::Tight {
                    "tight rectangle"
                } else {
                    "tightpng rectangle"
                },
                needed: n - payload.len(),
            })
        }
    };
    if payload.len() != layout.data.end {
        return Err(DecodeError::invalid(
            "tight rectangle",
            format!(
                "{} bytes after the end of the {} data",
                payload.len() - layout.data.end,
                variant.name()
            ),
        ));
    }
    // INVARIANT: `scan` returned Complete, so every range lies within `payload`.
    let data = &payload[layout.data.clone()];
    match layout.method {
        Method::Fill => fb.fill(rect, conv.tpixel(data)),
        Method::Jpeg if scratch.jpeg_threads > 1 => {
            let threads = scratch.jpeg_threads;
            let pool =
                match &mut scratch.jpeg_pool {
                    Some(pool) => pool,
                    empty => empty.insert(JpegPool::new(threads).ok_or_else(|| {
                        image_error(JPEG_CONTEXT, "cannot start decoding threads")
                    })?),
                };
            pool.submit(rect, data)
                .map_err(|e| image_error(JPEG_CONTEXT, e))
        }
        Method::Jpeg => {
            scratch
                .jpeg
                .decode(data, rect, fb)
                .map_err(|e| image_error(JPEG_CONTEXT, e))?;
            fb.add_damage(rect);
            Ok(())
        }
        Method::Png => {
            decode_png(data, rect, &mut scratch.image, fb)?;
            fb.add_damage(rect);
            Ok(())
        }
        Method::Basic { stream, .. } => {
            let filtered: &[u8] = if layout.compressed {
                let Some(zstream) = streams.get_mut(stream) else {
                    return Err(DecodeError::invalid(
                        "tight compression control",
                        format!("0x{control:02x}"),
                    ));
                };
                let n = zstream.inflate(
                    data,
                    &mut scratch.inflated,
                    layout.filtered_len,
                    "tight zlib data",
                )?;
                if n != layout.filtered_len {
                    return Err(DecodeError::Zlib {
                        context: "tight zlib data",
                        detail: format!("inflated to {n} bytes, expected {}", layout.filtered_len),
                    });
                }
                &scratch.inflated[..n]
            } else {
                data
            };
            if !rect.is_empty() {
                match layout.filter {
                    Filter::Copy => draw_copy(rect, filtered, conv, fb),
                    Filter::Palette { colours } => {
                        let mut palette = [0u32; 256];
                        let tpixel = conv.tpixel_size();
                        for (slot, bytes) in palette
                            .iter_mut()
                            .zip(payload[layout.palette.clone()].chunks_exact(tpixel))
                        {
                            *slot = conv.tpixel(bytes);
                        }
                        draw_palette(rect, filtered, &palette, colours, fb)?;
                    }
                    Filter::Gradient => draw_gradient(rect, filtered, conv, &mut scratch.above, fb),
                }
            }
            fb.add_damage(rect);
            Ok(())
        }
    }
}

/// `0x00RRGGBB` from three bytes `R, G, B`.
#[inline(always)]
fn rgb(r: u8, g: u8, b: u8) -> u32 {
    (u32::from(r) << 16) | (u32::from(g) << 8) | u32::from(b)
}

/// Copy filter: `data` holds `area * tpixel_size` bytes of TPIXELs.
fn draw_copy(rect: Rect, data: &[u8], conv: &PixelConverter, fb: &mut Framebuffer) {
    let rgb24 = conv.format().tight_uses_rgb24();
    let row_bytes = usize::from(rect.width) * conv.tpixel_size();
    for (i, src) in data.chunks_exact(row_bytes).enumerate() {
        // INVARIANT: `data` holds exactly `height` rows, so `i < height`.
        let dst = fb.row_mut(rect.x, rect.y + i as u16, rect.width);
        if rgb24 {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(3)) {
                *d = rgb(s[0], s[1], s[2]);
            }
        } else {
            // TPIXEL is a plain PIXEL outside the RGB24 case.
            conv.convert_row(src, dst);
        }
    }
}

/// Palette filter: 1 bit per pixel (rows padded to a byte, MSB leftmost) for two
/// colours, else one index byte per pixel.
fn draw_palette(
    rect: Rect,
    data: &[u8],
    palette: &[u32; 256],
    colours: usize,
    fb: &mut Framebuffer,
) -> Result<(), DecodeError> {
    let width = usize::from(rect.width);
    if colours == 2 {
        let row_bytes = width.div_ceil(8);
        for (i, src) in data.chunks_exact(row_bytes).enumerate() {
            let dst = fb.row_mut(rect.x, rect.y + i as u16, rect.width);
            for (pixels, &bits) in dst.chunks_mut(8).zip(src) {
                for (j, d) in pixels.iter_mut().enumerate() {
                    *d = palette[usize::from((bits >> (7 - j)) & 1)];
                }
            }
        }
        return Ok(());
    }
    if let Some(&max) = data.iter().max() {
        if usize::from(max) >= colours {
            return Err(DecodeError::invalid(
                "tight palette index",
                format!("{max} in a palette of {colours} colours"),
            ));
        }
    }
    for (i, src) in data.chunks_exact(width).enumerate() {
        let dst = fb.row_mut(rect.x, rect.y + i as u16, rect.width);
        for (d, &index) in dst.iter_mut().zip(src) {
            *d = palette[usize::from(index)];
        }
    }
    Ok(())
}

/// Gradient filter: each channel is the difference from the prediction
/// `left + above - above_left`, clamped to `0..=max`; sums wrap within the channel.
fn draw_gradient(
    rect: Rect,
    data: &[u8],
    conv: &PixelConverter,
    above: &mut Vec<[i32; 3]>,
    fb: &mut Framebuffer,
) {
    if conv.format().tight_uses_rgb24() {
        undo_gradient_rgb24(rect, data, fb);
    } else {
        let f = *conv.format();
        let shifts = [
            u32::from(f.red_shift),
            u32::from(f.green_shift),
            u32::from(f.blue_shift),
        ];
        undo_gradient(
            rect,
            data,
            conv.bytes_per_pixel(),
            [
                i32::from(f.red_max),
                i32::from(f.green_max),
                i32::from(f.blue_max),
            ],
            above,
            fb,
            |p| {
                let raw = conv.raw_pixel(p);
                [
                    raw.wrapping_shr(shifts[0]),
                    raw.wrapping_shr(shifts[1]),
                    raw.wrapping_shr(shifts[2]),
                ]
            },
            |v| {
                conv.map(
                    v[0].wrapping_shl(shifts[0])
                        | v[1].wrapping_shl(shifts[1])
                        | v[2].wrapping_shl(shifts[2]),
                )
            },
        );
    }
}

/// [`undo_gradient`] for 3-byte `TPIXEL`s, the common case: the row above is read back
/// from the framebuffer (its canonical `0x00RRGGBB` pixels are the decoded values), and
/// channels are bytes.
fn undo_gradient_rgb24(rect: Rect, data: &[u8], fb: &mut Framebuffer) {
    let width = usize::from(rect.width);
    let stride = usize::from(fb.width());
    let pixels = fb.pixels_mut();
    let channels = |p: u32| [(p >> 16) as u8, (p >> 8) as u8, p as u8];
    for (i, src) in data.chunks_exact(width * 3).enumerate() {
        let start = (usize::from(rect.y) + i) * stride + usize::from(rect.x);
        let (before, rest) = pixels.split_at_mut(start);
        let dst = &mut rest[..width];
        if i == 0 {
            // Nothing above: the prediction is the left neighbour.
            let mut left = [0u8; 3];
            for (d, px) in dst.iter_mut().zip(src.chunks_exact(3)) {
                for c in 0..3 {
                    left[c] = px[c].wrapping_add(left[c]);
                }
                *d = u32::from_be_bytes([0, left[0], left[1], left[2]]);
            }
            continue;
        }
        let up_row = &before[start - stride..start - stride + width];
        let mut left = [0i32; 3];
        let mut above_left = [0i32; 3];
        for ((d, px), &up) in dst.iter_mut().zip(src.chunks_exact(3)).zip(up_row) {
            let up = channels(up).map(i32::from);
            let mut value = [0u8; 3];
            for c in 0..3 {
                let predicted = clamp_byte(left[c] + up[c] - above_left[c]);
                value[c] = px[c].wrapping_add(predicted);
                left[c] = i32::from(value[c]);
            }
            above_left = up;
            *d = u32::from_be_bytes([0, value[0], value[1], value[2]]);
        }
    }
}

/// `v.clamp(0, 255)` for `v` in `-255..=510`, by table: on noise-like pictures the
/// prediction falls outside the range at random, and compilers turn arithmetic clamps
/// into branches that then mispredict.
#[inline(always)]
fn clamp_byte(v: i32) -> u8 {
    CLAMP[((v + 255) & 1023) as usize]
}

static CLAMP: [u8; 1024] = {
    let mut table = [255u8; 1024];
    let mut i = 0;
    while i < 255 {
        table[i] = 0;
        i += 1;
    }
    while i < 510 {
        table[i] = (i - 255) as u8;
        i += 1;
    }
    table
};

/// The gradient loop, generic over how a pixel's channels are read and packed so each
/// pixel format gets its own inlined loop. `above` holds the previous row's channel
/// values and is overwritten in place with the current row's.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn undo_gradient(
    rect: Rect,
    data: &[u8],
    pixel_size: usize,
    max: [i32; 3],
    above: &mut Vec<[i32; 3]>,
    fb: &mut Framebuffer,
    channels: impl Fn(&[u8]) -> [u32; 3],
    pack: impl Fn([u32; 3]) -> u32,
) {
    let width = usize::from(rect.width);
    above.clear();
    above.resize(width, [0; 3]);
    for (i, src) in data.chunks_exact(width * pixel_size).enumerate() {
        let dst = fb.row_mut(rect.x, rect.y + i as u16, rect.width);
        let mut left = [0i32; 3];
        let mut above_left = [0i32; 3];
        for ((d, px), up) in dst
            .iter_mut()
            .zip(src.chunks_exact(pixel_size))
            .zip(above.iter_mut())
        {
            let diff = channels(px);
            let mut value = [0u32; 3];
            for c in 0..3 {
                let predicted = (left[c] + up[c] - above_left[c]).clamp(0, max[c]);
                // INVARIANT: max is a u16, so the masked sum is in 0..=u16::MAX.
                value[c] = diff[c].wrapping_add(predicted as u32) & max[c] as u32;
                above_left[c] = up[c];
                left[c] = value[c] as i32;
            }
            *up = left;
            *d = pack(value);
        }
    }
}

fn image_error(context: &'static str, detail: impl std::fmt::Display) -> DecodeError {
    DecodeError::Image {
        context,
        detail: detail.to_string(),
    }
}

fn wrong_size(context: &'static str, w: usize, h: usize, rect: Rect) -> DecodeError {
    image_error(
        context,
        format!(
            "image is {w}x{h} but the rectangle is {}x{}",
            rect.width, rect.height
        ),
    )
}

const JPEG_CONTEXT: &str = "tight jpeg data";

/// Decodes a PNG stream the size of `rect` into it.
fn decode_png(
    data: &[u8],
    rect: Rect,
    image: &mut Vec<u8>,
    fb: &mut Framebuffer,
) -> Result<(), DecodeError> {
    const CONTEXT: &str = "tightpng png data";
    let (width, height) = (usize::from(rect.width), usize::from(rect.height));
    // Room for the decoded frame (at most RGBA, 8 bits after stripping), one row of
    // scratch, and metadata chunks no larger than the stream itself.
    let limit = rect.area() * 8 + data.len() * 2 + 64 * 1024;
    let mut decoder = png::Decoder::new_with_limits(data, png::Limits { bytes: limit });
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let info = decoder
        .read_header_info()
        .map_err(|e| image_error(CONTEXT, e))?;
    let (w, h) = (info.width as usize, info.height as usize);
    if (w, h) != (width, height) {
        return Err(wrong_size(CONTEXT, w, h, rect));
    }
    let mut reader = decoder.read_info().map_err(|e| image_error(CONTEXT, e))?;
    let (colour, depth) = reader.output_color_type();
    let components = match (colour, depth) {
        (png::ColorType::Grayscale, png::BitDepth::Eight) => 1,
        (png::ColorType::GrayscaleAlpha, png::BitDepth::Eight) => 2,
        (png::ColorType::Rgb, png::BitDepth::Eight) => 3,
        (png::ColorType::Rgba, png::BitDepth::Eight) => 4,
        _ => {
            return Err(image_error(
                CONTEXT,
                format!("unsupported output {colour:?} at {depth:?}"),
            ))
        }
    };
    let size = width * height * components;
    if reader.output_buffer_size() != size {
        return Err(image_error(CONTEXT, "unexpected output size"));
    }
    image.resize(size, 0);
    reader
        .next_frame(&mut image[..size])
        .map_err(|e| image_error(CONTEXT, e))?;
    // Alpha is ignored: TightPNG rectangles are opaque like every other rectangle.
    draw_samples(rect, &image[..size], components, fb);
    Ok(())
}

/// Draws 8-bit samples (`components` per pixel: grey, grey+alpha, RGB or RGBA; alpha
/// ignored) covering `rect`, rows packed without padding.
fn draw_samples(rect: Rect, samples: &[u8], components: usize, fb: &mut Framebuffer) {
    let row_bytes = usize::from(rect.width) * components;
    if row_bytes == 0 {
        return;
    }
    for (i, src) in samples.chunks_exact(row_bytes).enumerate() {
        let dst = fb.row_mut(rect.x, rect.y + i as u16, rect.width);
        match components {
            1 | 2 => {
                for (d, s) in dst.iter_mut().zip(src.chunks_exact(components)) {
                    *d = u32::from(s[0]) * 0x0001_0101;
                }
            }
            3 => {
                for (d, s) in dst.iter_mut().zip(src.chunks_exact(3)) {
                    *d = rgb(s[0], s[1], s[2]);
                }
            }
            _ => {
                for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                    *d = rgb(s[0], s[1], s[2]);
                }
            }
        }
    }
}

/// Tight (7): four persistent zlib streams and the scratch buffers.
#[derive(Debug, Default)]
pub struct TightDecoder {
    streams: [ZStream; STREAM_COUNT],
    scratch: Scratch,
}

impl TightDecoder {
    /// With `threads` above one, JPEG rectangles are handed to that many threads
    /// rather than decoded at once; [`finish_jpeg`](Self::finish_jpeg) draws them. The
    /// caller finishes them before anything else draws over them.
    pub fn set_jpeg_threads(&mut self, threads: usize) {
        if threads != self.scratch.jpeg_threads {
            self.scratch.jpeg_threads = threads;
            // Whatever is in flight is drawn by the caller first (between updates
            // nothing is).
            if self.jpeg_in_flight().is_empty() {
                self.scratch.jpeg_pool = None;
            }
        }
    }

    /// The JPEG rectangles handed to threads and not yet drawn.
    pub fn jpeg_in_flight(&self) -> &[Rect] {
        self.scratch
            .jpeg_pool
            .as_ref()
            .map_or(&[], |pool| pool.in_flight())
    }

    /// Waits for the JPEG rectangles handed to threads and draws them into `fb`.
    pub fn finish_jpeg(&mut self, fb: &mut Framebuffer) -> Result<(), DecodeError> {
        match self.scratch.jpeg_pool.as_mut() {
            Some(pool) if !pool.in_flight().is_empty() => {
                pool.finish(fb).map_err(|e| image_error(JPEG_CONTEXT, e))
            }
            _ => Ok(()),
        }
    }
}

impl RectDecoder for TightDecoder {
    fn measure(
        &self,
        rect: Rect,
        conv: &PixelConverter,
        buf: &[u8],
        _: &mut ScanState,
    ) -> Result<Measure, DecodeError> {
        measure(Variant::Tight, rect, conv, buf)
    }

    fn decode(
        &mut self,
        rect: Rect,
        payload: &[u8],
        conv: &PixelConverter,
        fb: &mut Framebuffer,
    ) -> Result<(), DecodeError> {
        decode_rect(
            Variant::Tight,
            &mut self.streams,
            &mut self.scratch,
            rect,
            payload,
            conv,
            fb,
        )
    }

    fn reset(&mut self) {
        for stream in &mut self.streams {
            stream.reset();
        }
    }
}

/// TightPNG (-260): fill, JPEG and PNG rectangles; no zlib streams.
#[derive(Debug, Default)]
pub struct TightPngDecoder {
    scratch: Scratch,
}

impl RectDecoder for TightPngDecoder {
    fn measure(
        &self,
        rect: Rect,
        conv: &PixelConverter,
        buf: &[u8],
        _: &mut ScanState,
    ) -> Result<Measure, DecodeError> {
        measure(Variant::TightPng, rect, conv, buf)
    }

    fn decode(
        &mut self,
        rect: Rect,
        payload: &[u8],
        conv: &PixelConverter,
        fb: &mut Framebuffer,
    ) -> Result<(), DecodeError> {
        decode_rect(
            Variant::TightPng,
            &mut [],
            &mut self.scratch,
            rect,
            payload,
            conv,
            fb,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixel::PixelFormat;
    use flate2::{Compress, Compression, FlushCompress};

    fn rgb24() -> PixelConverter {
        PixelConverter::new(PixelFormat::RGB888)
    }

    /// Compact length as the spec draws it: 7 bits, 7 bits, then 8 bits.
    fn compact(len: usize) -> Vec<u8> {
        assert!(len < 1 << 22);
        if len < 128 {
            vec![len as u8]
        } else if len < 16384 {
            vec![0x80 | (len & 0x7f) as u8, (len >> 7) as u8]
        } else {
            vec![
                0x80 | (len & 0x7f) as u8,
                0x80 | ((len >> 7) & 0x7f) as u8,
                (len >> 14) as u8,
            ]
        }
    }

    /// One rectangle's share of a zlib stream, ended with a sync flush as servers do.
    fn deflate(c: &mut Compress, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() * 2 + 64);
        c.compress_vec(data, &mut out, FlushCompress::Sync)
            .expect("compress");
        assert!(
            out.len() < out.capacity(),
            "deflate output buffer too small"
        );
        out
    }

    fn new_stream() -> Compress {
        Compress::new(Compression::default(), true)
    }

    /// `header`, then compact length and zlib data of `data` on stream `c`.
    fn zlib_rect(header: &[u8], c: &mut Compress, data: &[u8]) -> Vec<u8> {
        let z = deflate(c, data);
        let mut out = header.to_vec();
        out.extend(compact(z.len()));
        out.extend(z);
        out
    }

    /// A compact-length-prefixed image after `control`.
    fn image_rect(control: u8, image: &[u8]) -> Vec<u8> {
        let mut out = vec![control];
        out.extend(compact(image.len()));
        out.extend_from_slice(image);
        out
    }

    /// Every prefix asks for more; the whole payload, followed by unrelated bytes,
    /// measures to exactly its length.
    fn assert_measures(dec: &dyn RectDecoder, rect: Rect, conv: &PixelConverter, payload: &[u8]) {
        let mut buf = payload.to_vec();
        buf.extend_from_slice(&[0xee; 9]);
        let mut scan = ScanState::default();
        assert_eq!(
            dec.measure(rect, conv, &buf, &mut scan),
            Ok(Measure::Complete(payload.len()))
        );
        for cut in 0..payload.len() {
            match dec.measure(rect, conv, &payload[..cut], &mut ScanState::default()) {
                Ok(Measure::Need(n)) => {
                    assert!(n > cut && n <= payload.len(), "cut {cut}: need {n}")
                }
                other => panic!("cut {cut} of {}: {other:?}", payload.len()),
            }
        }
    }

    fn decode_ok(
        dec: &mut dyn RectDecoder,
        rect: Rect,
        conv: &PixelConverter,
        payload: &[u8],
        fb: &mut Framebuffer,
    ) {
        assert_measures(dec, rect, conv, payload);
        dec.decode(rect, payload, conv, fb).expect("decode");
    }

    fn pixels(fb: &Framebuffer, rect: Rect) -> Vec<u32> {
        fb.read_rect(rect).expect("in bounds")
    }

    /// Deterministic noise (a 32-bit LCG's top byte).
    fn noise(len: usize, seed: u32) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect()
    }

    fn from_rgb_bytes(bytes: &[u8]) -> Vec<u32> {
        bytes
            .chunks_exact(3)
            .map(|p| rgb(p[0], p[1], p[2]))
            .collect()
    }

    #[test]
    fn compact_length_matches_spec_example() {
        // "decimal value 10000 should be represented as two bytes: ... 90 4E"
        assert_eq!(compact(10000), [0x90, 0x4e]);
        assert_eq!(compact_length(&[0x90, 0x4e], 0), Ok((10000, 2)));
        assert_eq!(compact_length(&[0x7f], 0), Ok((127, 1)));
        assert_eq!(compact_length(&[0xff, 0xff, 0xff], 0), Ok((4_194_303, 3)));
        assert_eq!(compact_length(&[0, 0x80, 0x80], 1), Err(4));
        assert_eq!(compact_length(&[], 0), Err(1));
    }

    #[test]
    fn fill_rgb24_and_rgb565() {
        let mut dec = TightDecoder::default();
        let mut fb = Framebuffer::new(5, 4);
        let rect = Rect::new(1, 1, 3, 2);
        decode_ok(&mut dec, rect, &rgb24(), &[0x80, 0x12, 0x34, 0x56], &mut fb);
        assert_eq!(pixels(&fb, rect), vec![0x0012_3456; 6]);
        assert_eq!(fb.pixel(0, 0), Some(0));
        assert_eq!(fb.pixel(4, 3), Some(0));
        assert_eq!(fb.take_damage().rects(), &[rect]);

        // 16 bpp: TPIXEL is the plain little-endian PIXEL; 0x07e0 is pure green.
        let conv = PixelConverter::new(PixelFormat::RGB565);
        decode_ok(&mut dec, rect, &conv, &[0x80, 0xe0, 0x07], &mut fb);
        assert_eq!(pixels(&fb, rect), vec![0x0000_ff00; 6]);
    }

    #[test]
    fn copy_filter_raw_under_12_bytes() {
        let mut dec = TightDecoder::default();
        let mut fb = Framebuffer::new(4, 2);
        let rect = Rect::new(1, 1, 3, 1);
        let px = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        // No filter byte: copy.
        let mut payload = vec![0x00];
        payload.extend_from_slice(&px);
        decode_ok(&mut dec, rect, &rgb24(), &payload, &mut fb);
        assert_eq!(pixels(&fb, rect), [0x010203, 0x040506, 0x070809]);
        // Explicit copy filter, stream 3 named but unused.
        let mut payload = vec![0x70, 0x00];
        payload.extend_from_slice(&[9, 8, 7, 6, 5, 4, 3, 2, 1]);
        decode_ok(&mut dec, rect, &rgb24(), &payload, &mut fb);
        assert_eq!(pixels(&fb, rect), [0x090807, 0x060504, 0x030201]);
        // 16 bpp: 2x1 is 4 bytes of plain pixels (red, blue).
        let conv = PixelConverter::new(PixelFormat::RGB565);
        let rect = Rect::new(0, 0, 2, 1);
        decode_ok(
            &mut dec,
            rect,
            &conv,
            &[0x00, 0x00, 0xf8, 0x1f, 0x00],
            &mut fb,
        );
        assert_eq!(pixels(&fb, rect), [0xff0000, 0x0000ff]);
    }

    #[test]
    fn copy_filter_zlib() {
        let mut dec = TightDecoder::default();
        let mut fb = Framebuffer::new(8, 8);
        let rect = Rect::new(2, 3, 4, 2);
        let px: Vec<u8> = (0..24).map(|i| i * 10).collect();
        let mut c = new_stream();
        let payload = zlib_rect(&[0x00], &mut c, &px);
        decode_ok(&mut dec, rect, &rgb24(), &payload, &mut fb);
        assert_eq!(pixels(&fb, rect), from_rgb_bytes(&px));
    }

    #[test]
    fn copy_filter_zlib_two_and_three_byte_lengths() {
        let mut dec = TightDecoder::default();
        let mut fb = Framebuffer::new(100, 100);
        for (rect, length_bytes) in [(Rect::new(0, 0, 40, 40), 2), (Rect::new(0, 0, 100, 60), 3)] {
            let px = noise(rect.area() * 3, rect.area() as u32);
            let mut c = new_stream();
            let z = deflate(&mut c, &px);
            assert_eq!(compact(z.len()).len(), length_bytes);
            let mut payload = vec![0x01 /* reset stream 0 */];
            payload.extend(compact(z.len()));
            payload.extend(z);
            decode_ok(&mut dec, rect, &rgb24(), &payload, &mut fb);
            assert_eq!(pixels(&fb, rect), from_rgb_bytes(&px));
        }
    }

    #[test]
    fn palette_two_colours_bitmap_with_padding() {
        let mut dec = TightDecoder::default();
        let mut fb = Framebuffer::new(12, 8);
        let (a, b) = (0x0011_2233, 0x00aa_bbcc);
        let header = [0x40, 0x01, 0x01, 0x11, 0x22, 0x33, 0xaa, 0xbb, 0xcc];
        // Width 10: two bytes per row, the last 6 bits padding (set here to show
        // they are ignored).
        let rect = Rect::new(1, 2, 10, 2);
        let mut payload = header.to_vec();
        payload.extend_from_slice(&[0b1010_0000, 0b1111_1111, 0b0000_0001, 0b0100_0000]);
        decode_ok(&mut dec, rect, &rgb24(), &payload, &mut fb);
        assert_eq!(
            pixels(&fb, rect),
            [
                b, a, b, a, a, a, a, a, b, b, //
                a, a, a, a, a, a, a, b, a, b,
            ]
        );
        assert_eq!(fb.pixel(11, 2), Some(0));

        // 10x6 is 12 bytes of bitmap: compressed, here on stream 1.
        let rect = Rect::new(0, 0, 10, 6);
        let bitmap: [u8; 12] = [
            0xff, 0xc0, 0x00, 0x00, 0x80, 0x40, 0x55, 0x40, 0xaa, 0x80, 0x01, 0x00,
        ];
        let mut header = header;
        header[0] = 0x50;
        let payload = zlib_rect(&header, &mut new_stream(), &bitmap);
        decode_ok(&mut dec, rect, &rgb24(), &payload, &mut fb);
        let expected: Vec<u32> = bitmap
            .chunks(2)
            .flat_map(|row| {
                (0..10).map(move |x| {
                    if row[x / 8] & (0x80 >> (x % 8)) != 0 {
                        b
                    } else {
                        a
                    }
                })
            })
            .collect();
        assert_eq!(pixels(&fb, rect), expected);
    }

    #[test]
    fn palette_of_256_colours() {
        let mut dec = TightDecoder::default();
        let mut fb = Framebuffer::new(16, 16);
        let rect = Rect::new(0, 0, 16, 16);
        let colour = |i: usize| [i as u8, 255 - i as u8, (i as u8) ^ 0x5a];
        // Stream 2 with a filter byte; count byte 255 means 256 colours.
        let mut header = vec![0x60, 0x01, 0xff];
        for i in 0..256 {
            header.extend_from_slice(&colour(i));
        }
        let indices: Vec<u8> = (0..256).map(|i| (i * 7 % 256) as u8).collect();
        let payload = zlib_rect(&header, &mut new_stream(), &indices);
        decode_ok(&mut dec, rect, &rgb24(), &payload, &mut fb);
        let expected: Vec<u32> = indices
            .iter()
            .map(|&i| {
                let [r, g, b] = colour(usize::from(i));
                rgb(r, g, b)
            })
            .collect();
        assert_eq!(pixels(&fb, rect), expected);
        assert_eq!(fb.pixel(1, 0), Some(0x0007_f85d));
    }

    #[test]
    fn palette_of_three_colours_raw() {
        let mut dec = TightDecoder::default();
        let mut fb = Framebuffer::new(3, 1);
        let rect = Rect::new(0, 0, 3, 1);
        let payload = [0x40, 0x01, 0x02, 1, 1, 1, 2, 2, 2, 3, 3, 3, 2, 0, 1];
        decode_ok(&mut dec, rect, &rgb24(), &payload, &mut fb);
        assert_eq!(pixels(&fb, rect), [0x030303, 0x010101, 0x020202]);
    }

    #[test]
    fn palette_index_out_of_range() {
        let mut dec = TightDecoder::default();
        let mut fb = Framebuffer::new(3, 1);
        let rect = Rect::new(0, 0, 3, 1);
        let payload = [0x40, 0x01, 0x02, 1, 1, 1, 2, 2, 2, 3, 3, 3, 2, 3, 1];
        let err = dec
            .decode(rect, &payload, &rgb24(), &mut fb)
            .expect_err("index 3 of 3 colours");
        assert!(matches!(err, DecodeError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("3 in a palette of 3"), "{err}");
    }

    #[test]
    fn gradient_rgb24_hand_computed() {
        // Image (R, G, B):
        //   A (10, 20, 200)   B (200, 30, 40)  C (250, 0, 5)
        //   D (240, 25, 35)   E (5, 200, 100)  F (0, 0, 0)
        // Prediction P = left + above - above_left, clamped to 0..=255; sent D = V - P
        // modulo 256:
        //   A: P = 0                          → (10, 20, 200)
        //   B: P = A                          → (190, 10, -160 = 96)
        //   C: P = B                          → (50, -30 = 226, -35 = 221)
        //   D: P = A                          → (230, 5, -165 = 91)
        //   E: P = D + B - A = (430→255, 35, -125→0) → (-250 = 6, 165, 100)
        //   F: P = E + C - B = (55, 170, 65)  → (-55 = 201, -170 = 86, -65 = 191)
        let diffs = [
            10, 20, 200, 190, 10, 96, 50, 226, 221, //
            230, 5, 91, 6, 165, 100, 201, 86, 191,
        ];
        let mut dec = TightDecoder::default();
        let mut fb = Framebuffer::new(5, 5);
        let rect = Rect::new(1, 2, 3, 2);
        let payload = zlib_rect(&[0x70, 0x02], &mut new_stream(), &diffs);
        decode_ok(&mut dec, rect, &rgb24(), &payload, &mut fb);
        assert_eq!(
            pixels(&fb, rect),
            [
                0x000a_14c8,
                0x00c8_1e28,
                0x00fa_0005,
                0x00f0_1923,
                0x0005_c864,
                0x0000_0000
            ]
        );
    }

    #[test]
    fn gradient_rgb565_hand_computed() {
        // Channels (r of 31, g of 63, b of 31):
        //   P0 (31, 63, 0)   P1 (1, 2, 3)
        //   P2 (30, 0, 31)   P3 (0, 0, 0)
        //   P0: P = 0                         → (31, 63, 0)      = 0xffe0
        //   P1: P = P0                        → (2, 3, 3)        = 0x1063
        //   P2: P = P0                        → (31, 1, 31)      = 0xf83f
        //   P3: P = P2 + P1 - P0 = (0, -61→0, 34→31) → (0, 0, 1) = 0x0001
        // 8 bytes: sent raw. Expected colours scale each channel as v * 255 / max.
        let payload = [0x40, 0x02, 0xe0, 0xff, 0x63, 0x10, 0x3f, 0xf8, 0x01, 0x00];
        let conv = PixelConverter::new(PixelFormat::RGB565);
        let mut dec = TightDecoder::default();
        let mut fb = Framebuffer::new(2, 2);
        let rect = Rect::new(0, 0, 2, 2);
        decode_ok(&mut dec, rect, &conv, &payload, &mut fb);
        // (1, 2, 3) → (8, 8, 25); (30, 0, 31) → (247, 0, 255).
        assert_eq!(
            pixels(&fb, rect),
            [0x00ff_ff00, 0x0008_0819, 0x00f7_00ff, 0x0000_0000]
        );
    }

    #[test]
    fn gradient_in_colour_mapped_format_is_refused() {
        let dec = TightDecoder::default();
        let conv = PixelConverter::new(PixelFormat::COLOURMAP8);
        let err = dec
            .measure(
                Rect::new(0, 0, 2, 2),
                &conv,
                &[0x40, 0x02],
                &mut ScanState::default(),
            )
            .expect_err("gradient needs true colour");
        assert!(matches!(err, DecodeError::Invalid { .. }), "{err}");
    }

    #[test]
    fn streams_continue_and_reset() {
        let rect = Rect::new(0, 0, 4, 2);
        let p: Vec<u8> = (0..24).map(|i| i * 3).collect();
        let q: Vec<u8> = (0..24).map(|i| 255 - i).collect();
        let conv = rgb24();
        let mut fb = Framebuffer::new(4, 2);
        let mut dec = TightDecoder::default();

        let mut c0 = new_stream();
        let mut c1 = new_stream();
        let a = zlib_rect(&[0x00], &mut c0, &p);
        let f = zlib_rect(&[0x10], &mut c1, &q);
        let b = zlib_rect(&[0x00], &mut c0, &p);
        let g = zlib_rect(&[0x10], &mut c1, &q);
        decode_ok(&mut dec, rect, &conv, &a, &mut fb);
        assert_eq!(pixels(&fb, rect), from_rgb_bytes(&p));
        decode_ok(&mut dec, rect, &conv, &f, &mut fb);
        assert_eq!(pixels(&fb, rect), from_rgb_bytes(&q));
        // B leans on A's history: a fresh decoder cannot read it.
        assert!(TightDecoder::default()
            .decode(rect, &b, &conv, &mut Framebuffer::new(4, 2))
            .is_err());
        decode_ok(&mut dec, rect, &conv, &b, &mut fb);
        assert_eq!(pixels(&fb, rect), from_rgb_bytes(&p));
        decode_ok(&mut dec, rect, &conv, &g, &mut fb);
        assert_eq!(pixels(&fb, rect), from_rgb_bytes(&q));

        // A fresh stream on stream 0 without a reset is garbage to the decoder.
        let fresh = zlib_rect(&[0x00], &mut new_stream(), &q);
        let mut probe = TightDecoder::default();
        probe.decode(rect, &a, &conv, &mut fb).expect("first rect");
        assert!(probe.decode(rect, &fresh, &conv, &mut fb).is_err());
        // With the reset bit it decodes.
        let mut c0 = new_stream();
        let c = zlib_rect(&[0x01], &mut c0, &q);
        decode_ok(&mut dec, rect, &conv, &c, &mut fb);
        assert_eq!(pixels(&fb, rect), from_rgb_bytes(&q));
        // Stream 1 was left alone by that reset.
        let h = zlib_rect(&[0x10], &mut c1, &p);
        decode_ok(&mut dec, rect, &conv, &h, &mut fb);
        assert_eq!(pixels(&fb, rect), from_rgb_bytes(&p));

        // Resets ride on fill rectangles too: reset streams 0 and 1 (0x83).
        decode_ok(&mut dec, rect, &conv, &[0x83, 1, 2, 3], &mut fb);
        assert_eq!(pixels(&fb, rect), vec![0x0001_0203; 8]);
        let mut c0 = new_stream();
        let mut c1 = new_stream();
        decode_ok(
            &mut dec,
            rect,
            &conv,
            &zlib_rect(&[0x00], &mut c0, &p),
            &mut fb,
        );
        assert_eq!(pixels(&fb, rect), from_rgb_bytes(&p));
        decode_ok(
            &mut dec,
            rect,
            &conv,
            &zlib_rect(&[0x10], &mut c1, &q),
            &mut fb,
        );
        assert_eq!(pixels(&fb, rect), from_rgb_bytes(&q));

        // ... and on JPEG rectangles (0x94: reset stream 2).
        let mut c2 = new_stream();
        decode_ok(
            &mut dec,
            rect,
            &conv,
            &zlib_rect(&[0x20], &mut c2, &p),
            &mut fb,
        );
        let jpeg = encode_jpeg(&[128; 24], 4, 2);
        decode_ok(&mut dec, rect, &conv, &image_rect(0x94, &jpeg), &mut fb);
        decode_ok(
            &mut dec,
            rect,
            &conv,
            &zlib_rect(&[0x20], &mut new_stream(), &q),
            &mut fb,
        );
        assert_eq!(pixels(&fb, rect), from_rgb_bytes(&q));

        // RectDecoder::reset starts every stream anew.
        dec.reset();
        decode_ok(
            &mut dec,
            rect,
            &conv,
            &zlib_rect(&[0x30], &mut new_stream(), &p),
            &mut fb,
        );
        assert_eq!(pixels(&fb, rect), from_rgb_bytes(&p));
    }

    /// A JFIF stream of 8-bit samples (RGB, or grey with `Subsamp::Gray`), by
    /// libjpeg-turbo at quality 92.
    fn jpeg_of(samples: &[u8], w: u16, h: u16, sampling: turbojpeg::Subsamp) -> Vec<u8> {
        jpeg_with(samples, w, h, sampling, false)
    }

    fn jpeg_with(
        samples: &[u8],
        w: u16,
        h: u16,
        sampling: turbojpeg::Subsamp,
        progressive: bool,
    ) -> Vec<u8> {
        let format = if sampling == turbojpeg::Subsamp::Gray {
            turbojpeg::PixelFormat::GRAY
        } else {
            turbojpeg::PixelFormat::RGB
        };
        let image = turbojpeg::Image {
            pixels: samples,
            width: usize::from(w),
            pitch: usize::from(w) * format.size(),
            height: usize::from(h),
            format,
        };
        let mut c = turbojpeg::Compressor::new().expect("compressor");
        c.set_quality(92).expect("quality");
        c.set_subsamp(sampling).expect("subsampling");
        c.set_progressive(progressive).expect("progressive");
        c.compress_to_vec(image).expect("jpeg encode")
    }

    fn encode_jpeg(samples: &[u8], w: u16, h: u16) -> Vec<u8> {
        jpeg_of(samples, w, h, turbojpeg::Subsamp::None)
    }

    /// Peak signal-to-noise ratio over the R, G and B channels, in dB.
    fn psnr(expected: &[u32], got: &[u32]) -> f64 {
        assert_eq!(expected.len(), got.len());
        let mut sum = 0f64;
        for (&e, &g) in expected.iter().zip(got) {
            for shift in [16, 8, 0] {
                let d = f64::from((e >> shift) & 0xff) - f64::from((g >> shift) & 0xff);
                sum += d * d;
            }
        }
        let mse = sum / (expected.len() as f64 * 3.0);
        if mse == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (255.0 * 255.0 / mse).log10()
        }
    }

    /// A smooth 8-bit RGB test picture.
    fn picture(w: usize, h: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                out.extend_from_slice(&[(x * 9) as u8, (y * 13) as u8, (128 + x * 2 + y) as u8]);
            }
        }
        out
    }

    #[test]
    fn jpeg_rgb_and_grey() {
        let (w, h) = (27usize, 19usize);
        let rgb_samples = picture(w, h);
        let rect = Rect::new(3, 2, w as u16, h as u16);
        let mut fb = Framebuffer::new(40, 30);
        let mut dec = TightDecoder::default();
        let jpeg = encode_jpeg(&rgb_samples, w as u16, h as u16);
        decode_ok(&mut dec, rect, &rgb24(), &image_rect(0x90, &jpeg), &mut fb);
        let db = psnr(&from_rgb_bytes(&rgb_samples), &pixels(&fb, rect));
        assert!(db > 30.0, "psnr {db}");
        assert_eq!(fb.pixel(2, 2), Some(0));
        assert_eq!(fb.pixel(30, 21), Some(0));
        assert_eq!(fb.take_damage().rects(), &[rect]);

        let grey: Vec<u8> = (0..w * h).map(|i| (i % w * 8 + i / w * 2) as u8).collect();
        let jpeg = jpeg_of(&grey, w as u16, h as u16, turbojpeg::Subsamp::Gray);
        decode_ok(&mut dec, rect, &rgb24(), &image_rect(0x90, &jpeg), &mut fb);
        let expected: Vec<u32> = grey.iter().map(|&g| rgb(g, g, g)).collect();
        let got = pixels(&fb, rect);
        assert!(got
            .iter()
            .all(|p| p >> 16 == p & 0xff && (p >> 8) & 0xff == p & 0xff));
        let db = psnr(&expected, &got);
        assert!(db > 30.0, "psnr {db}");

        // Progressive JPEGs too, in a 16 bpp session.
        let progressive = jpeg_with(
            &rgb_samples,
            w as u16,
            h as u16,
            turbojpeg::Subsamp::Sub2x2,
            true,
        );
        let conv = PixelConverter::new(PixelFormat::RGB565);
        fb.pixels_mut().fill(0);
        decode_ok(
            &mut dec,
            rect,
            &conv,
            &image_rect(0x90, &progressive),
            &mut fb,
        );
        let db = psnr(&from_rgb_bytes(&rgb_samples), &pixels(&fb, rect));
        assert!(db > 30.0, "psnr {db}");
    }

    #[test]
    fn jpeg_of_the_wrong_size_is_refused() {
        let jpeg = encode_jpeg(&picture(16, 8), 16, 8);
        let payload = image_rect(0x90, &jpeg);
        let conv = rgb24();
        let mut fb = Framebuffer::new(32, 32);
        for rect in [
            Rect::new(0, 0, 16, 9),
            Rect::new(0, 0, 15, 8),
            Rect::new(0, 0, 8, 8),
            Rect::new(0, 0, 16, 4),
        ] {
            let mut dec = TightDecoder::default();
            assert_measures(&dec, rect, &conv, &payload);
            let err = dec
                .decode(rect, &payload, &conv, &mut fb)
                .expect_err("wrong size");
            assert!(matches!(err, DecodeError::Image { .. }), "{rect}: {err}");
        }
        assert!(fb.pixels().iter().all(|&p| p == 0));
        assert!(fb.damage().is_empty());
    }

    #[test]
    fn jpeg_garbage_is_an_error() {
        let mut dec = TightDecoder::default();
        let mut fb = Framebuffer::new(8, 8);
        let rect = Rect::new(0, 0, 8, 8);
        let conv = rgb24();
        let jpeg = encode_jpeg(&picture(8, 8), 8, 8);
        for junk in [
            vec![],
            vec![0xff; 40],
            noise(300, 7),
            jpeg[..jpeg.len() / 3].to_vec(),
            [&jpeg[..20], &noise(200, 9)[..]].concat(),
        ] {
            let payload = image_rect(0x90, &junk);
            // Corrupt entropy-coded data may still decode to something; headers not.
            let _ = dec.decode(rect, &payload, &conv, &mut fb);
        }
        assert!(dec
            .decode(rect, &image_rect(0x90, &[0xff; 40]), &conv, &mut fb)
            .is_err());
        assert!(dec
            .decode(rect, &image_rect(0x90, &[]), &conv, &mut fb)
            .is_err());
    }

    fn encode_png(
        samples: &[u8],
        w: u32,
        h: u32,
        colour: png::ColorType,
        depth: png::BitDepth,
        palette: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(colour);
        encoder.set_depth(depth);
        if let Some(palette) = palette {
            encoder.set_palette(palette.to_vec());
        }
        let mut writer = encoder.write_header().expect("png header");
        writer.write_image_data(samples).expect("png data");
        writer.finish().expect("png finish");
        out
    }

    #[test]
    fn tightpng_png_fill_and_jpeg() {
        let mut dec = TightPngDecoder::default();
        let conv = rgb24();
        let mut fb = Framebuffer::new(10, 10);
        let rect = Rect::new(2, 1, 5, 3);
        let samples = picture(5, 3);
        let png = encode_png(
            &samples,
            5,
            3,
            png::ColorType::Rgb,
            png::BitDepth::Eight,
            None,
        );
        decode_ok(&mut dec, rect, &conv, &image_rect(0xa0, &png), &mut fb);
        assert_eq!(pixels(&fb, rect), from_rgb_bytes(&samples));
        assert_eq!(fb.take_damage().rects(), &[rect]);

        // RGBA: alpha ignored.
        let rgba: Vec<u8> = samples
            .chunks(3)
            .flat_map(|p| [p[0], p[1], p[2], 7])
            .collect();
        let png = encode_png(
            &rgba,
            5,
            3,
            png::ColorType::Rgba,
            png::BitDepth::Eight,
            None,
        );
        fb.pixels_mut().fill(0);
        decode_ok(&mut dec, rect, &conv, &image_rect(0xa0, &png), &mut fb);
        assert_eq!(pixels(&fb, rect), from_rgb_bytes(&samples));

        // 16-bit grey keeps its high byte.
        let grey16: Vec<u8> = (0..15u16).flat_map(|i| (i * 4097).to_be_bytes()).collect();
        let png = encode_png(
            &grey16,
            5,
            3,
            png::ColorType::Grayscale,
            png::BitDepth::Sixteen,
            None,
        );
        decode_ok(&mut dec, rect, &conv, &image_rect(0xa0, &png), &mut fb);
        let expected: Vec<u32> = (0..15u32)
            .map(|i| ((i * 4097) >> 8) * 0x0001_0101)
            .collect();
        assert_eq!(pixels(&fb, rect), expected);

        // 2-bit palette, expanded.
        let palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9];
        // Rows of 5 two-bit indices: 0 1 2 3 0 | 3 3 3 3 3 | 1 0 1 0 1 (padded).
        let packed = [
            0b0001_1011,
            0b0000_0000,
            0xff,
            0b1100_0000,
            0b0100_0100,
            0b0100_0000,
        ];
        let png = encode_png(
            &packed,
            5,
            3,
            png::ColorType::Indexed,
            png::BitDepth::Two,
            Some(&palette),
        );
        decode_ok(&mut dec, rect, &conv, &image_rect(0xa0, &png), &mut fb);
        let (r, g, b, k) = (0xff0000, 0x00ff00, 0x0000ff, 0x090909);
        assert_eq!(
            pixels(&fb, rect),
            [r, g, b, k, r, k, k, k, k, k, g, r, g, r, g]
        );

        // Fill and JPEG as in Tight, with reset bits that mean nothing here.
        decode_ok(&mut dec, rect, &conv, &[0x8f, 4, 5, 6], &mut fb);
        assert_eq!(pixels(&fb, rect), vec![0x0004_0506; 15]);
        let jpeg = encode_jpeg(&samples, 5, 3);
        decode_ok(&mut dec, rect, &conv, &image_rect(0x90, &jpeg), &mut fb);
        let db = psnr(&from_rgb_bytes(&samples), &pixels(&fb, rect));
        assert!(db > 30.0, "psnr {db}");
    }

    #[test]
    fn png_of_the_wrong_size_or_broken_is_refused() {
        let conv = rgb24();
        let mut fb = Framebuffer::new(10, 10);
        let mut dec = TightPngDecoder::default();
        let png = encode_png(
            &picture(5, 3),
            5,
            3,
            png::ColorType::Rgb,
            png::BitDepth::Eight,
            None,
        );
        for rect in [Rect::new(0, 0, 5, 4), Rect::new(0, 0, 3, 5)] {
            let err = dec
                .decode(rect, &image_rect(0xa0, &png), &conv, &mut fb)
                .expect_err("wrong size");
            assert!(matches!(err, DecodeError::Image { .. }), "{err}");
        }
        let rect = Rect::new(0, 0, 5, 3);
        let mut broken = png.clone();
        let last = broken.len() - 20;
        broken[last] ^= 0x55;
        for junk in [vec![], noise(100, 3), png[..png.len() / 2].to_vec(), broken] {
            assert!(dec
                .decode(rect, &image_rect(0xa0, &junk), &conv, &mut fb)
                .is_err());
        }
    }

    #[test]
    fn bad_control_bytes() {
        let conv = rgb24();
        let rect = Rect::new(0, 0, 4, 4);
        let tight = TightDecoder::default();
        for control in [0xa0, 0xb0, 0xc3, 0xe0, 0xff] {
            let err = tight
                .measure(rect, &conv, &[control, 0, 0, 0], &mut ScanState::default())
                .expect_err("invalid control");
            assert!(matches!(err, DecodeError::Invalid { .. }), "{err}");
            assert!(
                err.to_string().contains(&format!("0x{control:02x}")),
                "{err}"
            );
        }
        let png = TightPngDecoder::default();
        for control in [0x00, 0x40, 0x71, 0xb0, 0xf0] {
            let err = png
                .measure(rect, &conv, &[control, 0, 0, 0], &mut ScanState::default())
                .expect_err("invalid control");
            assert!(matches!(err, DecodeError::Invalid { .. }), "{err}");
        }
        // Filter ids past gradient.
        let err = tight
            .measure(rect, &conv, &[0x40, 0x03], &mut ScanState::default())
            .expect_err("filter 3");
        assert!(err.to_string().contains("tight filter"), "{err}");
        let mut fb = Framebuffer::new(4, 4);
        assert!(TightDecoder::default()
            .decode(rect, &[0xa0, 0x00], &conv, &mut fb)
            .is_err());
    }

    #[test]
    fn compact_length_over_limit() {
        let conv = rgb24();
        let rect = Rect::new(0, 0, 1, 1);
        for (dec, control) in [
            (&TightDecoder::default() as &dyn RectDecoder, 0x90),
            (&TightPngDecoder::default() as &dyn RectDecoder, 0xa0),
        ] {
            let err = dec
                .measure(
                    rect,
                    &conv,
                    &[control, 0xff, 0xff, 0xff],
                    &mut ScanState::default(),
                )
                .expect_err("too long");
            assert!(
                matches!(
                    err,
                    DecodeError::TooLong {
                        length: 4_194_303,
                        ..
                    }
                ),
                "{err}"
            );
        }
        // 4x4 copy is 48 bytes: compressed, with a length far beyond 8 * 16 + 64 KiB.
        let rect = Rect::new(0, 0, 4, 4);
        let err = TightDecoder::default()
            .measure(
                rect,
                &conv,
                &[0x00, 0x80, 0x80, 0x08],
                &mut ScanState::default(),
            )
            .expect_err("too long");
        assert!(matches!(err, DecodeError::TooLong { .. }), "{err}");
        // Just under the limit is only waited for.
        let limit = payload_limit(rect) as usize;
        let mut buf = vec![0x00];
        buf.extend(compact(limit));
        assert_eq!(
            TightDecoder::default().measure(rect, &conv, &buf, &mut ScanState::default()),
            Ok(Measure::Need(buf.len() + limit))
        );
    }

    #[test]
    fn zlib_garbage_and_wrong_sizes() {
        let conv = rgb24();
        let rect = Rect::new(0, 0, 4, 2);
        let mut fb = Framebuffer::new(4, 2);
        let garbage = [&[0x00][..], &compact(20), &[0xff; 20]].concat();
        let err = TightDecoder::default()
            .decode(rect, &garbage, &conv, &mut fb)
            .expect_err("garbage");
        assert!(matches!(err, DecodeError::Zlib { .. }), "{err}");
        // 23 bytes where 24 are due, and 25.
        for len in [23, 25, 1000] {
            let payload = zlib_rect(&[0x00], &mut new_stream(), &noise(len, 1));
            let err = TightDecoder::default()
                .decode(rect, &payload, &conv, &mut fb)
                .expect_err("wrong inflated size");
            assert!(
                matches!(err, DecodeError::Zlib { .. } | DecodeError::TooLong { .. }),
                "{len}: {err}"
            );
        }
        assert!(fb.pixels().iter().all(|&p| p == 0));
    }

    #[test]
    fn truncated_and_overlong_payloads() {
        let conv = rgb24();
        let rect = Rect::new(0, 0, 4, 2);
        let px: Vec<u8> = (0..24).collect();
        let jpeg = encode_jpeg(&picture(4, 2), 4, 2);
        let payloads = [
            vec![0x80, 1, 2, 3],
            vec![0x40, 0x01, 0x01, 1, 1, 1, 2, 2, 2, 0xa0, 0x50],
            zlib_rect(&[0x00], &mut new_stream(), &px),
            zlib_rect(&[0x40, 0x02], &mut new_stream(), &px),
            image_rect(0x90, &jpeg),
        ];
        let mut fb = Framebuffer::new(4, 2);
        for payload in &payloads {
            for cut in 0..payload.len() {
                let err = TightDecoder::default()
                    .decode(rect, &payload[..cut], &conv, &mut fb)
                    .expect_err(&format!("{payload:02x?} cut at {cut}"));
                assert!(matches!(err, DecodeError::Truncated { .. }), "{err}");
            }
            let mut longer = payload.clone();
            longer.push(0);
            assert!(TightDecoder::default()
                .decode(rect, &longer, &conv, &mut fb)
                .is_err());
        }
        // Palettes are waited for byte by byte.
        let palette256 = [&[0x40, 0x01, 0xff][..], &[0u8; 768]].concat();
        assert_eq!(
            TightDecoder::default().measure(
                Rect::new(0, 0, 16, 16),
                &conv,
                &palette256,
                &mut ScanState::default()
            ),
            Ok(Measure::Need(772))
        );
        // Outside the framebuffer.
        let err = TightDecoder::default()
            .decode(Rect::new(2, 0, 4, 2), &payloads[0], &conv, &mut fb)
            .expect_err("out of bounds");
        assert!(matches!(err, DecodeError::OutOfBounds { .. }), "{err}");
    }

    #[test]
    fn mutated_images_fail_cleanly() {
        let conv = rgb24();
        let rect = Rect::new(0, 0, 21, 13);
        let mut fb = Framebuffer::new(21, 13);
        let samples = picture(21, 13);
        let jpeg = encode_jpeg(&samples, 21, 13);
        let png = encode_png(
            &samples,
            21,
            13,
            png::ColorType::Rgb,
            png::BitDepth::Eight,
            None,
        );
        let mut dec = TightPngDecoder::default();
        for (control, image) in [(0x90, &jpeg), (0xa0, &png)] {
            let flips = noise(3 * 400, u32::from(control));
            for flip in flips.chunks_exact(3) {
                let mut mutated = image.clone();
                let at = (usize::from(flip[0]) << 8 | usize::from(flip[1])) % mutated.len();
                mutated[at] ^= flip[2] | 1;
                // Either outcome is fine; a panic is not.
                let _ = dec.decode(rect, &image_rect(control, &mutated), &conv, &mut fb);
            }
        }
    }

    #[test]
    fn empty_rectangles() {
        let conv = rgb24();
        let mut fb = Framebuffer::new(4, 4);
        let mut dec = TightDecoder::default();
        for rect in [Rect::new(1, 1, 0, 3), Rect::new(1, 1, 3, 0)] {
            decode_ok(&mut dec, rect, &conv, &[0x00], &mut fb);
            decode_ok(
                &mut dec,
                rect,
                &conv,
                &[0x40, 0x01, 0x01, 1, 1, 1, 2, 2, 2],
                &mut fb,
            );
            decode_ok(&mut dec, rect, &conv, &[0x40, 0x02], &mut fb);
            decode_ok(&mut dec, rect, &conv, &[0x80, 1, 2, 3], &mut fb);
        }
        assert!(fb.pixels().iter().all(|&p| p == 0));
    }

    #[test]
    fn jpeg_of_any_subsampling_and_width_decodes() {
        use turbojpeg::Subsamp;
        let mut dec = TightDecoder::default();
        let mut fb = Framebuffer::new(32, 32);
        let conv = rgb24();
        // 4:1:1 (luma sampled 4x1) has MCUs 32 pixels wide: narrower images too.
        for sampling in [
            Subsamp::Sub4x1,
            Subsamp::Sub2x2,
            Subsamp::Sub1x2,
            Subsamp::None,
        ] {
            for (w, h) in [(1, 1), (8, 8), (15, 3), (16, 4), (3, 5)] {
                let rect = Rect::new(0, 0, w, h);
                let flat = vec![200u8; usize::from(w) * usize::from(h) * 3];
                let payload = image_rect(0x90, &jpeg_of(&flat, w, h, sampling));
                assert_measures(&dec, rect, &conv, &payload);
                decode_ok(&mut dec, rect, &conv, &payload, &mut fb);
                let got = pixels(&fb, rect);
                assert!(
                    got.iter()
                        .all(|&p| [199, 200, 201].map(|v| rgb(v, v, v)).contains(&p)),
                    "{sampling:?} {w}x{h}: {got:06x?}"
                );
            }
        }
    }

    #[test]
    fn corrupt_huffman_data_is_an_error() {
        // Found by fuzzing an earlier decoder: corrupt Huffman-coded data.
        let input = include_bytes!(
            "../../tests/data/fuzz_regression/decode_tightpng/crash-jpeg-corrupt-huffman-data-zune-debug-assertion"
        );
        let rect = Rect::new(0, 0, 8, 2);
        assert_eq!(input[1..5], [0, 0, 8, 2]);
        let payload = &input[5..];
        let mut dec = TightPngDecoder::default();
        let conv = rgb24();
        let len = match dec.measure(rect, &conv, payload, &mut ScanState::default()) {
            Ok(Measure::Complete(len)) => len,
            other => panic!("{other:?}"),
        };
        let mut fb = Framebuffer::new(8, 2);
        let err = dec
            .decode(rect, &payload[..len], &conv, &mut fb)
            .expect_err("corrupt data");
        assert!(err.to_string().contains("tight jpeg data"), "{err}");
    }
}
