//! The GObject side of [`VncDisplay`](super::VncDisplay): properties, signals, input
//! and drawing.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gtk::glib::subclass::Signal;
use gtk::glib::translate::IntoGlib;
use gtk::prelude::*;
use gtk::subclass::prelude::*;
use gtk::{gdk, glib, graphene};

use crate::connection::{Command, Connection, Failure};
use crate::keymap;
use crate::SourceInfo;

/// Everything about the current connection and what it shows.
#[derive(Default)]
pub struct State {
    pub connection: Option<Connection>,
    /// Increases with every `open`: events of older connections are ignored.
    pub generation: u64,
    pub picture: Option<Picture>,
    /// Counts the frames received, to count each frame drawn once.
    pub frame_serial: u64,
    /// The desktop's size (the picture's may lag behind a resize).
    pub desktop: (u32, u32),
    pub initialized: bool,
    pub scancodes: bool,
    pub power: bool,
    pub failure: Option<Failure>,
    /// Keys pressed here and sent down: hardware keycode → keysym sent.
    pub pressed: HashMap<u32, u32>,
    pub buttons: u8,
    /// Fractional smooth-scroll travel not yet sent as wheel clicks.
    pub scroll: (f64, f64),
    pub sources: Vec<SourceInfo>,
    pub active_source: Option<usize>,
    /// Frames drawn, for `KVMUX_VIEWER_FPS`.
    pub frame_stats: Option<FrameStats>,
    /// The serial of the frame last drawn.
    pub drawn: u64,
}

/// The picture shown. A texture, except under GTK's cairo renderer: GTK 4.8 turns a
/// texture into a cairo surface through floats at every draw, which costs more than
/// decoding the frame, while a cairo image surface of the same bytes is painted as is.
#[derive(Clone)]
pub enum Picture {
    Texture(gdk::Texture),
    Surface(gtk::cairo::ImageSurface),
}

impl Picture {
    pub fn size(&self) -> (i32, i32) {
        match self {
            Picture::Texture(t) => (t.width(), t.height()),
            Picture::Surface(s) => (s.width(), s.height()),
        }
    }

    /// The picture as a texture (a copy for a surface).
    pub fn texture(&self) -> Option<gdk::Texture> {
        match self {
            Picture::Texture(t) => Some(t.clone()),
            Picture::Surface(s) => {
                let mut copy = Vec::new();
                s.with_data(|data| copy = data.to_vec()).ok()?;
                let bytes = glib::Bytes::from_owned(copy);
                let texture = gdk::MemoryTexture::new(
                    s.width(),
                    s.height(),
                    gdk::MemoryFormat::B8g8r8a8Premultiplied,
                    &bytes,
                    usize::try_from(s.stride()).ok()?,
                );
                Some(texture.upcast())
            }
        }
    }
}

pub struct FrameStats {
    pub since: Instant,
    pub frames: u64,
    pub total: u64,
}

#[derive(Default, glib::Properties)]
#[properties(wrapper_type = super::VncDisplay)]
pub struct VncDisplay {
    /// Input is not sent to the server.
    #[property(get, set)]
    read_only: Cell<bool>,
    /// Scale the desktop to fit the widget, keeping its aspect ratio; 1:1 when false.
    #[property(get, set = Self::set_scaling)]
    scaling: Cell<bool>,
    /// Keep the desktop's shortcuts (Alt+Tab, Super…) from the local system while focused.
    #[property(get, set = Self::set_keyboard_grab)]
    keyboard_grab: Cell<bool>,
    /// The modifiers that release the keyboard grab when held together, e.g. `ctrl+alt`.
    #[property(get, set)]
    grab_keys: RefCell<String>,
    /// Let the server send lossy (JPEG) rectangles; applies to the next connection.
    #[property(get, set)]
    lossy_encoding: Cell<bool>,
    /// JPEG quality 0-9 for lossy encodings.
    #[property(get, set, maximum = 9)]
    quality: Cell<u32>,
    /// The remote desktop's name (DesktopName).
    #[property(get)]
    desktop_name: RefCell<String>,
    #[property(get)]
    desktop_width: Cell<u32>,
    #[property(get)]
    desktop_height: Cell<u32>,
    /// The server accepts xvp power requests (shutdown, reboot, reset).
    #[property(get)]
    power_control: Cell<bool>,
    /// The handshake is done and the desktop is showing.
    #[property(get)]
    is_initialized: Cell<bool>,
    pub state: RefCell<State>,
    /// The keyboard is ours now: `keyboard-grab` is on, the display has the focus and
    /// its toplevel holds the keyboard (inhibits the system's shortcuts).
    #[property(get)]
    keyboard_grabbed: Cell<bool>,
    /// A grab that failed is tried again shortly.
    grab_retry: Cell<bool>,
}

