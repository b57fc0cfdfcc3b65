//! A deliberately tiny RFB client of its own ([RFC 6143]), sharing no code with kvmux:
//! security type None only, Raw rectangles only. The harness uses it to check that a
//! server's framebuffer matches its X screen before kvmux is compared with either, to
//! find out which encodings and pixel-format conversions a server really uses, and to
//! see which security types it offers.
//!
//! [RFC 6143]: https://www.rfc-editor.org/rfc/rfc6143

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rfb::PixelFormat;

use crate::image::Image;

const IO_TIMEOUT: Duration = Duration::from_secs(20);

pub const RAW: i32 = 0;
pub const COPY_RECT: i32 = 1;
pub const RRE: i32 = 2;
pub const CORRE: i32 = 4;

/// A framebuffer as the server sent it: pixel values in the requested format, unconverted.
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u32>,
}

struct Connection {
    stream: TcpStream,
    width: u16,
    height: u16,
}

fn read_exact<const N: usize>(stream: &mut TcpStream) -> Result<[u8; N]> {
    let mut bytes = [0; N];
    stream.read_exact(&mut bytes)?;
    Ok(bytes)
}

fn read_u8(stream: &mut TcpStream) -> Result<u8> {
    Ok(read_exact::<1>(stream)?[0])
}

fn read_u16(stream: &mut TcpStream) -> Result<u16> {
    Ok(u16::from_be_bytes(read_exact(stream)?))
}

fn read_u32(stream: &mut TcpStream) -> Result<u32> {
    Ok(u32::from_be_bytes(read_exact(stream)?))
}

fn skip(stream: &mut TcpStream, len: u64) -> Result<()> {
    let copied = std::io::copy(&mut stream.take(len), &mut std::io::sink())?;
    ensure!(
        copied == len,
        "connection closed in the middle of a message"
    );
    Ok(())
}

fn read_reason(stream: &mut TcpStream) -> Result<String> {
    let len = read_u32(stream)?;
    ensure!(len <= 4096, "reason of {len} bytes");
    let mut reason = vec![0; len as usize];
    stream.read_exact(&mut reason)?;
    Ok(String::from_utf8_lossy(&reason).into_owned())
}

