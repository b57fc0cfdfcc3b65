//! The viewer application: one window, a tab per machine (AdwTabView + AdwTabBar).
//!
//! Each tab is a [`Tab`]: a [`VncDisplay`] under a status overlay. The tab reconnects
//! by itself when the connection drops or is refused (backoff 1, 2, 4 … 30 s), asks for a
//! password when the server wants one, and stops on an authentication failure until the
//! user retries. The window's title follows the selected tab, whose title follows the
//! remote desktop's name and the connection's state.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use adw::prelude::*;
use gtk::{gio, glib};

use crate::connection::{ConnectionSettings, Failure};
use crate::display::{PowerAction, VncDisplay};
use crate::keymap::special_combinations;
use crate::machines::{Machine, Machines};
use crate::SourceState;

/// What the command line asks for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// One tab per address.
    pub addresses: Vec<String>,
    /// Settings every tab starts from (address replaced per tab).
    pub template: ConnectionSettings,
    /// Scale to fit (true) or show 1:1.
    pub scaling: bool,
    pub read_only: bool,
    pub fullscreen: bool,
    /// Reconnect when a connection drops.
    pub reconnect: bool,
}

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: u32 = 30;

/// How long after leaving fullscreen the window may take to get back its size, for
/// [`Tab::fit_window`] to follow.
const FIT_WAIT: Duration = Duration::from_secs(10);

/// Runs the application until its window closes.
pub fn run(options: Options) -> glib::ExitCode {
    let app = adw::Application::builder()
        .application_id("org.kvmux.Viewer")
        .flags(gio::ApplicationFlags::NON_UNIQUE)
        .build();
    let options = Rc::new(options);
    app.connect_activate(move |app| {
        let window = Window::new(app, Rc::clone(&options));
        for address in &options.addresses {
            let settings = ConnectionSettings {
                address: address.clone(),
                ..options.template.clone()
            };
            window.open_tab(settings);
        }
        window.window.present();
        if options.fullscreen {
            window.window.fullscreen();
        }
    });
    // The command line is parsed before GTK sees it.
    app.run_with_args::<&str>(&[])
}

/// The main window and its tabs.
pub struct Window {
    pub window: adw::ApplicationWindow,
    options: Rc<Options>,
    title: adw::WindowTitle,
    header: adw::HeaderBar,
    tab_bar: adw::TabBar,
    tab_view: adw::TabView,
    stack: gtk::Stack,
    toasts: adw::ToastOverlay,
    power_button: gtk::MenuButton,
    sources: gtk::DropDown,
    /// Set while the dropdown is being filled, so that filling it selects nothing.
    sources_updating: Cell<bool>,
    machines_menu: gio::Menu,
    tabs: RefCell<Vec<Rc<Tab>>>,
    machines: RefCell<Machines>,
}

/// One connection: its display, overlay and reconnection state.
pub struct Tab {
    display: VncDisplay,
    scrolled: gtk::ScrolledWindow,
    page: RefCell<Option<adw::TabPage>>,
    overlay: gtk::Box,
    status: gtk::Label,
    spinner: gtk::Spinner,
    retry: gtk::Button,
    settings: RefCell<ConnectionSettings>,
    /// Attempts since the last successful connection.
    attempts: Cell<u32>,
    timer: RefCell<Option<glib::SourceId>>,
    /// The remote desktop's name, once known.
    name: RefCell<String>,
    /// The tab was closed: no more reconnecting.
    closed: Cell<bool>,
}