#[glib::object_subclass]
impl ObjectSubclass for VncDisplay {
    const NAME: &'static str = "KvmuxVncDisplay";
    type Type = super::VncDisplay;
    type ParentType = gtk::Widget;

    fn class_init(klass: &mut Self::Class) {
        klass.set_css_name("vncdisplay");
    }
}

#[glib::derived_properties]
impl ObjectImpl for VncDisplay {
    fn signals() -> &'static [Signal] {
        static SIGNALS: OnceLock<Vec<Signal>> = OnceLock::new();
        SIGNALS.get_or_init(|| {
            vec![
                Signal::builder("connected").build(),
                Signal::builder("initialized").build(),
                Signal::builder("disconnected").build(),
                Signal::builder("auth-credential")
                    .param_types([Vec::<String>::static_type()])
                    .build(),
                Signal::builder("auth-failure")
                    .param_types([String::static_type()])
                    .build(),
                Signal::builder("desktop-resize")
                    .param_types([u32::static_type(), u32::static_type()])
                    .build(),
                Signal::builder("desktop-name")
                    .param_types([String::static_type()])
                    .build(),
                Signal::builder("server-cut-text")
                    .param_types([String::static_type()])
                    .build(),
                Signal::builder("bell").build(),
                Signal::builder("error")
                    .param_types([String::static_type()])
                    .build(),
                Signal::builder("sources-changed").build(),
            ]
        })
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj: super::VncDisplay = (*self.obj()).clone();
        obj.set_focusable(true);
        obj.set_focus_on_click(true);
        obj.set_hexpand(true);
        obj.set_vexpand(true);
        obj.set_overflow(gtk::Overflow::Hidden);
        self.grab_keys.replace("ctrl+alt".to_owned());
        self.quality.set(8);
        if std::env::var_os("KVMUX_VIEWER_FPS").is_some() {
            self.state.borrow_mut().frame_stats = Some(FrameStats {
                since: Instant::now(),
                frames: 0,
                total: 0,
            });
        }

        let input = gtk::EventControllerLegacy::new();
        input.connect_event(glib::clone!(
            #[weak(rename_to = display)]
            obj,
            #[upgrade_or]
            glib::Propagation::Proceed,
            move |_, event| display.imp().handle_event(event)
        ));
        obj.add_controller(input);

        let focus = gtk::EventControllerFocus::new();
        focus.connect_enter(glib::clone!(
            #[weak(rename_to = display)]
            obj,
            move |_| display.imp().update_grab()
        ));
        focus.connect_leave(glib::clone!(
            #[weak(rename_to = display)]
            obj,
            move |_| {
                // Keys held here would stay down on the server: let them go.
                display.imp().release_all();
                // Taking the keyboard moves X's focus away and straight back (FocusOut
                // and FocusIn, mode NotifyGrab), which GTK reports as leaving and
                // entering: decide a moment later, or each grab would let itself go.
                let display = display.downgrade();
                glib::timeout_add_local_once(Duration::from_millis(150), move || {
                    if let Some(display) = display.upgrade() {
                        display.imp().update_grab();
                    }
                });
            }
        ));
        obj.add_controller(focus);

