//! [`VncDisplay`]: a GTK4 widget showing a remote desktop over RFB.
//!
//! The vocabulary is gtk-vnc's, so GTK programmers know it:
//!
//! - signals `connected`, `initialized`, `disconnected`, `auth-credential` (the names of
//!   the credentials wanted: `"password"`, `"username"`), `auth-failure` (reason),
//!   `desktop-resize` (width, height), `desktop-name`, `server-cut-text`, `bell`,
//!   `error` (message), and kvmux's `sources-changed`;
//! - properties `read-only`, `scaling`, `keyboard-grab`, `grab-keys`, `lossy-encoding`,
//!   `quality`, and the read-only `desktop-name`, `desktop-width`, `desktop-height`,
//!   `power-control`, `is-initialized`, `keyboard-grabbed` (`keyboard-grab` asks for
//!   the keyboard; this says whether the display holds it now: it needs the focus,
//!   and the window must be on screen).
//!
//! The connection runs on its own thread ([`crate::connection`]); the widget uploads one
//! texture per finished FramebufferUpdate and draws it scaled to fit or 1:1.

mod imp;

use gtk::prelude::*;
use gtk::subclass::prelude::*;
use gtk::{gdk, glib};

use crate::connection::{
    Command, Connection, ConnectionSettings, Credential, Event, Failure, Frame,
};
use crate::keymap::Key;
use crate::SourceInfo;
pub use imp::{place, Picture, Placement};
use rfb::messages::SelectAction;
pub use rfb::messages::XvpClientCode as PowerAction;

glib::wrapper! {
    pub struct VncDisplay(ObjectSubclass<imp::VncDisplay>)
        @extends gtk::Widget,
        @implements gtk::Buildable, gtk::ConstraintTarget;
}

impl Default for VncDisplay {
    fn default() -> Self {
        Self::new()
    }
}

impl VncDisplay {
    pub fn new() -> VncDisplay {
        glib::Object::new()
    }

    /// Connects to `settings.address`, closing any connection open before. The
    /// `lossy-encoding` and `quality` properties decide whether JPEG is allowed.
    pub fn open(&self, mut settings: ConnectionSettings) {
        let imp = self.imp();
        settings.lossy = self.lossy_encoding();
        settings.quality = u8::try_from(self.quality()).unwrap_or(9);
        let (sender, receiver) = async_channel::unbounded();
        let generation = {
            let mut state = imp.state.borrow_mut();
            state.connection = None;
            state.generation += 1;
            state.initialized = false;
            state.scancodes = false;
            state.failure = None;
            state.pressed.clear();
            state.buttons = 0;
            state.sources.clear();
            state.active_source = None;
            state.generation
        };
        imp.set_initialized(false);
        imp.set_power_control(false);
        match Connection::open(settings, sender) {
            Ok(connection) => imp.state.borrow_mut().connection = Some(connection),
            Err(e) => {
                self.emit_by_name::<()>("error", &[&format!("cannot start a connection: {e}")]);
                self.emit_by_name::<()>("disconnected", &[]);
                return;
            }
        }
        let display = self.downgrade();
        glib::spawn_future_local(async move {
            while let Ok(event) = receiver.recv().await {
                let Some(display) = display.upgrade() else {
                    return;
                };
                if display.imp().state.borrow().generation != generation {
                    return;
                }
                let closed = matches!(event, Event::Closed(_));
                display.handle(event);
                if closed {
                    return;
                }
            }
        });
    }

    /// Closes the connection (no `disconnected` follows for it). The last picture stays.
    pub fn close(&self) {
        let mut state = self.imp().state.borrow_mut();
        state.connection = None;
        state.generation += 1;
        state.initialized = false;
    }

    /// Whether a connection is open or being opened.
    pub fn is_open(&self) -> bool {
        self.imp().state.borrow().connection.is_some()
    }

    /// Why the last connection ended, if it has.
    pub fn last_failure(&self) -> Option<Failure> {
        self.imp().state.borrow().failure.clone()
    }

    /// Answers `auth-credential`.
    pub fn send_credentials(&self, username: Option<String>, password: String) {
        self.imp().send(Command::Credentials { username, password });
    }