impl Window {
    pub fn new(app: &adw::Application, options: Rc<Options>) -> Rc<Window> {
        let title = adw::WindowTitle::new("kvmux-viewer", "");
        let header = adw::HeaderBar::new();
        header.set_title_widget(Some(&title));

        let tab_view = adw::TabView::new();
        let tab_bar = adw::TabBar::new();
        tab_bar.set_view(Some(&tab_view));
        tab_bar.set_autohide(true);

        let connect = gtk::Button::from_icon_name("list-add-symbolic");
        connect.set_tooltip_text(Some("Connect"));
        connect.set_action_name(Some("win.connect"));
        header.pack_start(&connect);

        let machines_menu = gio::Menu::new();
        let machines_button = gtk::MenuButton::builder()
            .icon_name("view-list-symbolic")
            .tooltip_text("Saved machines")
            .menu_model(&machines_menu)
            .build();
        header.pack_start(&machines_button);

        let sources = gtk::DropDown::from_strings(&[] as &[&str]);
        sources.set_tooltip_text(Some("Source (Ctrl+Alt+Page Down: next)"));
        sources.set_visible(false);
        header.pack_start(&sources);

        let main_menu = gio::Menu::new();
        main_menu.append(Some("Scale to Fit"), Some("win.scaling"));
        main_menu.append(Some("Fullscreen"), Some("win.fullscreen"));
        main_menu.append(Some("Grab Keyboard"), Some("win.keyboard-grab"));
        main_menu.append(Some("Screenshot"), Some("win.screenshot"));
        main_menu.append(Some("Save as Machine…"), Some("win.save-machine"));
        main_menu.append(Some("Reconnect"), Some("win.reconnect"));
        main_menu.append(Some("Close Tab"), Some("win.close-tab"));
        let menu_button = gtk::MenuButton::builder()
            .icon_name("open-menu-symbolic")
            .menu_model(&main_menu)
            .build();
        header.pack_end(&menu_button);

        let keys_menu = gio::Menu::new();
        for (i, combo) in special_combinations().iter().enumerate() {
            let item = gio::MenuItem::new(Some(&combo.label), None);
            item.set_action_and_target_value(Some("win.send-keys"), Some(&(i as u32).to_variant()));
            keys_menu.append_item(&item);
        }
        let keys_button = gtk::MenuButton::builder()
            .icon_name("input-keyboard-symbolic")
            .tooltip_text("Send keys")
            .menu_model(&keys_menu)
            .build();
        header.pack_end(&keys_button);

        let power_menu = gio::Menu::new();
        for (label, action) in [
            ("Shut Down", "shutdown"),
            ("Reboot", "reboot"),
            ("Reset", "reset"),
        ] {
            let item = gio::MenuItem::new(Some(label), None);
            item.set_action_and_target_value(Some("win.power"), Some(&action.to_variant()));
            power_menu.append_item(&item);
        }
        let power_button = gtk::MenuButton::builder()
            .icon_name("system-shutdown-symbolic")
            .tooltip_text("Power")
            .menu_model(&power_menu)
            .visible(false)
            .build();
        header.pack_end(&power_button);

        let empty = adw::StatusPage::builder()
            .title("No connections")
            .description("Connect to a machine with the + button, or open a saved one.")
            .icon_name("network-workgroup-symbolic")
            .build();
        let stack = gtk::Stack::new();
        stack.add_named(&empty, Some("empty"));
        stack.add_named(&tab_view, Some("tabs"));

        let content = gtk::Box::new(gtk::Orientation::Vertical, 0);
        content.append(&header);
        content.append(&tab_bar);
        content.append(&stack);
        let toasts = adw::ToastOverlay::new();
        toasts.set_child(Some(&content));

        let window = adw::ApplicationWindow::builder()
            .application(app)
            .title("kvmux-viewer")
            .default_width(1024)
            .default_height(700)
            .content(&toasts)
            .build();

        let machines = Machines::load(&Machines::path()).unwrap_or_else(|e| {
            tracing::warn!("{e:#}");
            Machines::default()
        });
        let this = Rc::new(Window {
            window,
            options,
            title,
            header,
            tab_bar,
            tab_view,
            stack,
            toasts,
            power_button,
            sources,
            sources_updating: Cell::new(false),
            machines_menu,
            tabs: RefCell::new(Vec::new()),
            machines: RefCell::new(machines),
        });
        // The window owns this state until it closes (actions and signal handlers only
        // hold weak references).
        let owner = RefCell::new(Some(Rc::clone(&this)));
        this.window.connect_close_request(move |_| {
            if let Some(this) = owner.borrow_mut().take() {
                for tab in this.tabs.borrow_mut().drain(..) {
                    tab.shut();
                }
            }
            glib::Propagation::Proceed
        });
        this.fill_machines_menu();
        this.install_actions();
        this.connect_signals();
        this.update_chrome();
        this
    }