        // The local clipboard to the server, when something else than us fills it.
        obj.clipboard().connect_changed(glib::clone!(
            #[weak(rename_to = display)]
            obj,
            move |clipboard| {
                if clipboard.is_local() || display.read_only() {
                    return;
                }
                clipboard.read_text_async(
                    gio::Cancellable::NONE,
                    glib::clone!(
                        #[weak]
                        display,
                        move |text| {
                            if let Ok(Some(text)) = text {
                                display.imp().send(Command::Clipboard(text.to_string()));
                            }
                        }
                    ),
                );
            }
        ));
    }

    fn dispose(&self) {
        self.state.borrow_mut().connection = None;
    }
}

use gtk::gio;

impl WidgetImpl for VncDisplay {
    fn measure(&self, orientation: gtk::Orientation, _for_size: i32) -> (i32, i32, i32, i32) {
        let (w, h) = self.state.borrow().desktop;
        let natural = match orientation {
            gtk::Orientation::Horizontal => w,
            _ => h,
        };
        let natural = i32::try_from(natural).unwrap_or(i32::MAX).max(1);
        (1, natural, -1, -1)
    }

    fn snapshot(&self, snapshot: &gtk::Snapshot) {
        let obj = self.obj();
        let (width, height) = (obj.width() as f32, obj.height() as f32);
        snapshot.append_color(
            &gdk::RGBA::new(0.0, 0.0, 0.0, 1.0),
            &graphene::Rect::new(0.0, 0.0, width, height),
        );
        let mut state = self.state.borrow_mut();
        let Some(picture) = state.picture.clone() else {
            return;
        };
        let placement = self.placement_for(&picture);
        match &picture {
            Picture::Texture(texture) => snapshot.append_texture(texture, &placement.rect()),
            Picture::Surface(surface) => {
                let cr = snapshot.append_cairo(&placement.rect());
                cr.translate(placement.x, placement.y);
                cr.scale(placement.scale, placement.scale);
                let filter = if placement.scale == 1.0 {
                    gtk::cairo::Filter::Fast
                } else {
                    gtk::cairo::Filter::Good
                };
                // A context in error only draws nothing: there is nothing else to do.
                if cr.set_source_surface(surface, 0.0, 0.0).is_ok() {
                    cr.source().set_filter(filter);
                    cr.set_operator(gtk::cairo::Operator::Source);
                    let _ = cr.paint();
                }
            }
        }
        if state.drawn != state.frame_serial {
            state.drawn = state.frame_serial;
            if let Some(stats) = state.frame_stats.as_mut() {
                stats.frames += 1;
                stats.total += 1;
                let elapsed = stats.since.elapsed().as_secs_f64();
                if elapsed >= 1.0 {
                    eprintln!(
                        "kvmux-viewer frames: {} in {elapsed:.3} s ({:.1} fps), {} in all",
                        stats.frames,
                        stats.frames as f64 / elapsed,
                        stats.total
                    );
                    stats.frames = 0;
                    stats.since = Instant::now();
                }
            }
        }
    }
}

/// Where the desktop is drawn in the widget: offset and scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    pub x: f64,
    pub y: f64,
    pub scale: f64,
    pub width: f64,
    pub height: f64,
}

impl Placement {
    fn rect(&self) -> graphene::Rect {
        graphene::Rect::new(
            self.x as f32,
            self.y as f32,
            (self.width * self.scale) as f32,
            (self.height * self.scale) as f32,
        )
    }

    /// The desktop pixel under widget point `(x, y)`, clamped to the desktop.
    pub fn to_desktop(&self, x: f64, y: f64) -> (u16, u16) {
        let clamp = |v: f64, max: f64| v.clamp(0.0, (max - 1.0).max(0.0)) as u16;
        (
            clamp(((x - self.x) / self.scale).floor(), self.width),
            clamp(((y - self.y) / self.scale).floor(), self.height),
        )
    }
}