fn connect(port: u16) -> Result<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("cannot connect to 127.0.0.1:{port}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads the server's ProtocolVersion, answers 3.8 and returns the security types offered.
fn offered_security(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let version: [u8; 12] = read_exact(stream)?;
    ensure!(
        version.starts_with(b"RFB 003."),
        "not an RFB server: {version:?}"
    );
    stream.write_all(b"RFB 003.008\n")?;
    let count = read_u8(stream)?;
    if count == 0 {
        bail!("server refused the connection: {}", read_reason(stream)?);
    }
    let mut types = vec![0; usize::from(count)];
    stream.read_exact(&mut types)?;
    Ok(types)
}

/// The security types a server offers to an RFB 3.8 client.
pub fn security_types(port: u16) -> Result<Vec<u8>> {
    offered_security(&mut connect(port)?)
}

impl Connection {
    /// Connects with security type None and a shared ClientInit.
    fn open(port: u16) -> Result<Connection> {
        let mut stream = connect(port)?;
        let types = offered_security(&mut stream)?;
        ensure!(
            types.contains(&1),
            "server offers security types {types:?}, not None (1)"
        );
        stream.write_all(&[1])?;
        if read_u32(&mut stream)? != 0 {
            bail!("security handshake failed: {}", read_reason(&mut stream)?);
        }
        stream.write_all(&[1 /* shared */])?;
        let width = read_u16(&mut stream)?;
        let height = read_u16(&mut stream)?;
        let _server_format: [u8; 16] = read_exact(&mut stream)?;
        let _name = read_reason(&mut stream)?;
        Ok(Connection {
            stream,
            width,
            height,
        })
    }

    fn set_pixel_format(&mut self, format: &PixelFormat) -> Result<()> {
        let [r0, r1] = format.red_max.to_be_bytes();
        let [g0, g1] = format.green_max.to_be_bytes();
        let [b0, b1] = format.blue_max.to_be_bytes();
        let message = [
            0,
            /* SetPixelFormat */ 0,
            0,
            0, /* padding */
            format.bits_per_pixel,
            format.depth,
            u8::from(format.big_endian),
            u8::from(format.true_colour),
            r0,
            r1,
            g0,
            g1,
            b0,
            b1,
            format.red_shift,
            format.green_shift,
            format.blue_shift,
            0,
            0,
            0,
        ];
        self.stream.write_all(&message)?;
        Ok(())
    }

    fn set_encodings(&mut self, encodings: &[i32]) -> Result<()> {
        let mut message = vec![2 /* SetEncodings */, 0];
        message.extend_from_slice(&(encodings.len() as u16).to_be_bytes());
        for encoding in encodings {
            message.extend_from_slice(&encoding.to_be_bytes());
        }
        self.stream.write_all(&message)?;
        Ok(())
    }

    fn request_everything(&mut self) -> Result<()> {
        let [w0, w1] = self.width.to_be_bytes();
        let [h0, h1] = self.height.to_be_bytes();
        self.stream.write_all(&[
            3, /* FramebufferUpdateRequest */
            0, 0, 0, 0, 0, w0, w1, h0, h1,
        ])?;
        Ok(())
    }

    /// Skips other server messages; returns the number of rectangles of the next
    /// FramebufferUpdate.
    fn next_update(&mut self) -> Result<u16> {
        loop {
            match read_u8(&mut self.stream)? {
                0 => {
                    let _padding = read_u8(&mut self.stream)?;
                    return read_u16(&mut self.stream);
                }
                1 => {
                    let _padding = read_u8(&mut self.stream)?;
                    let _first = read_u16(&mut self.stream)?;
                    let count = read_u16(&mut self.stream)?;
                    skip(&mut self.stream, u64::from(count) * 6)?;
                }
                2 => {}
                3 => {
                    skip(&mut self.stream, 3)?;
                    let len = read_u32(&mut self.stream)?;
                    skip(&mut self.stream, u64::from(len))?;
                }
                other => bail!("unexpected server message type {other}"),
            }
        }
    }
}

/// Rectangle header: x, y, width, height, encoding.
fn read_rect_header(stream: &mut TcpStream) -> Result<(u16, u16, u16, u16, i32)> {
    Ok((
        read_u16(stream)?,
        read_u16(stream)?,
        read_u16(stream)?,
        read_u16(stream)?,
        i32::from_be_bytes(read_exact(stream)?),
    ))
}

/// The whole framebuffer in `format` (true colour, little-endian), with Raw encoding only.
pub fn fetch_raw(port: u16, format: &PixelFormat) -> Result<RawFrame> {
    ensure!(
        format.true_colour && !format.big_endian && format.bits_per_pixel % 8 == 0,
        "fetch_raw takes little-endian true-colour formats"
    );
    let mut connection = Connection::open(port)?;
    connection.set_pixel_format(format)?;
    connection.set_encodings(&[RAW])?;
    let (width, height) = (
        usize::from(connection.width),
        usize::from(connection.height),
    );
    let bytes_per_pixel = usize::from(format.bits_per_pixel / 8);
    let mut pixels = vec![0u32; width * height];
    let mut covered = vec![false; width * height];
    let mut missing = width * height;
    let deadline = Instant::now() + IO_TIMEOUT;
    while missing > 0 {
        ensure!(
            Instant::now() < deadline,
            "server never sent the whole framebuffer"
        );
        connection.request_everything()?;
        let rects = connection.next_update()?;
        for _ in 0..rects {
            let (x, y, w, h, encoding) = read_rect_header(&mut connection.stream)?;
            ensure!(
                encoding == RAW,
                "server sent encoding {encoding} after SetEncodings [Raw]"
            );
            let (x, y, w, h) = (
                usize::from(x),
                usize::from(y),
                usize::from(w),
                usize::from(h),
            );
            ensure!(
                x + w <= width && y + h <= height,
                "rectangle {w}x{h}+{x}+{y} outside {width}x{height}"
            );
            let mut row = vec![0u8; w * bytes_per_pixel];
            for yy in y..y + h {
                connection.stream.read_exact(&mut row)?;
                for (i, p) in row.chunks_exact(bytes_per_pixel).enumerate() {
                    let mut word = [0u8; 4];
                    word[..bytes_per_pixel].copy_from_slice(p);
                    let at = yy * width + x + i;
                    pixels[at] = u32::from_le_bytes(word);
                    if !covered[at] {
                        covered[at] = true;
                        missing -= 1;
                    }
                }
            }
        }
    }
    Ok(RawFrame {
        width: width as u32,
        height: height as u32,
        pixels,
    })
}

/// The whole framebuffer as 8-bit RGB, fetched with Raw encoding.
pub fn fetch_screen(port: u16) -> Result<Image> {
    let frame = fetch_raw(port, &PixelFormat::RGB888)?;
    Ok(Image {
        width: frame.width,
        height: frame.height,
        pixels: frame.pixels.iter().map(|p| p & 0x00ff_ffff).collect(),
    })
}

/// What the first update after `SetEncodings(encodings)` was made of.
#[derive(Debug, Clone, Default)]
pub struct EncodingsSeen {
    /// Rectangles per encoding, counted until the first rectangle whose length this
    /// client cannot tell without decoding it.
    pub rectangles: BTreeMap<i32, usize>,
    /// The encoding of that rectangle, where reading stopped.
    pub stopped_at: Option<i32>,
}

impl EncodingsSeen {
    pub fn used(&self, encoding: i32) -> bool {
        self.rectangles.contains_key(&encoding)
    }

    /// Whether nothing but Raw was seen in the whole update.
    pub fn raw_only(&self) -> bool {
        self.stopped_at.is_none() && self.rectangles.keys().all(|&e| e == RAW)
    }
}

/// Asks for the whole screen in 32-bit true colour, offering only `encodings`, and
/// reports which encodings the server answered with.
pub fn encodings_used(port: u16, encodings: &[i32]) -> Result<EncodingsSeen> {
    let mut connection = Connection::open(port)?;
    connection.set_pixel_format(&PixelFormat::RGB888)?;
    connection.set_encodings(encodings)?;
    connection.request_everything()?;
    let rects = connection.next_update()?;
    let stream = &mut connection.stream;
    let mut seen = EncodingsSeen::default();
    const BPP: u64 = 4;
    for _ in 0..rects {
        let (_, _, w, h, encoding) = read_rect_header(stream)?;
        *seen.rectangles.entry(encoding).or_default() += 1;
        match encoding {
            RAW => skip(stream, u64::from(w) * u64::from(h) * BPP)?,
            COPY_RECT => skip(stream, 4)?,
            RRE => {
                let subrects = u64::from(read_u32(stream)?);
                skip(stream, BPP + subrects * (BPP + 8))?;
            }
            CORRE => {
                let subrects = u64::from(read_u32(stream)?);
                skip(stream, BPP + subrects * (BPP + 4))?;
            }
            other => {
                seen.stopped_at = Some(other);
                break;
            }
        }
    }
    Ok(seen)
}
