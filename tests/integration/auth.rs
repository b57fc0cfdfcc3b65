//! Authentication against Xvnc: VncAuth, and VeNCrypt X509Vnc and X509Plain.
//!
//! `--password-file` takes a file made with `vncpasswd -f` for VNC passwords; for
//! X509Plain these tests give it the password as plain text on one line.
//!
//! X509Plain: Xvnc checks user and password through PAM. `scripts/setup.sh` installs
//! the PAM service `kvmux-tests`, which accepts only `PLAIN_USER` with
//! `PLAIN_PASSWORD`; no real account or password of the machine is involved.

use std::path::PathBuf;
use std::sync::OnceLock;

use kvmux_tests::{
    self_signed_certificate, vnc_password_file, Security, TempDir, TestCertificate, VncServer,
    Xvnc, XvncOptions, PLAIN_PASSWORD, PLAIN_USER,
};

use crate::{assert_failed_saying, assert_snapshot_equals, picture, shared, snapshot, Shown};

const VNC_PASSWORD: &str = "kvmux-vnc";

/// Files for the auth tests: certificates and password files.
struct Files {
    _dir: TempDir,
    server: TestCertificate,
    /// Another self-signed certificate for the same names: a CA that did not sign the
    /// server's certificate.
    stranger: TestCertificate,
    right_password: PathBuf,
    wrong_password: PathBuf,
    plain_password: PathBuf,
    wrong_plain_password: PathBuf,
}

fn files() -> &'static Files {
    static FILES: OnceLock<Files> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = TempDir::new("auth").unwrap();
        let files = Files {
            server: self_signed_certificate(dir.path(), "server").unwrap(),
            stranger: self_signed_certificate(dir.path(), "stranger").unwrap(),
            right_password: dir.join("right.passwd"),
            wrong_password: dir.join("wrong.passwd"),
            plain_password: dir.join("plain.txt"),
            wrong_plain_password: dir.join("wrong-plain.txt"),
            _dir: dir,
        };
        vnc_password_file(&files.right_password, VNC_PASSWORD).unwrap();
        vnc_password_file(&files.wrong_password, "not-it").unwrap();
        std::fs::write(&files.plain_password, format!("{PLAIN_PASSWORD}\n")).unwrap();
        std::fs::write(&files.wrong_plain_password, "not-it\n").unwrap();
        files
    })
}

fn vnc_auth() -> &'static Shown<Xvnc> {
    static SERVER: OnceLock<Result<Shown<Xvnc>, String>> = OnceLock::new();
    shared(&SERVER, picture(), || {
        Xvnc::start(XvncOptions {
            security: Security::VncAuth {
                password: VNC_PASSWORD.into(),
            },
            ..Default::default()
        })
    })
}

fn x509() -> &'static Shown<Xvnc> {
    static SERVER: OnceLock<Result<Shown<Xvnc>, String>> = OnceLock::new();
    shared(&SERVER, picture(), || {
        let files = files();
        Xvnc::start(XvncOptions {
            security: Security::X509 {
                cert: files.server.cert.clone(),
                key: files.server.key.clone(),
                types: "X509Vnc,X509Plain".into(),
                password: Some(VNC_PASSWORD.into()),
                plain_users: Some(PLAIN_USER.into()),
            },
            ..Default::default()
        })
    })
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn vnc_auth_right_password() {
    let shown = vnc_auth();
    let args = ["--password-file", path(&files().right_password)];
    assert_snapshot_equals(&shown.server.address(), &args, &shown.truth);
}

#[test]
fn vnc_auth_wrong_password() {
    let args = ["--password-file", path(&files().wrong_password)];
    let snap = snapshot(&vnc_auth().server.address(), &args);
    // Xvnc's reason.
    assert_failed_saying(&snap, &["Authentication failure"]);
}

#[test]
fn vnc_auth_without_password() {
    let snap = snapshot(&vnc_auth().server.address(), &["--timeout", "10"]);
    assert_failed_saying(&snap, &["password"]);
}

#[test]
fn x509_vnc_right_ca_and_password() {
    let shown = x509();
    let files = files();
    let args = [
        "--tls-ca",
        path(&files.server.cert),
        "--password-file",
        path(&files.right_password),
    ];
    assert_snapshot_equals(&shown.server.address(), &args, &shown.truth);
}

#[test]
fn x509_vnc_wrong_ca() {
    let files = files();
    let args = [
        "--tls-ca",
        path(&files.stranger.cert),
        "--password-file",
        path(&files.right_password),
    ];
    let snap = snapshot(&x509().server.address(), &args);
    assert_failed_saying(&snap, &["certificate"]);
}

/// The self-signed certificate is in no system store.
#[test]
fn x509_vnc_without_ca() {
    let args = ["--password-file", path(&files().right_password)];
    let snap = snapshot(&x509().server.address(), &args);
    assert_failed_saying(&snap, &["certificate"]);
}

#[test]
fn x509_vnc_wrong_password() {
    let files = files();
    let args = [
        "--tls-ca",
        path(&files.server.cert),
        "--password-file",
        path(&files.wrong_password),
    ];
    let snap = snapshot(&x509().server.address(), &args);
    assert_failed_saying(&snap, &["Authentication failure"]);
}

#[test]
fn x509_plain_right_user_and_password() {
    let shown = x509();
    let files = files();
    let args = [
        "--tls-ca",
        path(&files.server.cert),
        "--username",
        PLAIN_USER,
        "--password-file",
        path(&files.plain_password),
    ];
    assert_snapshot_equals(&shown.server.address(), &args, &shown.truth);
}

#[test]
fn x509_plain_wrong_password() {
    let files = files();
    let args = [
        "--tls-ca",
        path(&files.server.cert),
        "--username",
        PLAIN_USER,
        "--password-file",
        path(&files.wrong_plain_password),
    ];
    let snap = snapshot(&x509().server.address(), &args);
    // Xvnc: "Authentication failure: invalid password or username".
    assert_failed_saying(&snap, &["Authentication failure"]);
}

/// A user Xvnc's `-PlainUsers` does not list is refused before PAM is asked.
#[test]
fn x509_plain_unknown_user() {
    let files = files();
    let args = [
        "--tls-ca",
        path(&files.server.cert),
        "--username",
        "somebody-else",
        "--password-file",
        path(&files.plain_password),
    ];
    let snap = snapshot(&x509().server.address(), &args);
    assert_failed_saying(&snap, &["Authentication failure"]);
}