    fn install_actions(self: &Rc<Self>) {
        let window = &self.window;
        self.action("connect", None, |w, _| w.connect_dialog());
        self.action(
            "open-machine",
            Some(glib::VariantTy::UINT32),
            |w: &Rc<Window>, p: Option<&glib::Variant>| {
                let Some(i) = p.and_then(|p| p.get::<u32>()) else {
                    return;
                };
                let machine = w.machines.borrow().machines.get(i as usize).cloned();
                if let Some(machine) = machine {
                    match machine.settings() {
                        Ok(mut settings) => {
                            settings.encodings.clone_from(&w.options.template.encodings);
                            w.open_tab(settings);
                        }
                        Err(e) => w.toast(&format!("{e:#}")),
                    }
                }
            },
        );
        self.action(
            "send-keys",
            Some(glib::VariantTy::UINT32),
            |w: &Rc<Window>, p: Option<&glib::Variant>| {
                let Some(i) = p.and_then(|p| p.get::<u32>()) else {
                    return;
                };
                if let (Some(tab), Some(combo)) =
                    (w.current(), special_combinations().get(i as usize))
                {
                    tab.display.send_keys(&combo.keys);
                }
            },
        );
        self.action(
            "power",
            Some(glib::VariantTy::STRING),
            |w: &Rc<Window>, p: Option<&glib::Variant>| {
                let action = match p.and_then(|p| p.get::<String>()).as_deref() {
                    Some("shutdown") => PowerAction::Shutdown,
                    Some("reboot") => PowerAction::Reboot,
                    Some("reset") => PowerAction::Reset,
                    _ => return,
                };
                if let Some(tab) = w.current() {
                    w.confirm_power(&tab, action);
                }
            },
        );
        self.action("screenshot", None, |w, _| w.screenshot());
        self.action("save-machine", None, |w, _| w.save_machine());
        self.action(
            "reconnect",
            None,
            |w: &Rc<Window>, _: Option<&glib::Variant>| {
                if let Some(tab) = w.current() {
                    tab.reconnect_now();
                }
            },
        );
        self.action(
            "close-tab",
            None,
            |w: &Rc<Window>, _: Option<&glib::Variant>| {
                if let Some(page) = w.tab_view.selected_page() {
                    w.tab_view.close_page(&page);
                }
            },
        );
        self.action(
            "fullscreen",
            None,
            |w: &Rc<Window>, _: Option<&glib::Variant>| {
                if w.window.is_fullscreen() {
                    w.window.unfullscreen();
                } else {
                    w.window.fullscreen();
                }
            },
        );
        self.action("next-source", None, |w, _| w.step_source(true));
        self.action("previous-source", None, |w, _| w.step_source(false));

        self.toggle("scaling", self.options.scaling, |w, on| {
            for tab in w.tabs.borrow().iter() {
                tab.display.set_scaling(on);
            }
        });
        // Keys the desktop's own shortcuts would take (Alt+Tab, Super…) go to the
        // remote while the keyboard is grabbed; on in fullscreen, as in TigerVNC.
        self.toggle("keyboard-grab", false, |w, on| w.set_keyboard_grab(on));

        // The viewer's own shortcuts come before the remote desktop's keys.
        let shortcuts = gtk::ShortcutController::new();
        shortcuts.set_propagation_phase(gtk::PropagationPhase::Capture);
        for (trigger, action) in [
            ("F11", "win.fullscreen"),
            ("<Control><Alt>Page_Down", "win.next-source"),
            ("<Control><Alt>Page_Up", "win.previous-source"),
        ] {
            shortcuts.add_shortcut(gtk::Shortcut::new(
                gtk::ShortcutTrigger::parse_string(trigger),
                Some(gtk::NamedAction::new(action)),
            ));
        }
        window.add_controller(shortcuts);
    }

    /// Adds window action `win.NAME` with a state (a check item in menus), `initial`
    /// at first; activating it flips the state and calls `f` with the new one.
    fn toggle(self: &Rc<Self>, name: &str, initial: bool, f: impl Fn(&Rc<Window>, bool) + 'static) {
        let action = gio::SimpleAction::new_stateful(name, None, &initial.to_variant());
        let this = Rc::downgrade(self);
        action.connect_activate(move |action, _| {
            let on = !action
                .state()
                .and_then(|s| s.get::<bool>())
                .unwrap_or(false);
            action.set_state(&on.to_variant());
            if let Some(this) = this.upgrade() {
                f(&this, on);
            }
        });
        self.window.add_action(&action);
    }

    /// Adds window action `win.NAME` calling `f`.
    fn action(
        self: &Rc<Self>,
        name: &str,
        parameter: Option<&glib::VariantTy>,
        f: impl Fn(&Rc<Window>, Option<&glib::Variant>) + 'static,
    ) {
        let action = gio::SimpleAction::new(name, parameter);
        let this = Rc::downgrade(self);
        action.connect_activate(move |_, parameter| {
            if let Some(this) = this.upgrade() {
                f(&this, parameter);
            }
        });
        self.window.add_action(&action);
    }

    fn connect_signals(self: &Rc<Self>) {
        let this = Rc::downgrade(self);
        self.tab_view.connect_selected_page_notify(move |_| {
            if let Some(this) = this.upgrade() {
                this.update_chrome();
                if let Some(tab) = this.current() {
                    tab.display.grab_focus();
                }
            }
        });
        let this = Rc::downgrade(self);
        self.tab_view.connect_close_page(move |view, page| {
            if let Some(this) = this.upgrade() {
                let mut tabs = this.tabs.borrow_mut();
                if let Some(i) = tabs
                    .iter()
                    .position(|t| t.page.borrow().as_ref() == Some(page))
                {
                    let tab = tabs.remove(i);
                    tab.shut();
                }
            }
            view.close_page_finish(page, true);
            glib::Propagation::Stop
        });
        let this = Rc::downgrade(self);
        self.tab_view.connect_n_pages_notify(move |_| {
            if let Some(this) = this.upgrade() {
                this.update_chrome();
            }
        });
        let this = Rc::downgrade(self);
        self.sources.connect_selected_notify(move |dropdown| {
            let Some(this) = this.upgrade() else { return };
            if this.sources_updating.get() {
                return;
            }
            if let Some(tab) = this.current() {
                let index = dropdown.selected();
                if index != gtk::INVALID_LIST_POSITION {
                    tab.display.select_source(index as usize);
                }
            }
        });
        let header = self.header.clone();
        let tab_bar = self.tab_bar.clone();
        let this = Rc::downgrade(self);
        self.window.connect_fullscreened_notify(move |window| {
            let full = window.is_fullscreen();
            header.set_visible(!full);
            tab_bar.set_visible(!full);
            if let Some(this) = this.upgrade() {
                this.set_keyboard_grab(full);
                if let Some(tab) = this.current().filter(|_| !full) {
                    // Back in a window of the size it had, or of the default size if it
                    // started in fullscreen: once the window manager has given it that
                    // size, grow it to fit the desktop if it is smaller, and again
                    // should the window manager's restored size come after the growth.
                    let (window, deadline) = (Rc::downgrade(&this), Instant::now() + FIT_WAIT);
                    let grown: Cell<Option<Instant>> = Cell::new(None);
                    tab.scrolled.add_tick_callback(move |_, _| {
                        let Some(window) = window.upgrade() else {
                            return glib::ControlFlow::Break;
                        };
                        let Some(tab) = window.current() else {
                            return glib::ControlFlow::Break;
                        };
                        if window.window.is_fullscreen() || Instant::now() > deadline {
                            return glib::ControlFlow::Break;
                        }
                        // A growth takes effect within the half second fit_window
                        // holds its minimum.
                        if grown
                            .get()
                            .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
                        {
                            return glib::ControlFlow::Continue;
                        }
                        if tab.fit_window(&window) {
                            grown.set(Some(Instant::now()));
                        } else if grown.get().is_some() {
                            // Grown, and it stayed so: done.
                            return glib::ControlFlow::Break;
                        }
                        glib::ControlFlow::Continue
                    });
                }
            }
        });
    }

