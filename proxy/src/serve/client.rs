//! One downstream client: an RFB server session showing the client's active source,
//! with the hotkeys that switch it.
//!
//! Frames are re-encoded from the source's shared frame with the client's pixel
//! format and encodings. On a switch, every key the client still holds on the old
//! source is released there, the client gets the new size (or, if it cannot resize,
//! the new picture scaled into its own size), a DesktopName naming the source and a
//! full frame.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rfb::messages::{ClipboardMessage, SelectAction};
use rfb::net::{AcceptOptions, BoxStream};
use rfb::server::{ServerEvent, ServerSession};
use rfb::{Framebuffer, PixelFormat, Rect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use super::hotkeys::{Action, HotkeyState, Hotkeys, KeyOutcome};
use super::source::{self, Change, Forward, Hub, Input, PassThrough, Source};

/// Rows per band in which clients' rectangles are encoded.
const BAND_ROWS: u16 = 64;

/// A client that has had no update for this long gives back its working memory.
const IDLE_TRIM: Duration = Duration::from_secs(2);

/// Bytes of its output buffer a client keeps between updates.
const OUT_KEPT: usize = 64 * 1024;

/// What every client shares.
pub struct Shared {
    pub hub: Hub,
    pub hotkeys: Hotkeys,
    pub accept: AcceptOptions,
    /// A client that has not taken its bytes for this long is dropped.
    pub write_timeout: Duration,
    /// Set when the proxy stops: every client's connection is closed cleanly.
    pub stopping: tokio::sync::watch::Sender<bool>,
}

/// A key the client holds down on its active source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct HeldKey {
    keysym: u32,
    keycode: Option<u32>,
}

struct Client {
    shared: Arc<Shared>,
    session: ServerSession,
    active: usize,
    changes: broadcast::Receiver<Change>,
    hotkeys: HotkeyState,
    held: BTreeSet<HeldKey>,
    buttons: u8,
    pointer: (u16, u16),
    /// The client's framebuffer size when it cannot follow the source's: the source
    /// is scaled into it.
    letterbox: Option<Framebuffer>,
    /// The source's own updates, forwarded unchanged, while this client is its only
    /// watcher and takes kvmux's zlib-stream-reset.
    passthrough: Option<PassThrough>,
    /// A pass-through connection was asked for the client's pending request.
    passthrough_asked: bool,
    /// No new pass-through attempt before this (after one failed).
    passthrough_retry: Instant,
    /// When the last update was written, and whether memory was given back since.
    last_update: tokio::time::Instant,
    trimmed: bool,
    /// Encode this client's updates on their own, never sharing them (see [`serve`]).
    own_updates: bool,
    peer: String,
}