/// Places a `desktop`-sized picture in a `widget`-sized area: scaled to fit keeping the
/// aspect ratio and centred, or 1:1 at the top left (centred when there is room), on
/// whole pixels so that 1:1 is exact.
pub fn place(widget: (f64, f64), desktop: (f64, f64), scaling: bool) -> Placement {
    let (ww, wh) = widget;
    let (dw, dh) = desktop;
    let scale = if scaling && dw > 0.0 && dh > 0.0 {
        (ww / dw).min(wh / dh)
    } else {
        1.0
    };
    let x = ((ww - dw * scale) / 2.0).max(0.0);
    let y = ((wh - dh * scale) / 2.0).max(0.0);
    let (x, y) = if scaling {
        (x, y)
    } else {
        (x.floor(), y.floor())
    };
    Placement {
        x,
        y,
        scale,
        width: dw,
        height: dh,
    }
}

impl VncDisplay {
    fn set_scaling(&self, scaling: bool) {
        self.scaling.set(scaling);
        self.obj().queue_resize();
        self.obj().queue_draw();
    }

    fn set_keyboard_grab(&self, grab: bool) {
        self.keyboard_grab.set(grab);
        self.update_grab();
    }

    fn placement_for(&self, picture: &Picture) -> Placement {
        let obj = self.obj();
        let (width, height) = picture.size();
        place(
            (f64::from(obj.width()), f64::from(obj.height())),
            (f64::from(width), f64::from(height)),
            self.scaling.get(),
        )
    }

    fn placement(&self) -> Option<Placement> {
        let picture = self.state.borrow().picture.clone()?;
        Some(self.placement_for(&picture))
    }

    pub fn send(&self, command: Command) {
        if let Some(connection) = &self.state.borrow().connection {
            connection.send(command);
        }
    }

    pub fn set_desktop(&self, width: u32, height: u32) {
        self.state.borrow_mut().desktop = (width, height);
        self.desktop_width.set(width);
        self.desktop_height.set(height);
        let obj = self.obj();
        obj.notify_desktop_width();
        obj.notify_desktop_height();
        obj.queue_resize();
    }

    pub fn set_desktop_name(&self, name: &str) {
        self.desktop_name.replace(name.to_owned());
        self.obj().notify_desktop_name();
    }

    pub fn set_power_control(&self, on: bool) {
        self.power_control.set(on);
        self.obj().notify_power_control();
    }

    pub fn set_initialized(&self, on: bool) {
        self.is_initialized.set(on);
        self.obj().notify_is_initialized();
    }

    /// Inhibits the system's shortcuts while the grab is wanted and we have focus.
    pub fn update_grab(&self) {
        let obj = self.obj();
        let want = self.keyboard_grab.get() && obj.has_focus();
        tracing::debug!(
            wanted = self.keyboard_grab.get(),
            focus = obj.has_focus(),
            grabbed = self.keyboard_grabbed.get(),
            "Keyboard grab update"
        );
        if want == self.keyboard_grabbed.get() {
            return;
        }
        let Some(surface) = obj.native().and_then(|n| n.surface()) else {
            return;
        };
        let Ok(toplevel) = surface.dynamic_cast::<gdk::Toplevel>() else {
            return;
        };
        if want {
            toplevel.inhibit_system_shortcuts(None::<&gdk::Event>);
            if !toplevel.is_shortcuts_inhibited() {
                // Not on screen yet, or another client holds the keyboard: again soon.
                tracing::debug!("Keyboard grab refused; trying again");
                if !self.grab_retry.replace(true) {
                    let display = self.obj().downgrade();
                    glib::timeout_add_local_once(Duration::from_millis(200), move || {
                        if let Some(display) = display.upgrade() {
                            display.imp().grab_retry.set(false);
                            display.imp().update_grab();
                        }
                    });
                }
                return;
            }
        } else {
            toplevel.restore_system_shortcuts();
        }
        tracing::info!(grabbed = want, "Keyboard grab");
        self.keyboard_grabbed.set(want);
        self.obj().notify_keyboard_grabbed();
    }

