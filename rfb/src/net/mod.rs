//! The tokio adapter: TCP connections, the client and server handshakes driven
//! over a socket, and TLS for VeNCrypt.
//!
//! [`connect`] resolves a VNC address ([`parse_vnc_address`]), connects and runs
//! [`handshake`], which drives [`ClientHandshake`] until ServerInit and hands back
//! the (possibly TLS-wrapped) stream with the bytes already read past it.
//! [`accept`] does the same for the server side of a connection, until ClientInit.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::handshake::{ClientConfig, ClientHandshake, HandshakeError, Security, ServerInit, Step};

pub mod server;
pub mod tls;

pub use server::{accept, AcceptError, AcceptOptions, ServerConnection};
pub use tls::TlsOptions;

/// A byte stream the adapter can run RFB over: TCP, TLS, a Unix socket, a test pipe.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + ?Sized> AsyncStream for T {}

pub type BoxStream = Box<dyn AsyncStream>;

/// The port of VNC display 0; display N listens on 5900 + N.
pub const VNC_BASE_PORT: u16 = 5900;

/// Everything [`connect`] needs.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub config: ClientConfig,
    pub tls: TlsOptions,
    /// Limit for the TCP connection and the whole handshake together.
    pub timeout: Option<Duration>,
}

impl Default for ConnectOptions {
    /// Shared, TLS allowed (this adapter can do it), 10 seconds to connect.
    fn default() -> ConnectOptions {
        ConnectOptions {
            config: ClientConfig {
                allow_tls: true,
                ..ClientConfig::default()
            },
            tls: TlsOptions::default(),
            timeout: Some(Duration::from_secs(10)),
        }
    }
}

/// A connection past its handshake.
pub struct ClientConnection {
    /// The connection, inside TLS when VeNCrypt set it up.
    pub stream: BoxStream,
    pub init: ServerInit,
    /// Bytes read past the handshake: the start of the server's normal messages.
    pub leftover: Vec<u8>,
    /// The RFB version in use, e.g. `(3, 8)`.
    pub version: (u16, u16),
    pub security: Security,
}

impl std::fmt::Debug for ClientConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConnection")
            .field("init", &self.init)
            .field("leftover", &self.leftover.len())
            .field("version", &self.version)
            .field("security", &self.security)
            .finish_non_exhaustive()
    }
}

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error("invalid VNC address {addr:?}: {detail}")]
    Address { addr: String, detail: String },
    /// The TCP connection failed (refused, unreachable, name not resolved).
    #[error("connection to {addr} failed: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("timed out after {after:?} connecting to {addr} (waiting for {stage})")]
    Timeout {
        addr: String,
        after: Duration,
        stage: &'static str,
    },
    #[error("i/o error during the RFB handshake: {0}")]
    Io(#[source] io::Error),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// TLS could not be configured or its handshake failed; the message says which.
    #[error("{0}")]
    Tls(String),
}

/// Connects to a VNC address (see [`parse_vnc_address`]) and runs the handshake.
pub async fn connect(addr: &str, opts: &ConnectOptions) -> Result<ClientConnection, ConnectError> {
    let (host, port) = parse_vnc_address(addr).map_err(|detail| ConnectError::Address {
        addr: addr.to_owned(),
        detail,
    })?;
    let target = host_port(&host, port);
    let mut stage = "the TCP connection";
    let work = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|source| ConnectError::Connect {
                addr: target.clone(),
                source,
            })?;
        // RFB input events are small and latency-bound.
        tcp.set_nodelay(true).map_err(ConnectError::Io)?;
        run_handshake(Box::new(tcp), &host, opts, &mut stage).await
    };
    let result = match opts.timeout {
        Some(after) => tokio::time::timeout(after, work).await.ok(),
        None => Some(work.await),
    };
    result.unwrap_or_else(|| {
        Err(ConnectError::Timeout {
            addr: target.clone(),
            after: opts.timeout.unwrap_or_default(),
            stage,
        })
    })
}