/// Serves one client until it leaves or fails.
///
/// `websocket`: the client came through the WebSocket listener, so it is a browser
/// running noVNC. Its updates are encoded for it alone: shared updates start new zlib
/// streams each time (Tight's reset bits), and the inflater noVNC ships (pako 1.0)
/// keeps no window after resetting a stream it has used, so the next rectangle that
/// refers back into an earlier one fails to inflate and noVNC disconnects.
pub async fn serve(
    stream: BoxStream,
    shared: Arc<Shared>,
    peer: String,
    websocket: bool,
) -> Result<()> {
    let first = shared
        .hub
        .sources
        .first()
        .context("no sources are configured")?
        .clone();
    let mut accept = shared.accept.clone();
    {
        let f = first.frame();
        accept.config.server_init.width = f.fb.width();
        accept.config.server_init.height = f.fb.height();
    }
    accept.config.server_init.name = first.title();
    let conn = rfb::net::accept(stream, &accept).await?;
    if let Some(user) = &conn.username {
        info!(%peer, %user, "Client authenticated");
    }
    let init = &accept.config.server_init;
    let mut session = ServerSession::new(init.width, init.height, PixelFormat::RGB888, &init.name);
    session.enable_xvp(true);
    // Many clients share a few cores and little memory: bands of 64 rows keep each
    // connection's working memory small (tiles stay aligned for ZRLE and Hextile).
    session.set_band_rows(BAND_ROWS);
    let mut client = Client {
        changes: first.subscribe(),
        shared: shared.clone(),
        session,
        active: 0,
        hotkeys: HotkeyState::default(),
        held: BTreeSet::new(),
        buttons: 0,
        pointer: (0, 0),
        letterbox: None,
        passthrough: None,
        passthrough_asked: false,
        passthrough_retry: Instant::now(),
        last_update: tokio::time::Instant::now(),
        trimmed: false,
        own_updates: websocket,
        peer,
    };
    first.attach();
    let mut list = shared.hub.watch_list();
    list.mark_changed();
    let (mut reader, mut writer) = tokio::io::split(conn.stream);
    let mut out = Vec::new();
    client.session.feed(&conn.leftover, &mut out)?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut stopping = shared.stopping.subscribe();
    // One timer for the idle trim, moved on after each update (not made anew per loop).
    let idle = tokio::time::sleep_until(client.last_update + IDLE_TRIM);
    tokio::pin!(idle);
    let result = async {
        loop {
            client.handle_events().await;
            client.consider_pass_through();
            if let Some(pt) = &client.passthrough {
                if client.session.request_pending() && !client.passthrough_asked {
                    client.passthrough_asked = true;
                    let _ = pt.request.try_send(());
                }
            } else if client.session.update_due() {
                // Encoding is CPU work: let the runtime move other tasks off this thread
                // (only then: handing the thread over costs more than a key event).
                tokio::task::block_in_place(|| client.write_update(&mut out));
            }
            if !client.trimmed && idle.deadline() != client.last_update + IDLE_TRIM {
                idle.as_mut().reset(client.last_update + IDLE_TRIM);
            }
            if !out.is_empty() {
                let write = async {
                    writer.write_all(&out).await?;
                    // A WebSocket sends on flush; for TCP this is free.
                    writer.flush().await
                };
                match tokio::time::timeout(shared.write_timeout, write).await {
                    Ok(r) => r.context("write failed")?,
                    Err(_) => bail!("the client stopped reading for {:?}", shared.write_timeout),
                }
                out.clear();
                // A full frame takes megabytes; an idle client need not keep them.
                out.shrink_to(OUT_KEPT);
            }
            tokio::select! {
                read = reader.read(&mut buf) => {
                    let n = read.context("read failed")?;
                    if n == 0 {
                        return Ok(());
                    }
                    client.session.feed(&buf[..n], &mut out)?;
                }
                change = client.changes.recv() => client.on_change(change, &mut out),
                forwarded = next_forward(&mut client.passthrough) => match forwarded {
                    Some(Forward::Bytes(bytes)) => out.extend_from_slice(&bytes),
                    Some(Forward::UpdateDone) => {
                        client.session.answer_request();
                        client.passthrough_asked = false;
                    }
                    None => client.end_pass_through(true),
                },
                _ = &mut idle, if !client.trimmed => {
                    // Idle: give back the memory the largest updates needed.
                    client.session.trim_buffers();
                    out = Vec::new();
                    client.trimmed = true;
                }
                _ = stopping.changed() => {
                    info!(peer = %client.peer, "Closing: the proxy is stopping");
                    let _ = writer.shutdown().await;
                    return Ok(());
                }
                changed = list.changed() => {
                    if changed.is_ok() {
                        let l = client.shared.hub.list(client.active);
                        client.session.set_sources(l);
                    }
                }
            }
        }
    }
    .await;
    client.passthrough = None;
    client.release_all().await;
    client.source().detach();
    result
}

/// The next message from the pass-through connection, if there is one (else never).
async fn next_forward(pt: &mut Option<PassThrough>) -> Option<Forward> {
    match pt {
        Some(pt) => pt.forward.recv().await,
        None => std::future::pending().await,
    }
}

impl Client {
    fn source(&self) -> &Arc<Source> {
        &self.shared.hub.sources[self.active]
    }