    /// Presses `keys` in order and releases them in reverse.
    pub fn send_keys(&self, keys: &[Key]) {
        if self.read_only() {
            return;
        }
        let imp = self.imp();
        for (down, key) in keys
            .iter()
            .map(|k| (true, k))
            .chain(keys.iter().rev().map(|k| (false, k)))
        {
            imp.send(Command::Key {
                down,
                keysym: key.keysym,
                scancode: Some(key.scancode),
            });
        }
    }

    /// Asks the server to shut down, reboot or reset the machine (xvp).
    pub fn send_power(&self, action: PowerAction) {
        if self.power_control() && !self.read_only() {
            self.imp().send(Command::Power(action));
        }
    }

    /// Asks for a whole new frame.
    pub fn refresh(&self) {
        self.imp().send(Command::Refresh);
    }

    /// The picture shown, at the desktop's size.
    pub fn screenshot(&self) -> Option<gdk::Texture> {
        self.imp().state.borrow().picture.as_ref()?.texture()
    }

    /// Where the desktop is drawn in the widget now.
    pub fn placement(&self) -> Option<Placement> {
        let (width, height) = self.imp().state.borrow().picture.as_ref()?.size();
        Some(place(
            (f64::from(self.width()), f64::from(self.height())),
            (f64::from(width), f64::from(height)),
            self.scaling(),
        ))
    }

    /// The sources behind a kvmux proxy (empty for other servers), and which one this
    /// connection shows.
    pub fn sources(&self) -> (Vec<SourceInfo>, Option<usize>) {
        let state = self.imp().state.borrow();
        (state.sources.clone(), state.active_source)
    }

    /// Asks a kvmux proxy to switch this connection to source `index`. Does nothing
    /// when the server is not a kvmux proxy (it sent no source list).
    pub fn select_source(&self, index: usize) {
        let count = self.imp().state.borrow().sources.len();
        if let Some(index) = u16::try_from(index)
            .ok()
            .filter(|&i| usize::from(i) < count)
        {
            self.imp()
                .send(Command::SelectSource(SelectAction::Index(index)));
        }
    }

    /// Asks a kvmux proxy for the next (or previous) source.
    pub fn select_next_source(&self, forward: bool) {
        if self.imp().state.borrow().sources.is_empty() {
            return;
        }
        let action = if forward {
            SelectAction::Next
        } else {
            SelectAction::Previous
        };
        self.imp().send(Command::SelectSource(action));
    }

    fn handle(&self, event: Event) {
        let imp = self.imp();
        match event {
            Event::Initialized {
                width,
                height,
                name,
            } => {
                {
                    let mut state = imp.state.borrow_mut();
                    state.initialized = true;
                }
                imp.set_desktop(u32::from(width), u32::from(height));
                imp.set_desktop_name(&name);
                imp.set_initialized(true);
                self.emit_by_name::<()>("connected", &[]);
                self.emit_by_name::<()>("initialized", &[]);
                self.emit_by_name::<()>("desktop-name", &[&name]);
            }
            Event::AuthCredential(needed) => {
                let names: Vec<String> = needed
                    .iter()
                    .map(|c| match c {
                        Credential::Password => "password".to_owned(),
                        Credential::Username => "username".to_owned(),
                    })
                    .collect();
                self.emit_by_name::<()>("auth-credential", &[&names]);
            }
            Event::Frame => {
                let frame = imp
                    .state
                    .borrow()
                    .connection
                    .as_ref()
                    .and_then(|c| c.take_frame());
                if let Some(frame) = frame {
                    let picture = if self.cairo_renderer() && surface_fits(&frame) {
                        surface_picture(frame)
                    } else {
                        Some(texture_picture(frame))
                    };
                    if let Some(picture) = picture {
                        let mut state = imp.state.borrow_mut();
                        state.picture = Some(picture);
                        state.frame_serial += 1;
                    }
                    self.queue_draw();
                }
            }
            Event::Resized { width, height } => {
                imp.set_desktop(u32::from(width), u32::from(height));
                self.emit_by_name::<()>("desktop-resize", &[&u32::from(width), &u32::from(height)]);
            }
            Event::DesktopName(name) => {
                imp.set_desktop_name(&name);
                self.emit_by_name::<()>("desktop-name", &[&name]);
            }
            Event::Cursor {
                width,
                height,
                hotspot,
                rgba,
            } => self.set_remote_cursor(width, height, hotspot, rgba),
            Event::CutText(text) => {
                if !self.read_only() {
                    self.clipboard().set_text(&text);
                }
                self.emit_by_name::<()>("server-cut-text", &[&text]);
            }
            Event::Bell => {
                self.error_bell();
                self.emit_by_name::<()>("bell", &[]);
            }
            Event::PowerAvailable => imp.set_power_control(true),
            Event::ScancodesAvailable => imp.state.borrow_mut().scancodes = true,
            Event::Sources(list) => {
                let described: Vec<String> = list
                    .sources
                    .iter()
                    .map(|s| format!("{} ({})", s.name, s.state.label()))
                    .collect();
                tracing::info!(active = list.active, sources = ?described, "Sources");
                {
                    let mut state = imp.state.borrow_mut();
                    state.active_source = Some(usize::from(list.active));
                    state.sources = list.sources;
                }
                self.emit_by_name::<()>("sources-changed", &[]);
            }
            Event::Closed(failure) => {
                {
                    let mut state = imp.state.borrow_mut();
                    state.connection = None;
                    state.initialized = false;
                    state.failure = Some(failure.clone());
                    state.pressed.clear();
                }
                imp.set_initialized(false);
                match &failure {
                    Failure::AuthenticationFailed(reason) => {
                        self.emit_by_name::<()>("auth-failure", &[reason])
                    }
                    other => self.emit_by_name::<()>("error", &[&other.message().to_owned()]),
                }
                self.emit_by_name::<()>("disconnected", &[]);
            }
        }
    }