/// Runs the client handshake over an established stream. `host` is what was
/// connected to: the default TLS server name, and the name in messages.
pub async fn handshake<S: AsyncStream + 'static>(
    stream: S,
    host: &str,
    opts: &ConnectOptions,
) -> Result<ClientConnection, ConnectError> {
    let mut stage = "ProtocolVersion";
    let work = run_handshake(Box::new(stream), host, opts, &mut stage);
    let result = match opts.timeout {
        Some(after) => tokio::time::timeout(after, work).await.ok(),
        None => Some(work.await),
    };
    result.unwrap_or_else(|| {
        Err(ConnectError::Timeout {
            addr: host.to_owned(),
            after: opts.timeout.unwrap_or_default(),
            stage,
        })
    })
}

/// Drives [`ClientHandshake`] over `stream`, keeping `stage` current so a
/// timeout can say what it was waiting for.
async fn run_handshake(
    mut stream: BoxStream,
    host: &str,
    opts: &ConnectOptions,
    stage: &mut &'static str,
) -> Result<ClientConnection, ConnectError> {
    let mut hs = ClientHandshake::new(opts.config.clone());
    // Bounded: the handshake refuses any string over 64 KiB before waiting for
    // it, so this never holds more than that plus one read.
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut chunk = [0u8; READ_CHUNK];
    let mut out = Vec::new();
    loop {
        *stage = hs.stage();
        out.clear();
        let step = hs.step(&buf, &mut out)?;
        if !out.is_empty() {
            stream.write_all(&out).await.map_err(ConnectError::Io)?;
            stream.flush().await.map_err(ConnectError::Io)?;
        }
        match step {
            Step::Continue { consumed } => {
                buf.drain(..consumed);
                let n = match stream.read(&mut chunk).await {
                    Ok(n) => n,
                    // TLS streams report a close without close_notify this way.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
                    Err(e) => return Err(ConnectError::Io(e)),
                };
                if n == 0 {
                    return Err(hs.closed(&buf).into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Step::StartTls { consumed } => {
                buf.drain(..consumed);
                if !buf.is_empty() {
                    return Err(HandshakeError::Protocol {
                        stage: "VeNCrypt TLS acknowledgement",
                        offset: hs.offset(),
                        detail: format!("{} bytes arrived before the TLS handshake", buf.len()),
                    }
                    .into());
                }
                *stage = "the TLS handshake";
                let config = opts.tls.client_config()?;
                let server_name = opts.tls.server_name(host)?;
                let shown = server_name.to_str().into_owned();
                let tls = TlsConnector::from(config)
                    .connect(server_name, stream)
                    .await
                    .map_err(|e| tls::handshake_failure(&shown, &e))?;
                stream = Box::new(tls);
            }
            Step::Done { consumed, init } => {
                buf.drain(..consumed);
                return Ok(ClientConnection {
                    stream,
                    init,
                    leftover: buf,
                    // INVARIANT: a finished handshake has negotiated both.
                    version: hs.version().unwrap_or_default(),
                    security: hs.security().unwrap_or(Security::None),
                });
            }
        }
    }
}

const READ_CHUNK: usize = 4096;

/// Parses a VNC address into host and TCP port, as VNC viewers take them:
///
/// - `host` → port 5900 (display 0)
/// - `host:N` → display N, port 5900 + N (for a port, say `host::PORT`)
/// - `host::PORT` → that port
/// - IPv6 addresses in brackets: `[::1]`, `[::1]:1`, `[::1]::5900`; a bare IPv6
///   address without port (`::1`) is accepted as is
/// - an empty host (`:1`) means `localhost`
pub fn parse_vnc_address(s: &str) -> Result<(String, u16), String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty address".into());
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok((s.to_owned(), VNC_BASE_PORT));
    }
    let (host, rest) = match s.strip_prefix('[') {
        Some(inner) => {
            let end = inner
                .find(']')
                .ok_or("missing ']' after the IPv6 address")?;
            (&inner[..end], &inner[end + 1..])
        }
        None => match s.find(':') {
            Some(colon) => (&s[..colon], &s[colon..]),
            None => (s, ""),
        },
    };
    let host = if host.is_empty() { "localhost" } else { host };
    let number = |digits: &str, what: &str| {
        digits
            .parse::<u16>()
            .map_err(|_| format!("invalid {what} {digits:?}"))
    };
    let port = if rest.is_empty() {
        VNC_BASE_PORT
    } else if let Some(port) = rest.strip_prefix("::") {
        number(port, "port")?
    } else if let Some(display) = rest.strip_prefix(':') {
        if display.contains(':') {
            return Err("IPv6 addresses with a port need brackets: [::1]::5900".into());
        }
        let n = number(display, "display")?;
        VNC_BASE_PORT
            .checked_add(n)
            .ok_or_else(|| format!("display {n} is past the last port (5900 + {n} > 65535)"))?
    } else {
        return Err(format!("unexpected {rest:?} after the host"));
    };
    Ok((host.to_owned(), port))
}

/// `host:port`, with IPv6 addresses in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::net::TcpListener;

    use super::*;
    use crate::handshake::{Password, VeNCryptSubtype};
    use crate::pixel::PixelFormat;

    #[test]
    fn vnc_addresses() {
        let table: [(&str, Option<(&str, u16)>); 18] = [
            ("localhost:1", Some(("localhost", 5901))),
            ("localhost", Some(("localhost", 5900))),
            ("host:0", Some(("host", 5900))),
            ("host:99", Some(("host", 5999))),
            ("host:100", Some(("host", 6000))),
            ("host:59635", Some(("host", 65535))),
            ("host:59636", None),
            ("127.0.0.1::5951", Some(("127.0.0.1", 5951))),
            ("[::1]::5900", Some(("::1", 5900))),
            ("[::1]:2", Some(("::1", 5902))),
            ("[fe80::1]", Some(("fe80::1", 5900))),
            ("::1", Some(("::1", 5900))),
            (":3", Some(("localhost", 5903))),
            ("host::70000", None),
            ("host:x", None),
            ("[::1", None),
            ("::1::5900", None),
            ("", None),
        ];
        for (input, expected) in table {
            let got = parse_vnc_address(input);
            match expected {
                Some((host, port)) => assert_eq!(got, Ok((host.to_owned(), port)), "{input}"),
                None => assert!(got.is_err(), "{input}: {got:?}"),
            }
        }
        assert_eq!(host_port("::1", 5900), "[::1]:5900");
    }

    /// ServerInit for 800x600 RGB888 "kvm test", written out by hand.
    const SERVER_INIT: [u8; 32] = [
        0x03, 0x20, 0x02, 0x58, // 800 x 600
        32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0, // RGB888
        0, 0, 0, 8, b'k', b'v', b'm', b' ', b't', b'e', b's', b't',
    ];

    fn expected_init() -> ServerInit {
        ServerInit {
            width: 800,
            height: 600,
            pixel_format: PixelFormat::RGB888,
            name: "kvm test".into(),
        }
    }

    /// Challenge 00 … 0f and the response for "password", computed with
    /// `openssl enc -des-ecb` (see `handshake::vnc_auth`'s tests).
    const CHALLENGE: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    const RESPONSE: [u8; 16] = [
        0xb8, 0x66, 0x92, 0x41, 0x25, 0xc8, 0xee, 0xbb, 0x9d, 0xeb, 0xc1, 0xdb, 0x61, 0xc5, 0x38,
        0xe2,
    ];

    async fn expect<S: AsyncRead + Unpin>(stream: &mut S, expected: &[u8]) -> io::Result<()> {
        let mut got = vec![0u8; expected.len()];
        stream.read_exact(&mut got).await?;
        if got != expected {
            return Err(io::Error::other(format!(
                "client sent {got:02x?}, expected {expected:02x?}"
            )));
        }
        Ok(())
    }

    fn options(timeout_ms: u64) -> ConnectOptions {
        ConnectOptions {
            timeout: Some(Duration::from_millis(timeout_ms)),
            ..ConnectOptions::default()
        }
    }

    #[tokio::test]
    async fn loopback_none() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await?;
            s.write_all(b"RFB 003.008\n").await?;
            expect(&mut s, b"RFB 003.008\n").await?;
            s.write_all(&[1, 1]).await?;
            expect(&mut s, &[1]).await?;
            s.write_all(&[0, 0, 0, 0]).await?;
            expect(&mut s, &[1]).await?; // ClientInit, shared
                                         // ServerInit and a Bell right behind it.
            s.write_all(&[&SERVER_INIT[..], &[2]].concat()).await?;
            s.flush().await?;
            io::Result::Ok(s)
        });
        let addr = format!("127.0.0.1::{port}");
        let mut conn = connect(&addr, &options(5000)).await.expect("connects");
        assert_eq!(conn.init, expected_init());
        assert_eq!(conn.version, (3, 8));
        assert_eq!(conn.security, Security::None);
        let mut after = conn.leftover.clone();
        if after.is_empty() {
            let mut byte = [0u8];
            conn.stream.read_exact(&mut byte).await.expect("bell");
            after.push(byte[0]);
        }
        assert_eq!(after, [2]);
        server.await.expect("server task").expect("server side");
    }

    #[tokio::test]
    async fn refused_connection_is_clear() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let err = connect(&format!("127.0.0.1::{port}"), &options(5000))
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, ConnectError::Connect { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("connection to 127.0.0.1:{port} failed: ")),
            "{message}"
        );
        assert!(message.to_lowercase().contains("refused"), "{message}");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(s);
            io::Result::Ok(())
        });
        let err = connect(&format!("127.0.0.1::{port}"), &options(200))
            .await
            .expect_err("no bytes");
        assert!(
            matches!(
                err,
                ConnectError::Timeout {
                    stage: "ProtocolVersion",
                    ..
                }
            ),
            "{err:?}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn closed_mid_handshake() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await?;
            s.write_all(b"RFB 003.008\n").await?;
            expect(&mut s, b"RFB 003.008\n").await?;
            s.write_all(&[2, 1]).await?; // promises two types, sends one, closes
            io::Result::Ok(())
        });
        let err = connect(&format!("127.0.0.1::{port}"), &options(5000))
            .await
            .expect_err("closed");
        assert_eq!(
            err.to_string(),
            "server closed the connection during security types (after 14 bytes)"
        );
    }

    /// A CA, a server certificate it signed for localhost and 127.0.0.1, and an
    /// unrelated CA; made with the openssl command line, removed on drop.
    struct TestPki {
        dir: PathBuf,
    }

    impl TestPki {
        fn new(tag: &str) -> TestPki {
            let dir = std::env::temp_dir().join(format!("rfb-net-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let openssl = |args: &[&str]| {
                let status = Command::new("openssl")
                    .args(args)
                    .current_dir(&dir)
                    .stderr(std::process::Stdio::null())
                    .status()
                    .expect("the openssl command runs");
                assert!(status.success(), "openssl {args:?}");
            };
            let ec = [
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ];
            for ca in ["ca", "other-ca"] {
                let (key, pem, subj) = (
                    format!("{ca}.key"),
                    format!("{ca}.pem"),
                    format!("/CN=rfb test {ca}"),
                );
                let mut args = vec!["req", "-x509"];
                args.extend(ec);
                args.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
                openssl(&args);
            }
            let mut args = vec!["req"];
            args.extend(ec);
            args.extend([
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ]);
            openssl(&args);
            std::fs::write(
                dir.join("server.ext"),
                "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
                 extendedKeyUsage=serverAuth\n",
            )
            .expect("extensions file");
            openssl(&[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                "server.pem",
                "-extfile",
                "server.ext",
            ]);
            TestPki { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.join(name)
        }

        fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(self.path("server.pem"))
                    .expect("server.pem")
                    .collect::<Result<_, _>>()
                    .expect("certificates");
            let key = PrivateKeyDer::from_pem_file(self.path("server.key")).expect("server.key");
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server certificate");
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        }
    }

    impl Drop for TestPki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A VeNCrypt server offering one X509 sub-type: negotiation in clear, then
    /// TLS, then the inner authentication (VNC authentication for X509Vnc).
    async fn vencrypt_server(
        listener: TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        subtype: u32,
    ) -> io::Result<()> {
        let (mut s, _) = listener.accept().await?;
        s.write_all(b"RFB 003.008\n").await?;
        expect(&mut s, b"RFB 003.008\n").await?;
        s.write_all(&[2, 19, 1]).await?;
        expect(&mut s, &[19]).await?;
        s.write_all(&[0, 2]).await?;
        expect(&mut s, &[0, 2]).await?;
        s.write_all(&[0]).await?;
        s.write_all(&[&[1u8][..], &subtype.to_be_bytes()].concat())
            .await?;
        expect(&mut s, &subtype.to_be_bytes()).await?;
        s.write_all(&[1]).await?;
        let mut s = acceptor.accept(s).await?;
        if subtype == u32::from(VeNCryptSubtype::X509Vnc) {
            s.write_all(&CHALLENGE).await?;
            s.flush().await?;
            expect(&mut s, &RESPONSE).await?;
        }
        s.write_all(&[0, 0, 0, 0]).await?;
        s.flush().await?;
        expect(&mut s, &[1]).await?;
        s.write_all(&SERVER_INIT).await?;
        s.flush().await?;
        expect(&mut s, b"after").await?;
        s.shutdown().await?;
        Ok(())
    }

    async fn tls_exchange(
        pki: &TestPki,
        subtype: VeNCryptSubtype,
        opts: ConnectOptions,
    ) -> (Result<ClientConnection, ConnectError>, io::Result<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(vencrypt_server(
            listener,
            pki.acceptor(),
            u32::from(subtype),
        ));
        let mut result = connect(&format!("127.0.0.1::{port}"), &opts).await;
        if let Ok(conn) = &mut result {
            // The session continues inside TLS.
            conn.stream.write_all(b"after").await.expect("write");
            conn.stream.flush().await.expect("flush");
        }
        let server_result = server.await.expect("server task");
        (result, server_result)
    }

    fn tls_options(ca_file: Option<&Path>, password: Option<&str>) -> ConnectOptions {
        let mut opts = options(10_000);
        opts.tls.ca_file = ca_file.map(Path::to_path_buf);
        opts.config.password = password.map(Password::from);
        opts
    }

    #[tokio::test]
    async fn tls_x509_none_and_vnc_with_ca_file() {
        let pki = TestPki::new("ca");
        let ca = pki.path("ca.pem");
        for (subtype, password) in [
            (VeNCryptSubtype::X509None, None),
            (VeNCryptSubtype::X509Vnc, Some("password")),
        ] {
            let (client, server) =
                tls_exchange(&pki, subtype, tls_options(Some(&ca), password)).await;
            let conn = client.expect("TLS handshake succeeds");
            server.expect("server side");
            assert_eq!(conn.init, expected_init());
            assert_eq!(conn.security, Security::VeNCrypt(subtype));
            assert!(conn.security.uses_tls());
        }
        // The certificate names localhost too.
        let mut opts = tls_options(Some(&ca), None);
        opts.tls.server_name = Some("localhost".into());
        let (client, _) = tls_exchange(&pki, VeNCryptSubtype::X509None, opts).await;
        client.expect("verified as localhost");
    }

    #[tokio::test]
    async fn tls_wrong_ca_fails_clearly() {
        let pki = TestPki::new("wrong-ca");
        let opts = tls_options(Some(&pki.path("other-ca.pem")), None);
        let (client, server) = tls_exchange(&pki, VeNCryptSubtype::X509None, opts).await;
        let err = client.expect_err("unknown issuer");
        assert!(server.is_err());
        let message = err.to_string();
        assert!(matches!(err, ConnectError::Tls(_)), "{err:?}");
        assert!(
            message.starts_with("TLS handshake with 127.0.0.1 failed: invalid peer certificate"),
            "{message}"
        );
        assert!(message.contains("UnknownIssuer"), "{message}");

        // A name the certificate does not carry.
        let mut opts = tls_options(Some(&pki.path("ca.pem")), None);
        opts.tls.server_name = Some("other.example".into());
        let (client, _) = tls_exchange(&pki, VeNCryptSubtype::X509None, opts).await;
        let message = client.expect_err("wrong name").to_string();
        assert!(message.contains("set the TLS server name"), "{message}");

        // Explicitly skipping verification works with any certificate.
        let mut opts = tls_options(None, Some("password"));
        opts.tls.insecure_skip_verify = true;
        let (client, server) = tls_exchange(&pki, VeNCryptSubtype::X509Vnc, opts).await;
        client.expect("unverified TLS");
        server.expect("server side");
    }

    #[test]
    fn unreadable_ca_file() {
        let tls = TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        let message = tls.client_config().expect_err("no file").to_string();
        assert!(
            message.starts_with("cannot read CA file /nonexistent/ca.pem: "),
            "{message}"
        );
        let empty = std::env::temp_dir().join(format!("rfb-net-empty-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let tls = TlsOptions {
            ca_file: Some(empty.clone()),
            ..TlsOptions::default()
        };
        let message = tls.client_config().expect_err("no PEM").to_string();
        let _ = std::fs::remove_file(&empty);
        assert!(message.ends_with("holds no PEM certificate"), "{message}");
    }
}