    fn fill_machines_menu(&self) {
        self.machines_menu.remove_all();
        for (i, m) in self.machines.borrow().machines.iter().enumerate() {
            let item = gio::MenuItem::new(Some(&format!("{} ({})", m.name, m.address)), None);
            item.set_action_and_target_value(
                Some("win.open-machine"),
                Some(&(i as u32).to_variant()),
            );
            self.machines_menu.append_item(&item);
        }
        if self.machines.borrow().machines.is_empty() {
            self.machines_menu
                .append(Some("No saved machines"), Some("win.none"));
        }
    }

    /// Asks before a power action: it takes effect on the machine at once, and a
    /// mistaken Reset loses its unsaved work.
    fn confirm_power(&self, tab: &Rc<Tab>, action: PowerAction) {
        let (verb, what) = match action {
            PowerAction::Shutdown => ("Shut Down", "shut down"),
            PowerAction::Reboot => ("Reboot", "reboot"),
            PowerAction::Reset => ("Reset", "reset at once, without shutting down"),
        };
        let dialog = adw::MessageDialog::new(
            Some(&self.window),
            Some(&format!("{verb} {}?", tab.title())),
            Some(&format!("The machine will {what}.")),
        );
        dialog.add_response("cancel", "Cancel");
        dialog.add_response("confirm", verb);
        dialog.set_response_appearance("confirm", adw::ResponseAppearance::Destructive);
        dialog.set_default_response(Some("cancel"));
        dialog.set_close_response("cancel");
        let tab = Rc::downgrade(tab);
        dialog.connect_response(None, move |_, response| {
            if response == "confirm" {
                if let Some(tab) = tab.upgrade() {
                    tab.display.send_power(action);
                }
            }
        });
        dialog.present();
    }

    fn toast(&self, text: &str) {
        self.toasts.add_toast(adw::Toast::new(text));
    }

    /// The selected tab.
    fn current(&self) -> Option<Rc<Tab>> {
        let page = self.tab_view.selected_page()?;
        self.tabs
            .borrow()
            .iter()
            .find(|t| t.page.borrow().as_ref() == Some(&page))
            .cloned()
    }

    /// Whether the keyboard is to be grabbed (the `win.keyboard-grab` state).
    fn keyboard_grab(&self) -> bool {
        self.window
            .lookup_action("keyboard-grab")
            .and_then(|a| a.state())
            .and_then(|s| s.get::<bool>())
            .unwrap_or(false)
    }

    /// Grabs the keyboard for every tab's display (the focused one takes it) or lets
    /// it go.
    fn set_keyboard_grab(&self, on: bool) {
        if let Some(action) = self
            .window
            .lookup_action("keyboard-grab")
            .and_then(|a| a.downcast::<gio::SimpleAction>().ok())
        {
            action.set_state(&on.to_variant());
        }
        let tabs: Vec<Rc<Tab>> = self.tabs.borrow().clone();
        for tab in tabs {
            if tab.display.keyboard_grab() != on {
                tab.display.set_keyboard_grab(on);
            }
        }
        self.update_chrome();
    }

    /// Titles, the power menu and the source switcher follow the selected tab.
    fn update_chrome(&self) {
        let current = self.current();
        self.stack
            .set_visible_child_name(if current.is_some() { "tabs" } else { "empty" });
        let (title, subtitle) = match &current {
            Some(tab) => (tab.title(), tab.settings.borrow().address.clone()),
            None => ("kvmux-viewer".to_owned(), String::new()),
        };
        // While grabbed, the title says how to get the keyboard back.
        let title = match &current {
            Some(tab) if tab.display.keyboard_grabbed() => {
                format!("{title} ({} releases the keyboard)", tab.release_keys())
            }
            _ => title,
        };
        self.title.set_title(&title);
        self.title.set_subtitle(&subtitle);
        self.window.set_title(Some(&title));
        self.power_button
            .set_visible(current.as_ref().is_some_and(|t| t.display.power_control()));
        self.update_sources();
    }