    /// Whether GTK draws this widget with its cairo renderer (no GPU).
    fn cairo_renderer(&self) -> bool {
        self.native()
            .and_then(|native| native.renderer())
            .is_some_and(|renderer| renderer.is::<gtk::gsk::CairoRenderer>())
    }

    /// Shows the server's cursor as the local one over the desktop.
    fn set_remote_cursor(&self, width: u16, height: u16, hotspot: (u16, u16), rgba: Vec<u8>) {
        if width == 0 || height == 0 {
            self.set_cursor(gdk::Cursor::from_name("none", None).as_ref());
            return;
        }
        let bytes = glib::Bytes::from_owned(rgba);
        let texture = gdk::MemoryTexture::new(
            i32::from(width),
            i32::from(height),
            gdk::MemoryFormat::R8g8b8a8,
            &bytes,
            usize::from(width) * 4,
        );
        let hx = i32::from(hotspot.0.min(width - 1));
        let hy = i32::from(hotspot.1.min(height - 1));
        let cursor = gdk::Cursor::from_texture(&texture, hx, hy, None);
        self.set_cursor(Some(&cursor));
    }
}

/// A frame as a texture.
fn texture_picture(frame: Frame) -> Picture {
    let bytes = glib::Bytes::from_owned(frame.data);
    Picture::Texture(
        gdk::MemoryTexture::new(
            i32::from(frame.width),
            i32::from(frame.height),
            gdk::MemoryFormat::B8g8r8a8Premultiplied,
            &bytes,
            frame.stride,
        )
        .upcast(),
    )
}

/// Whether a frame's bytes are a cairo ARGB32 image as they are (opaque B8G8R8A8 on a
/// little-endian machine, rows at cairo's stride).
fn surface_fits(frame: &Frame) -> bool {
    cfg!(target_endian = "little")
        && gtk::cairo::Format::ARgb32
            .stride_for_width(u32::from(frame.width))
            .ok()
            == i32::try_from(frame.stride).ok()
}

/// A frame as a cairo image surface over its bytes; `None`, and the frame skipped (the
/// next one follows), if cairo refuses it.
fn surface_picture(frame: Frame) -> Option<Picture> {
    let stride = i32::try_from(frame.stride).ok()?;
    let (width, height) = (i32::from(frame.width), i32::from(frame.height));
    match gtk::cairo::ImageSurface::create_for_data(
        frame.data,
        gtk::cairo::Format::ARgb32,
        width,
        height,
        stride,
    ) {
        Ok(surface) => Some(Picture::Surface(surface)),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot make a cairo surface of the frame");
            None
        }
    }
}
