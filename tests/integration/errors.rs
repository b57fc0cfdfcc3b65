//! How `kvmux snapshot` fails: non-zero status, one line on stderr saying why.

use std::io::Write;
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use kvmux_tests::free_port;

use crate::{assert_failed_saying, snapshot};

/// Accepts one connection on `listener` in the background, holds it open for `hold`
/// after writing `greeting`, and reports that it came.
fn accept_one(
    listener: TcpListener,
    greeting: &'static [u8],
    hold: Duration,
) -> mpsc::Receiver<()> {
    let (came, arrived) = mpsc::channel();
    thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = came.send(());
            let _ = stream.write_all(greeting);
            thread::sleep(hold);
            drop(stream);
        }
    });
    arrived
}

#[test]
fn connection_refused() {
    // Nobody listens on a free port.
    let port = free_port().unwrap();
    let snap = snapshot(&format!("127.0.0.1::{port}"), &["--timeout", "10"]);
    assert_failed_saying(&snap, &["refused"]);
}

#[test]
fn timeout_when_the_server_never_speaks() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let arrived = accept_one(listener, b"", Duration::from_secs(20));
    let snap = snapshot(&format!("127.0.0.1::{port}"), &["--timeout", "1"]);
    assert!(arrived.try_recv().is_ok(), "kvmux never connected");
    let stderr = snap.output.stderr_text().to_lowercase();
    assert!(
        stderr.contains("timeout") || stderr.contains("timed out"),
        "stderr does not say timeout: {stderr:?}"
    );
    assert_failed_saying(&snap, &[]);
    let elapsed = snap.output.elapsed;
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed <= Duration::from_millis(2500),
        "--timeout 1 took {elapsed:?}"
    );
}

#[test]
fn not_a_vnc_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let http = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    let _arrived = accept_one(listener, http, Duration::from_secs(5));
    let snap = snapshot(&format!("127.0.0.1::{port}"), &["--timeout", "10"]);
    assert_failed_saying(&snap, &[]);
}

/// `HOST:N` means port 5900 + N.
#[test]
fn display_number_means_port_5900_plus_n() {
    // Some N in 100..1000 whose port is free.
    let (n, listener) = (100..1000)
        .map(|n| (n, TcpListener::bind(("127.0.0.1", 5900 + n))))
        .find_map(|(n, bound)| bound.ok().map(|listener| (n, listener)))
        .expect("a free port in 6000..6900");
    let arrived = accept_one(listener, b"", Duration::from_secs(5));
    let snap = snapshot(&format!("127.0.0.1:{n}"), &["--timeout", "1"]);
    assert!(
        arrived.try_recv().is_ok(),
        "kvmux did not connect to port {}; stderr: {}",
        5900 + n,
        snap.output.stderr_text()
    );
}