    async fn handle_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match event {
                ServerEvent::Key { down, keysym } => self.key(down, keysym, None).await,
                ServerEvent::QemuKey {
                    down,
                    keysym,
                    keycode,
                } => self.key(down, keysym, Some(keycode)).await,
                ServerEvent::Pointer { buttons, x, y } => {
                    let (x, y) = self.to_source(x, y);
                    self.buttons = buttons;
                    self.pointer = (x, y);
                    self.source()
                        .send_input(Input::Pointer { buttons, x, y })
                        .await;
                }
                ServerEvent::CutText(latin1) => {
                    let text = latin1.iter().map(|&b| char::from(b)).collect();
                    self.source().send_input(Input::CutText(text)).await;
                }
                ServerEvent::Clipboard(ClipboardMessage::Provide {
                    text: Some(text), ..
                }) => self.source().send_input(Input::CutText(text)).await,
                ServerEvent::Xvp { code, .. } => {
                    info!(peer = %self.peer, source = %self.source().name, ?code, "Power action");
                    self.source().send_input(Input::Xvp(code)).await;
                }
                ServerEvent::SetDesktopSize { .. } => {
                    // The size is the source's; a client cannot change it here.
                    self.session.desktop_size_result(1);
                }
                ServerEvent::SelectSource(action) => {
                    let n = self.shared.hub.sources.len();
                    let to = match action {
                        SelectAction::Index(i) if usize::from(i) < n => usize::from(i),
                        SelectAction::Index(i) => {
                            warn!(peer = %self.peer, index = i, "Selection of a source that does not exist");
                            continue;
                        }
                        SelectAction::Next => (self.active + 1) % n,
                        SelectAction::Previous => (self.active + n - 1) % n,
                    };
                    self.switch(to).await;
                }
                ServerEvent::FormatChanged => {
                    // The client's capabilities may be new: it may now take a resize.
                    self.fit_to_source();
                    self.send_cursor();
                    let l = self.shared.hub.list(self.active);
                    self.session.set_sources(l);
                }
                _ => {}
            }
        }
    }

    async fn key(&mut self, down: bool, keysym: u32, keycode: Option<u32>) {
        match self
            .hotkeys
            .key(&self.shared.hotkeys, keysym, down, Instant::now())
        {
            KeyOutcome::Forward => {}
            KeyOutcome::Swallow => return,
            KeyOutcome::Trigger(action) => {
                let n = self.shared.hub.sources.len();
                let to = match action {
                    Action::Source(i) => i.min(n - 1),
                    Action::Next => (self.active + 1) % n,
                    Action::Previous => (self.active + n - 1) % n,
                };
                self.switch(to).await;
                return;
            }
        }
        let held = HeldKey { keysym, keycode };
        if down {
            self.held.insert(held);
        } else if !self.held.remove(&held) {
            // A release the active source never saw pressed (the key went down on
            // the previous source, which has had its release already).
            let any = self.held.iter().find(|k| k.keysym == keysym).copied();
            match any {
                Some(k) => {
                    self.held.remove(&k);
                }
                None => return,
            }
        }
        self.source()
            .send_input(Input::Key {
                down,
                keysym,
                keycode,
            })
            .await;
    }

    /// Releases every key and button the client holds on its active source.
    async fn release_all(&mut self) {
        let source = self.source().clone();
        for k in std::mem::take(&mut self.held) {
            source
                .send_input(Input::Key {
                    down: false,
                    keysym: k.keysym,
                    keycode: k.keycode,
                })
                .await;
        }
        if self.buttons != 0 {
            self.buttons = 0;
            let (x, y) = self.pointer;
            source.send_input(Input::Pointer { buttons: 0, x, y }).await;
        }
    }

    async fn switch(&mut self, to: usize) {
        let from = self.active;
        if to != from {
            self.end_pass_through(false);
            self.release_all().await;
            self.source().detach();
            self.active = to;
            self.changes = self.source().subscribe();
            self.source().attach();
            info!(peer = %self.peer, from = %self.shared.hub.sources[from].name, to = %self.source().name, "Switched");
        }
        let title = self.source().title();
        self.session.set_name(&title);
        self.send_cursor();
        self.fit_to_source();
        self.session.add_damage(Rect::new(0, 0, u16::MAX, u16::MAX));
        let l = self.shared.hub.list(self.active);
        self.session.set_sources(l);
    }

    /// Starts or ends pass-through as the conditions for it come and go: this client
    /// the only watcher of an RFB source, taking kvmux's zlib-stream-reset, at the
    /// source's size, with nothing of its own still to send (a switch's first frame
    /// goes out transcoded, at once).
    fn consider_pass_through(&mut self) {
        let source = self.source().clone();
        let eligible = self.session.caps().zlib_reset
            && self.letterbox.is_none()
            && source.watchers() == 1
            && source.can_pass_through();
        match (&self.passthrough, eligible) {
            (None, true)
                if !self.session.update_due() && Instant::now() >= self.passthrough_retry =>
            {
                let format = *self.session.pixel_format();
                let encodings = self.session.encodings().to_vec();
                if let Some(pt) = source::pass_through(&source, format, &encodings) {
                    info!(peer = %self.peer, source = %source.name, "Pass-through on");
                    self.passthrough = Some(pt);
                    self.passthrough_asked = false;
                }
            }
            (Some(_), false) => self.end_pass_through(false),
            _ => {}
        }
    }

    /// Back to transcoding: the client's zlib streams start anew, and it gets the
    /// whole screen from the shared frame.
    fn end_pass_through(&mut self, failed: bool) {
        if self.passthrough.take().is_none() {
            return;
        }
        info!(peer = %self.peer, failed, "Pass-through off");
        if failed {
            self.passthrough_retry = Instant::now() + Duration::from_secs(5);
        }
        self.passthrough_asked = false;
        self.session.reset_streams();
        self.session.add_damage(Rect::new(0, 0, u16::MAX, u16::MAX));
    }

    /// The active source's cursor (or none: the default arrow from the client).
    fn send_cursor(&mut self) {
        let cursor = self.source().frame().cursor.clone();
        if let Some(cursor) = cursor {
            self.session.set_cursor(cursor);
        }
    }

    /// Follows the source's size: a resize for clients that can take one, a scaled
    /// picture in the client's size for the others.
    fn fit_to_source(&mut self) {
        let (w, h) = {
            let f = self.source().frame();
            (f.fb.width(), f.fb.height())
        };
        if self.session.can_resize() {
            self.letterbox = None;
            self.session.resize(w, h);
            return;
        }
        let (cw, ch) = self.session_size();
        if (cw, ch) == (w, h) {
            self.letterbox = None;
        } else if self.letterbox.is_none() {
            debug!(peer = %self.peer, "Client cannot resize: scaling the source into its size");
            self.letterbox = Some(Framebuffer::new(cw, ch));
        }
        self.session.add_damage(Rect::new(0, 0, u16::MAX, u16::MAX));
    }

    fn session_size(&self) -> (u16, u16) {
        match &self.letterbox {
            Some(fb) => (fb.width(), fb.height()),
            None => self.session.size(),
        }
    }

    fn on_change(
        &mut self,
        change: Result<Change, broadcast::error::RecvError>,
        out: &mut Vec<u8>,
    ) {
        match change {
            Ok(Change::Damage(rects)) => {
                if let Some(lb) = &self.letterbox {
                    let (sw, sh) = {
                        let f = self.source().frame();
                        (f.fb.width(), f.fb.height())
                    };
                    let (cw, ch) = (lb.width(), lb.height());
                    for r in rects.iter() {
                        self.session.add_damage(scale_rect(*r, (sw, sh), (cw, ch)));
                    }
                } else {
                    for r in rects.iter() {
                        self.session.add_damage(*r);
                    }
                }
            }
            Ok(Change::Resized) => {
                self.fit_to_source();
                self.session.add_damage(Rect::new(0, 0, u16::MAX, u16::MAX));
            }
            Ok(Change::Cursor) => self.send_cursor(),
            Ok(Change::Watchers) => {}
            Ok(Change::Bell) => self.session.bell(out),
            Ok(Change::CutText(text)) => self.session.cut_text(&text, out),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                self.session.add_damage(Rect::new(0, 0, u16::MAX, u16::MAX));
            }
            Err(broadcast::error::RecvError::Closed) => {}
        }
    }

    fn write_update(&mut self, out: &mut Vec<u8>) {
        if !self.session.update_due() {
            return;
        }
        self.last_update = tokio::time::Instant::now();
        self.trimmed = false;
        let source = self.shared.hub.sources[self.active].clone();
        let frame = source.frame();
        match &mut self.letterbox {
            Some(lb) => {
                scale_into(&frame.fb, lb);
                self.session.write_update(lb, out);
            }
            None if self.own_updates => {
                self.session.write_update(&frame.fb, out);
            }
            None => {
                self.session
                    .write_update_shared(&frame.fb, frame.generation, &source.cache, out);
            }
        }
    }

    /// A client position in source coordinates.
    fn to_source(&self, x: u16, y: u16) -> (u16, u16) {
        let Some(lb) = &self.letterbox else {
            return (x, y);
        };
        let f = self.source().frame();
        let (sw, sh) = (u32::from(f.fb.width()), u32::from(f.fb.height()));
        let (cw, ch) = (u32::from(lb.width()), u32::from(lb.height()));
        let (ox, oy, w, h) = fit(sw, sh, cw, ch);
        let sx = (u32::from(x).saturating_sub(ox) * sw / w.max(1)).min(sw.saturating_sub(1));
        let sy = (u32::from(y).saturating_sub(oy) * sh / h.max(1)).min(sh.saturating_sub(1));
        (sx as u16, sy as u16)
    }
}