    fn update_sources(&self) {
        let (sources, active) = self
            .current()
            .map(|t| t.display.sources())
            .unwrap_or_default();
        self.sources_updating.set(true);
        let names: Vec<String> = sources
            .iter()
            .map(|s| match s.state {
                SourceState::Connected => s.name.clone(),
                other => format!("{} ({})", s.name, other.label()),
            })
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        self.sources.set_model(Some(&gtk::StringList::new(&refs)));
        if let Some(active) = active {
            self.sources.set_selected(active as u32);
        }
        self.sources.set_visible(!sources.is_empty());
        self.sources_updating.set(false);
    }

    fn step_source(&self, forward: bool) {
        if let Some(tab) = self.current() {
            tab.display.select_next_source(forward);
        }
    }

    /// Opens a tab connecting with `settings`.
    pub fn open_tab(self: &Rc<Self>, settings: ConnectionSettings) {
        let tab = Tab::new(settings, &self.options);
        tab.display.set_keyboard_grab(self.keyboard_grab());
        let page = self.tab_view.append(&tab.widget());
        page.set_title(&tab.title());
        *tab.page.borrow_mut() = Some(page.clone());
        self.tabs.borrow_mut().push(Rc::clone(&tab));
        tab.connect(self);
        self.tab_view.set_selected_page(&page);
        tab.start();
        self.update_chrome();
    }

    /// Asks for address and credentials, then opens a tab.
    fn connect_dialog(self: &Rc<Self>) {
        let dialog = adw::MessageDialog::new(Some(&self.window), Some("Connect"), None);
        let grid = gtk::Grid::builder()
            .row_spacing(6)
            .column_spacing(12)
            .build();
        let address = gtk::Entry::builder()
            .placeholder_text("host:display or host::port")
            .activates_default(true)
            .build();
        let username = gtk::Entry::builder()
            .placeholder_text("optional (VeNCrypt Plain)")
            .activates_default(true)
            .build();
        let password = gtk::PasswordEntry::builder()
            .show_peek_icon(true)
            .activates_default(true)
            .build();
        let tls_ca = gtk::Entry::builder()
            .placeholder_text("CA certificate (PEM), optional")
            .activates_default(true)
            .build();
        let quality = gtk::SpinButton::with_range(-1.0, 9.0, 1.0);
        quality.set_value(-1.0);
        quality.set_tooltip_text(Some("JPEG quality 0-9; -1 for lossless"));
        let save_as = gtk::Entry::builder()
            .placeholder_text("name to save it under, optional")
            .activates_default(true)
            .build();
        for (row, (label, widget)) in [
            ("Address", address.upcast_ref::<gtk::Widget>()),
            ("Username", username.upcast_ref()),
            ("Password", password.upcast_ref()),
            ("TLS CA", tls_ca.upcast_ref()),
            ("Quality", quality.upcast_ref()),
            ("Save as", save_as.upcast_ref()),
        ]
        .into_iter()
        .enumerate()
        {
            let label = gtk::Label::builder().label(label).xalign(0.0).build();
            grid.attach(&label, 0, row as i32, 1, 1);
            widget.set_hexpand(true);
            grid.attach(widget, 1, row as i32, 1, 1);
        }
        dialog.set_extra_child(Some(&grid));
        dialog.add_response("cancel", "Cancel");
        dialog.add_response("connect", "Connect");
        dialog.set_response_appearance("connect", adw::ResponseAppearance::Suggested);
        dialog.set_default_response(Some("connect"));
        dialog.set_close_response("cancel");
        let this = Rc::downgrade(self);
        dialog.connect_response(None, move |_, response| {
            let Some(this) = this.upgrade() else { return };
            if response != "connect" {
                return;
            }
            let text = |e: &gtk::Entry| Some(e.text().trim().to_owned()).filter(|t| !t.is_empty());
            let Some(addr) = text(&address) else {
                this.toast("No address given");
                return;
            };
            if let Err(e) = rfb::net::parse_vnc_address(&addr) {
                this.toast(&format!("Invalid address: {e}"));
                return;
            }
            let q = quality.value_as_int();
            let settings = ConnectionSettings {
                address: addr.clone(),
                username: text(&username),
                password: Some(password.text().to_string()).filter(|p| !p.is_empty()),
                tls_ca: text(&tls_ca).map(PathBuf::from),
                lossy: q >= 0,
                quality: u8::try_from(q.max(0)).unwrap_or(8),
                encodings: this.options.template.encodings.clone(),
                ..ConnectionSettings::default()
            };
            if let Some(name) = text(&save_as) {
                this.remember(Machine {
                    name,
                    address: addr,
                    username: settings.username.clone(),
                    password_file: None,
                    tls_ca: settings.tls_ca.clone(),
                    quality: settings.lossy.then_some(settings.quality),
                });
            }
            this.open_tab(settings);
        });
        dialog.present();
    }