    /// Sends key-up for every key still down here.
    pub fn release_all(&self) {
        let pressed: Vec<(u32, u32)> = self.state.borrow_mut().pressed.drain().collect();
        let scancodes = self.state.borrow().scancodes;
        for (keycode, keysym) in pressed {
            self.send(Command::Key {
                down: false,
                keysym,
                scancode: scancodes
                    .then(|| keymap::x_keycode_to_qemu(keycode))
                    .flatten(),
            });
        }
        let buttons = std::mem::take(&mut self.state.borrow_mut().buttons);
        if buttons != 0 {
            tracing::debug!(buttons, "Buttons released on focus loss");
        }
    }

    /// The modifier mask the grab-keys property names.
    fn grab_modifiers(&self) -> gdk::ModifierType {
        let mut mask = gdk::ModifierType::empty();
        for part in self.grab_keys.borrow().split('+') {
            mask |= match part.trim().to_ascii_lowercase().as_str() {
                "ctrl" | "control" => gdk::ModifierType::CONTROL_MASK,
                "alt" => gdk::ModifierType::ALT_MASK,
                "shift" => gdk::ModifierType::SHIFT_MASK,
                "super" => gdk::ModifierType::SUPER_MASK,
                _ => gdk::ModifierType::empty(),
            };
        }
        mask
    }

    fn handle_event(&self, event: &gdk::Event) -> glib::Propagation {
        let obj = self.obj();
        let connected = self.state.borrow().initialized;
        match event.event_type() {
            gdk::EventType::KeyPress | gdk::EventType::KeyRelease => {
                let Some(key) = event.downcast_ref::<gdk::KeyEvent>() else {
                    return glib::Propagation::Proceed;
                };
                if !connected || obj.read_only() {
                    return glib::Propagation::Proceed;
                }
                self.key(key)
            }
            gdk::EventType::ButtonPress
            | gdk::EventType::ButtonRelease
            | gdk::EventType::MotionNotify
            | gdk::EventType::Scroll => {
                if event.event_type() == gdk::EventType::ButtonPress && !obj.has_focus() {
                    obj.grab_focus();
                }
                if !connected || obj.read_only() {
                    return glib::Propagation::Proceed;
                }
                self.pointer(event);
                glib::Propagation::Stop
            }
            _ => glib::Propagation::Proceed,
        }
    }

    fn key(&self, key: &gdk::KeyEvent) -> glib::Propagation {
        let down = key.event_type() == gdk::EventType::KeyPress;
        let keycode = key.keycode();
        let keysym = key.keyval().into_glib();
        // The release combination: the grab-keys modifiers held together.
        if down && self.keyboard_grabbed.get() {
            let grab = self.grab_modifiers();
            let held = key.modifier_state() | modifier_of(keysym);
            if !grab.is_empty() && held.contains(grab) {
                self.obj().set_keyboard_grab(false);
            }
        }
        let keysym = {
            let mut state = self.state.borrow_mut();
            if down {
                state.pressed.insert(keycode, keysym);
                keysym
            } else {
                // Release what was pressed, whatever the modifiers turned it into since.
                match state.pressed.remove(&keycode) {
                    Some(sent) => sent,
                    None => return glib::Propagation::Stop,
                }
            }
        };
        let scancode = keymap::x_keycode_to_qemu(keycode);
        self.send(Command::Key {
            down,
            keysym,
            scancode,
        });
        glib::Propagation::Stop
    }