/// Where a `sw`x`sh` picture goes inside `cw`x`ch`, keeping its aspect ratio:
/// (x, y, width, height).
fn fit(sw: u32, sh: u32, cw: u32, ch: u32) -> (u32, u32, u32, u32) {
    if sw == 0 || sh == 0 {
        return (0, 0, cw, ch);
    }
    // Width-bound if sw/sh >= cw/ch.
    let (w, h) = if u64::from(sw) * u64::from(ch) >= u64::from(cw) * u64::from(sh) {
        (cw, (u64::from(sh) * u64::from(cw) / u64::from(sw)) as u32)
    } else {
        ((u64::from(sw) * u64::from(ch) / u64::from(sh)) as u32, ch)
    };
    ((cw - w) / 2, (ch - h) / 2, w.max(1), h.max(1))
}

/// Scales `src` into all of `dst` (nearest neighbour), letterboxed in black.
pub fn scale_into(src: &Framebuffer, dst: &mut Framebuffer) {
    let (sw, sh) = (u32::from(src.width()), u32::from(src.height()));
    let (cw, ch) = (u32::from(dst.width()), u32::from(dst.height()));
    let (ox, oy, w, h) = fit(sw, sh, cw, ch);
    let s = src.pixels();
    let cols: Vec<usize> = (0..w).map(|x| (x * sw / w) as usize).collect();
    let d = dst.pixels_mut();
    for y in 0..ch {
        let row = &mut d[(y * cw) as usize..((y + 1) * cw) as usize];
        if y < oy || y >= oy + h || sw == 0 {
            row.fill(0);
            continue;
        }
        let sy = ((y - oy) * sh / h) as usize;
        let srow = &s[sy * sw as usize..(sy + 1) * sw as usize];
        row[..ox as usize].fill(0);
        for (dx, &sx) in row[ox as usize..(ox + w) as usize].iter_mut().zip(&cols) {
            *dx = srow[sx];
        }
        row[(ox + w) as usize..].fill(0);
    }
}