    fn remember(&self, machine: Machine) {
        self.machines.borrow_mut().upsert(machine);
        if let Err(e) = self.machines.borrow().save(&Machines::path()) {
            self.toast(&format!("{e:#}"));
        }
        self.fill_machines_menu();
    }

    /// Saves the selected tab's connection as a machine named after its desktop.
    fn save_machine(&self) {
        let Some(tab) = self.current() else { return };
        let settings = tab.settings.borrow().clone();
        let name = tab.title();
        self.remember(Machine {
            name: name.clone(),
            address: settings.address,
            username: settings.username,
            password_file: None,
            tls_ca: settings.tls_ca,
            quality: settings.lossy.then_some(settings.quality),
        });
        self.toast(&format!("Saved “{name}”"));
    }

    /// Writes the selected tab's picture as a PNG in the pictures directory.
    fn screenshot(&self) {
        let Some(tab) = self.current() else { return };
        let Some(texture) = tab.display.screenshot() else {
            self.toast("Nothing to save yet");
            return;
        };
        let dir =
            glib::user_special_dir(glib::UserDirectory::Pictures).unwrap_or_else(glib::home_dir);
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let safe: String = tab
            .title()
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("kvmux-{safe}-{seconds}.png"));
        match texture.save_to_png(&path) {
            Ok(()) => self.toast(&format!("Saved {}", path.display())),
            Err(e) => self.toast(&format!("Cannot save {}: {e}", path.display())),
        }
    }
}

impl Tab {
    fn new(settings: ConnectionSettings, options: &Options) -> Rc<Tab> {
        let display = VncDisplay::new();
        display.set_scaling(options.scaling);
        display.set_read_only(options.read_only);
        display.set_lossy_encoding(settings.lossy);
        display.set_quality(u32::from(settings.quality));
        let status = gtk::Label::builder()
            .wrap(true)
            .justify(gtk::Justification::Center)
            .build();
        let spinner = gtk::Spinner::new();
        let retry = gtk::Button::with_label("Retry…");
        retry.set_halign(gtk::Align::Center);
        let overlay = gtk::Box::builder()
            .orientation(gtk::Orientation::Vertical)
            .spacing(12)
            .halign(gtk::Align::Center)
            .valign(gtk::Align::Center)
            .css_classes(["osd", "card"])
            .build();
        overlay.set_margin_top(24);
        let inner = gtk::Box::new(gtk::Orientation::Vertical, 12);
        inner.set_margin_top(24);
        inner.set_margin_bottom(24);
        inner.set_margin_start(32);
        inner.set_margin_end(32);
        inner.append(&spinner);
        inner.append(&status);
        inner.append(&retry);
        overlay.append(&inner);
        let scrolled = gtk::ScrolledWindow::builder()
            .child(&display)
            .hexpand(true)
            .vexpand(true)
            .build();
        Rc::new(Tab {
            display,
            scrolled,
            page: RefCell::new(None),
            overlay,
            status,
            spinner,
            retry,
            settings: RefCell::new(settings),
            attempts: Cell::new(0),
            timer: RefCell::new(None),
            name: RefCell::new(String::new()),
            closed: Cell::new(false),
        })
    }

    /// The display under its overlay; scrolled at 1:1.
    fn widget(&self) -> gtk::Widget {
        let overlay = gtk::Overlay::new();
        overlay.set_child(Some(&self.scrolled));
        overlay.add_overlay(&self.overlay);
        overlay.upcast()
    }

    /// The release combination as people write it: `ctrl+alt` is "Ctrl+Alt".
    fn release_keys(&self) -> String {
        self.display
            .grab_keys()
            .split('+')
            .map(|part| {
                let part = part.trim();
                let mut chars = part.chars();
                chars.next().map_or(String::new(), |c| {
                    c.to_uppercase().collect::<String>() + chars.as_str()
                })
            })
            .collect::<Vec<_>>()
            .join("+")
    }

    fn title(&self) -> String {
        let name = self.name.borrow();
        let base = if name.is_empty() {
            self.settings.borrow().address.clone()
        } else {
            name.clone()
        };
        if self.display.is_initialized() {
            return base;
        }
        match self.display.last_failure() {
            Some(Failure::AuthenticationFailed(_)) => format!("{base} (authentication failed)"),
            Some(Failure::Refused(_)) if self.timer.borrow().is_some() => {
                format!("{base} (refused, reconnecting)")
            }
            Some(_) if self.timer.borrow().is_some() => format!("{base} (reconnecting)"),
            Some(_) => format!("{base} (disconnected)"),
            None => format!("{base} (connecting)"),
        }
    }

    fn show_status(&self, text: &str, busy: bool, retry: bool) {
        self.status.set_text(text);
        self.spinner.set_spinning(busy);
        self.spinner.set_visible(busy);
        self.retry.set_visible(retry);
        self.overlay.set_visible(true);
    }

    fn refresh_titles(&self, window: &Window) {
        if let Some(page) = self.page.borrow().as_ref() {
            page.set_title(&self.title());
            page.set_loading(!self.display.is_initialized() && !self.closed.get());
        }
        window.update_chrome();
    }