    fn pointer(&self, event: &gdk::Event) {
        let Some(placement) = self.placement() else {
            return;
        };
        let Some((x, y)) = self.widget_position(event) else {
            return;
        };
        let (dx, dy) = placement.to_desktop(x, y);
        let mut wheel: Vec<u8> = Vec::new();
        {
            let mut state = self.state.borrow_mut();
            match event.event_type() {
                gdk::EventType::ButtonPress | gdk::EventType::ButtonRelease => {
                    let Some(button) = event.downcast_ref::<gdk::ButtonEvent>() else {
                        return;
                    };
                    let bit = match button.button() {
                        1 => 1,
                        2 => 2,
                        3 => 4,
                        _ => return,
                    };
                    if event.event_type() == gdk::EventType::ButtonPress {
                        state.buttons |= bit;
                    } else {
                        state.buttons &= !bit;
                    }
                }
                gdk::EventType::Scroll => {
                    let Some(scroll) = event.downcast_ref::<gdk::ScrollEvent>() else {
                        return;
                    };
                    match scroll.direction() {
                        gdk::ScrollDirection::Up => wheel.push(8),
                        gdk::ScrollDirection::Down => wheel.push(16),
                        gdk::ScrollDirection::Left => wheel.push(32),
                        gdk::ScrollDirection::Right => wheel.push(64),
                        _ => {
                            let (sx, sy) = scroll.deltas();
                            state.scroll.0 += sx;
                            state.scroll.1 += sy;
                            while state.scroll.1 <= -1.0 {
                                wheel.push(8);
                                state.scroll.1 += 1.0;
                            }
                            while state.scroll.1 >= 1.0 {
                                wheel.push(16);
                                state.scroll.1 -= 1.0;
                            }
                            while state.scroll.0 <= -1.0 {
                                wheel.push(32);
                                state.scroll.0 += 1.0;
                            }
                            while state.scroll.0 >= 1.0 {
                                wheel.push(64);
                                state.scroll.0 -= 1.0;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let buttons = self.state.borrow().buttons;
        for bit in wheel {
            self.send(Command::Pointer {
                buttons: buttons | bit,
                x: dx,
                y: dy,
            });
        }
        self.send(Command::Pointer {
            buttons,
            x: dx,
            y: dy,
        });
    }

    /// The event's position in this widget's coordinates.
    fn widget_position(&self, event: &gdk::Event) -> Option<(f64, f64)> {
        let obj = self.obj();
        let (x, y) = event.position()?;
        let native = obj.native()?;
        let (sx, sy) = native.surface_transform();
        let point = graphene::Point::new((x - sx) as f32, (y - sy) as f32);
        let local = native.compute_point(&*obj, &point)?;
        Some((f64::from(local.x()), f64::from(local.y())))
    }
}

/// The modifier a modifier key itself stands for (its own press is not in the event's
/// modifier state yet).
fn modifier_of(keysym: u32) -> gdk::ModifierType {
    match keysym {
        0xffe3 | 0xffe4 => gdk::ModifierType::CONTROL_MASK,
        0xffe7..=0xffea => gdk::ModifierType::ALT_MASK,
        0xffe1 | 0xffe2 => gdk::ModifierType::SHIFT_MASK,
        0xffeb | 0xffec => gdk::ModifierType::SUPER_MASK,
        _ => gdk::ModifierType::empty(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn one_to_one_is_on_whole_pixels() {
        let p = place((1001.0, 700.0), (800.0, 600.0), false);
        assert_eq!((p.x, p.y, p.scale), (100.0, 50.0, 1.0));
        assert_eq!(p.to_desktop(100.0, 50.0), (0, 0));
        assert_eq!(p.to_desktop(899.5, 649.9), (799, 599));
        // Outside the picture: clamped to its edge.
        assert_eq!(p.to_desktop(0.0, 1000.0), (0, 599));
        // Smaller widget: top left, clipped.
        let p = place((400.0, 300.0), (800.0, 600.0), false);
        assert_eq!((p.x, p.y), (0.0, 0.0));
    }

    #[test]
    fn scaling_fits_and_keeps_the_aspect_ratio() {
        // 1600x900 into 800x600: width limits, scale 1/2, 450 high, centred vertically.
        let p = place((800.0, 600.0), (1600.0, 900.0), true);
        assert_eq!(p.scale, 0.5);
        assert_eq!((p.x, p.y), (0.0, 75.0));
        assert_eq!(p.to_desktop(400.0, 300.0), (800, 450));
        // Larger widgets scale up.
        let p = place((1000.0, 1000.0), (500.0, 250.0), true);
        assert_eq!((p.scale, p.x, p.y), (2.0, 0.0, 250.0));
    }
}