/// The client area a source rectangle lands on when scaled (rounded outwards).
fn scale_rect(r: Rect, (sw, sh): (u16, u16), (cw, ch): (u16, u16)) -> Rect {
    let (sw, sh, cw, ch) = (
        u32::from(sw).max(1),
        u32::from(sh).max(1),
        u32::from(cw),
        u32::from(ch),
    );
    let (ox, oy, w, h) = fit(sw, sh, cw, ch);
    let x0 = ox + u32::from(r.x) * w / sw;
    let y0 = oy + u32::from(r.y) * h / sh;
    let x1 = (r.right().min(sw) * w).div_ceil(sw) + ox;
    let y1 = (r.bottom().min(sh) * h).div_ceil(sh) + oy;
    Rect::new(
        x0.min(cw) as u16,
        y0.min(ch) as u16,
        (x1.min(cw).saturating_sub(x0)) as u16,
        (y1.min(ch).saturating_sub(y0)) as u16,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_the_aspect_ratio_centred() {
        // 1920x1080 into 1280x800: width-bound, 720 high, 40 above and below.
        assert_eq!(fit(1920, 1080, 1280, 800), (0, 40, 1280, 720));
        // 800x800 into 1280x800: height-bound, 240 each side.
        assert_eq!(fit(800, 800, 1280, 800), (240, 0, 800, 800));
        assert_eq!(fit(640, 480, 640, 480), (0, 0, 640, 480));
    }

    #[test]
    fn scale_into_halves_and_letterboxes() {
        // A 4x2 source into an 2x2 client: scaled to 2x1, one black row below... and
        // centred: the picture takes row 0 (oy = 0 since (2-1)/2 = 0).
        let mut src = Framebuffer::new(4, 2);
        src.pixels_mut().copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut dst = Framebuffer::new(2, 2);
        dst.pixels_mut().fill(9);
        scale_into(&src, &mut dst);
        assert_eq!(dst.pixels(), [1, 3, 0, 0]);
    }

    #[test]
    fn scaled_damage_covers_the_scaled_area() {
        // 1920x1080 into 1280x800: (0,40) + 2/3 scale.
        let r = scale_rect(Rect::new(300, 300, 30, 30), (1920, 1080), (1280, 800));
        assert_eq!(r, Rect::new(200, 240, 20, 20));
        let whole = scale_rect(
            Rect::new(0, 0, u16::MAX, u16::MAX),
            (1920, 1080),
            (1280, 800),
        );
        assert_eq!(whole, Rect::new(0, 40, 1280, 720));
    }
}