    fn start(&self) {
        let address = self.settings.borrow().address.clone();
        self.show_status(&format!("Connecting to {address}…"), true, false);
        self.display.open(self.settings.borrow().clone());
    }

    fn reconnect_now(&self) {
        if let Some(id) = self.timer.borrow_mut().take() {
            id.remove();
        }
        self.start();
    }

    /// Stops for good (the tab is closing).
    fn shut(&self) {
        self.closed.set(true);
        if let Some(id) = self.timer.borrow_mut().take() {
            id.remove();
        }
        self.display.close();
    }

    /// Wires the display's signals to the overlay, the titles and the dialogs.
    fn connect(self: &Rc<Self>, window: &Rc<Window>) {
        let (tab, win) = (Rc::downgrade(self), Rc::downgrade(window));
        let both = move || Some((tab.upgrade()?, win.upgrade()?));

        let b = both.clone();
        self.display.connect_closure(
            "initialized",
            false,
            glib::closure_local!(move |_: VncDisplay| {
                let Some((tab, window)) = b() else { return };
                tab.attempts.set(0);
                tab.overlay.set_visible(false);
                tab.refresh_titles(&window);
                tab.display.grab_focus();
                tab.fit_window(&window);
            }),
        );
        let b = both.clone();
        self.display.connect_closure(
            "desktop-name",
            false,
            glib::closure_local!(move |_: VncDisplay, name: String| {
                let Some((tab, window)) = b() else { return };
                tab.name.replace(name);
                tab.refresh_titles(&window);
            }),
        );
        let b = both.clone();
        self.display.connect_closure(
            "desktop-resize",
            false,
            glib::closure_local!(move |_: VncDisplay, _w: u32, _h: u32| {
                let Some((tab, window)) = b() else { return };
                tab.fit_window(&window);
            }),
        );
        let b = both.clone();
        self.display
            .connect_notify_local(Some("keyboard-grab"), move |display, _| {
                // Released with the release keys: the window's state follows.
                let Some((tab, window)) = b() else { return };
                let current = window.current().is_some_and(|t| Rc::ptr_eq(&t, &tab));
                if current && display.keyboard_grab() != window.keyboard_grab() {
                    window.set_keyboard_grab(display.keyboard_grab());
                }
            });
        let b = both.clone();
        self.display
            .connect_notify_local(Some("keyboard-grabbed"), move |_, _| {
                // The title says whether the keyboard is held now.
                if let Some((_, window)) = b() {
                    window.update_chrome();
                }
            });
        let b = both.clone();
        self.display
            .connect_notify_local(Some("power-control"), move |_, _| {
                if let Some((_, window)) = b() {
                    window.update_chrome();
                }
            });
        let b = both.clone();
        self.display.connect_closure(
            "sources-changed",
            false,
            glib::closure_local!(move |_: VncDisplay| {
                if let Some((_, window)) = b() {
                    window.update_sources();
                }
            }),
        );
        let b = both.clone();
        self.display.connect_closure(
            "auth-credential",
            false,
            glib::closure_local!(move |_: VncDisplay, needed: Vec<String>| {
                let Some((tab, window)) = b() else { return };
                tab.ask_credentials(&window, &needed, None);
            }),
        );
        let b = both.clone();
        self.display.connect_closure(
            "auth-failure",
            false,
            glib::closure_local!(move |_: VncDisplay, reason: String| {
                let Some((tab, window)) = b() else { return };
                tab.show_status(&format!("Authentication failed\n{reason}"), false, true);
                tab.refresh_titles(&window);
            }),
        );
        let b = both.clone();
        self.display.connect_closure(
            "disconnected",
            false,
            glib::closure_local!(move |_: VncDisplay| {
                let Some((tab, window)) = b() else { return };
                tab.disconnected(&window);
            }),
        );
        let b = both.clone();
        self.retry.connect_clicked(move |_| {
            let Some((tab, window)) = b() else { return };
            if matches!(
                tab.display.last_failure(),
                Some(Failure::AuthenticationFailed(_))
            ) {
                let needed = if tab.settings.borrow().username.is_some() {
                    vec!["username".to_owned(), "password".to_owned()]
                } else {
                    vec!["password".to_owned()]
                };
                tab.ask_credentials(&window, &needed, Some(()));
            } else {
                tab.reconnect_now();
            }
        });
    }

    /// At 1:1, grows the window to show the whole desktop (within the monitor). GTK
    /// does not resize a mapped window to a new default size, but grows it to a larger
    /// minimum: the scrolled area asks for the desktop's size for a moment, then lets the
    /// user shrink the window again.
    /// Returns whether the window had to grow.
    fn fit_window(&self, window: &Window) -> bool {
        if self.display.scaling() || window.window.is_fullscreen() || window.window.is_maximized() {
            return false;
        }
        let (mut w, mut h) = (
            self.display.desktop_width() as i32,
            self.display.desktop_height() as i32,
        );
        if let Some(monitor) = window
            .window
            .surface()
            .and_then(|s| gtk::prelude::WidgetExt::display(&window.window).monitor_at_surface(&s))
        {
            let geometry = monitor.geometry();
            let chrome = window.header.height() + window.tab_bar.height();
            w = w.min(geometry.width());
            h = h.min(geometry.height() - chrome);
        }
        if self.scrolled.width() >= w && self.scrolled.height() >= h {
            return false;
        }
        self.scrolled.set_min_content_width(w);
        self.scrolled.set_min_content_height(h);
        let scrolled = self.scrolled.clone();
        glib::timeout_add_local_once(Duration::from_millis(500), move || {
            scrolled.set_min_content_width(-1);
            scrolled.set_min_content_height(-1);
        });
        true
    }

    /// The connection ended: say why, and reconnect unless the credentials were wrong.
    fn disconnected(self: &Rc<Self>, window: &Rc<Window>) {
        if self.closed.get() {
            return;
        }
        let failure = self.display.last_failure();
        let reconnect = window.options.reconnect;
        let (what, retry_later) = match &failure {
            Some(Failure::AuthenticationFailed(_)) => {
                self.refresh_titles(window);
                return;
            }
            Some(Failure::Refused(m)) => (format!("Connection refused\n{m}"), reconnect),
            Some(Failure::Lost(m)) => (format!("Connection lost\n{m}"), reconnect),
            Some(Failure::Other(m)) => (format!("Error\n{m}"), reconnect),
            None => ("Disconnected".to_owned(), reconnect),
        };
        if !retry_later {
            self.show_status(&what, false, true);
            self.refresh_titles(window);
            return;
        }
        let attempt = self.attempts.get();
        self.attempts.set(attempt.saturating_add(1));
        let delay = (1u32 << attempt.min(5)).min(MAX_BACKOFF);
        self.countdown(window, what, delay);
    }

    /// Shows `what` with a countdown, then reconnects.
    fn countdown(self: &Rc<Self>, window: &Rc<Window>, what: String, seconds: u32) {
        self.show_status(&format!("{what}\nReconnecting in {seconds} s…"), true, true);
        let (tab, win) = (Rc::downgrade(self), Rc::downgrade(window));
        let id = glib::timeout_add_local_once(Duration::from_secs(1), move || {
            let (Some(tab), Some(window)) = (tab.upgrade(), win.upgrade()) else {
                return;
            };
            tab.timer.borrow_mut().take();
            if tab.closed.get() {
                return;
            }
            if seconds <= 1 {
                tab.start();
                tab.refresh_titles(&window);
            } else {
                tab.countdown(&window, what, seconds - 1);
            }
        });
        if let Some(old) = self.timer.borrow_mut().replace(id) {
            old.remove();
        }
        self.refresh_titles(window);
    }

    /// Asks for the credentials in `needed`; with `reconnect`, opens a new connection
    /// with them (after a failure), otherwise answers the connection waiting for them.
    fn ask_credentials(
        self: &Rc<Self>,
        window: &Rc<Window>,
        needed: &[String],
        reconnect: Option<()>,
    ) {
        let address = self.settings.borrow().address.clone();
        let dialog = adw::MessageDialog::new(
            Some(&window.window),
            Some("Password required"),
            Some(&format!("{address} asks for a password.")),
        );
        let fields = gtk::Box::new(gtk::Orientation::Vertical, 6);
        let username = gtk::Entry::builder().placeholder_text("Username").build();
        if let Some(u) = &self.settings.borrow().username {
            username.set_text(u);
        }
        let password = gtk::PasswordEntry::builder()
            .placeholder_text("Password")
            .show_peek_icon(true)
            .activates_default(true)
            .build();
        let focus = password.clone();
        let wants_user = needed.iter().any(|n| n == "username");
        if wants_user {
            fields.append(&username);
        }
        fields.append(&password);
        dialog.set_extra_child(Some(&fields));
        dialog.add_response("cancel", "Cancel");
        dialog.add_response("ok", "Connect");
        dialog.set_response_appearance("ok", adw::ResponseAppearance::Suggested);
        dialog.set_default_response(Some("ok"));
        dialog.set_close_response("cancel");
        let tab = Rc::downgrade(self);
        let win = Rc::downgrade(window);
        dialog.connect_response(None, move |_, response| {
            let (Some(tab), Some(window)) = (tab.upgrade(), win.upgrade()) else {
                return;
            };
            if response != "ok" {
                if reconnect.is_none() {
                    tab.display.close();
                    tab.show_status("Authentication cancelled", false, true);
                    tab.refresh_titles(&window);
                }
                return;
            }
            let user = wants_user
                .then(|| username.text().trim().to_owned())
                .filter(|u| !u.is_empty());
            let secret = password.text().to_string();
            {
                let mut settings = tab.settings.borrow_mut();
                settings.password = Some(secret.clone());
                if user.is_some() {
                    settings.username.clone_from(&user);
                }
            }
            if reconnect.is_some() {
                tab.reconnect_now();
            } else {
                tab.display.send_credentials(user, secret);
            }
        });
        dialog.present();
        focus.grab_focus();
    }
}
