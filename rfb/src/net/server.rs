//! The server side of the tokio adapter: [`accept`] drives
//! [`ServerHandshake`] over a connection a listener accepted, wraps it in TLS
//! when VeNCrypt asks for it, and hands back the stream with the bytes already
//! read past ClientInit.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

use super::{AsyncStream, BoxStream};
use crate::handshake::vnc_auth::CHALLENGE_SIZE;
use crate::handshake::{
    ClientInit, HandshakeError, ProtocolVersion, Security, ServerConfig, ServerHandshake,
    ServerStep,
};

/// Everything [`accept`] needs.
#[derive(Debug, Clone)]
pub struct AcceptOptions {
    pub config: ServerConfig,
    /// The certificate and key for VeNCrypt's X509 sub-types (see
    /// [`tls::server_config`](super::tls::server_config)); required when the
    /// configuration offers one.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Limit for the whole handshake, TLS included: a client that stalls is
    /// dropped.
    pub timeout: Duration,
}

impl AcceptOptions {
    /// [`ServerConfig::check`], plus TLS being there when it is needed. Run it
    /// once at startup; [`accept`] runs it too.
    pub fn check(&self) -> Result<(), AcceptError> {
        self.config.check().map_err(AcceptError::Config)?;
        if self.tls.is_none() && self.config.needs_tls() {
            return Err(AcceptError::Config(
                "VeNCrypt X509 sub-types are offered but no TLS certificate is configured".into(),
            ));
        }
        Ok(())
    }
}

/// A client connection past its handshake.
pub struct ServerConnection {
    /// The connection, inside TLS when VeNCrypt set it up.
    pub stream: BoxStream,
    pub client_init: ClientInit,
    /// Bytes read past ClientInit: the start of the client's normal messages.
    pub leftover: Vec<u8>,
    /// The RFB version in use.
    pub version: ProtocolVersion,
    pub security: Security,
    /// The user VeNCrypt Plain authenticated.
    pub username: Option<String>,
}

impl std::fmt::Debug for ServerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConnection")
            .field("client_init", &self.client_init)
            .field("leftover", &self.leftover.len())
            .field("version", &self.version)
            .field("security", &self.security)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why a client could not be taken on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The options cannot work (see [`AcceptOptions::check`]).
    #[error("invalid server configuration: {0}")]
    Config(String),
    #[error("timed out after {after:?} in the RFB handshake (waiting for {stage})")]
    Timeout {
        after: Duration,
        stage: &'static str,
    },
    #[error("i/o error during the RFB handshake: {0}")]
    Io(#[source] io::Error),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The TLS handshake with the client failed.
    #[error("{0}")]
    Tls(String),
}

/// Runs the server handshake on a connection (TCP, a Unix socket, a test
/// pipe) within `opts.timeout`. A client that fails authentication or cannot be
/// offered anything gets its answer (the failed SecurityResult and reason, or
/// the refusal) before the connection is closed.
pub async fn accept<S: AsyncStream + 'static>(
    stream: S,
    opts: &AcceptOptions,
) -> Result<ServerConnection, AcceptError> {
    opts.check()?;
    let challenge = random_challenge()?;
    let mut stage = "ProtocolVersion";
    let work = run_handshake(Box::new(stream), opts, challenge, &mut stage);
    match tokio::time::timeout(opts.timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(AcceptError::Timeout {
            after: opts.timeout,
            stage,
        }),
    }
}

/// A fresh VNC authentication challenge from the operating system's CSPRNG
/// (through rustls's ring provider).
fn random_challenge() -> Result<[u8; CHALLENGE_SIZE], AcceptError> {
    let mut challenge = [0u8; CHALLENGE_SIZE];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut challenge)
        .map_err(|_| {
            AcceptError::Io(io::Error::other(
                "the system's random number generator failed",
            ))
        })?;
    Ok(challenge)
}

const READ_CHUNK: usize = 4096;

/// Drives [`ServerHandshake`] over `stream`, keeping `stage` current so a
/// timeout can say what it was waiting for.
async fn run_handshake(
    mut stream: BoxStream,
    opts: &AcceptOptions,
    challenge: [u8; CHALLENGE_SIZE],
    stage: &mut &'static str,
) -> Result<ServerConnection, AcceptError> {
    let mut hs = ServerHandshake::new(opts.config.clone(), challenge);
    // Bounded: the handshake never waits for more than Plain's 8 + 2 × 1 KiB
    // bytes, and reads only while it waits, so this holds at most that plus one
    // read.
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut chunk = [0u8; READ_CHUNK];
    let mut out = Vec::new();
    loop {
        *stage = hs.stage();
        out.clear();
        let step = hs.step(&buf, &mut out);
        let sent = send(&mut stream, &out).await;
        let step = match step {
            Ok(step) => step,
            Err(e) => {
                // The refusal or failed SecurityResult is on its way: close
                // properly (TLS close_notify, TCP FIN) so that it arrives.
                if sent.is_ok() {
                    let _ = stream.shutdown().await;
                }
                return Err(e.into());
            }
        };
        sent.map_err(|e| io_error(&hs, &buf, e))?;
        match step {
            ServerStep::Continue { consumed } => {
                buf.drain(..consumed);
                let n = stream
                    .read(&mut chunk)
                    .await
                    .map_err(|e| io_error(&hs, &buf, e))?;
                if n == 0 {
                    return Err(hs.closed(&buf).into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            ServerStep::StartTls { consumed } => {
                buf.drain(..consumed);
                if !buf.is_empty() {
                    return Err(HandshakeError::Protocol {
                        stage: "VeNCrypt sub-type choice",
                        offset: hs.offset(),
                        detail: format!("{} bytes arrived before the TLS handshake", buf.len()),
                    }
                    .into());
                }
                *stage = "the TLS handshake";
                // INVARIANT: check() made sure TLS is configured when a TLS
                // sub-type can be offered.
                let config = opts.tls.clone().ok_or_else(|| {
                    AcceptError::Config("TLS was needed but is not configured".into())
                })?;
                let tls = TlsAcceptor::from(config)
                    .accept(stream)
                    .await
                    .map_err(|e| {
                        AcceptError::Tls(format!("TLS handshake with the client failed: {e}"))
                    })?;
                stream = Box::new(tls);
            }
            ServerStep::Done {
                consumed,
                client_init,
            } => {
                buf.drain(..consumed);
                return Ok(ServerConnection {
                    stream,
                    client_init,
                    leftover: buf,
                    // INVARIANT: a finished handshake has negotiated both.
                    version: hs.version().unwrap_or(ProtocolVersion::V3_8),
                    security: hs.security().unwrap_or(Security::None),
                    username: hs.username().map(str::to_owned),
                });
            }
        }
    }
}

/// Errors that mean the client went away are reported as such, with the stage.
fn io_error(hs: &ServerHandshake, unconsumed: &[u8], e: io::Error) -> AcceptError {
    match e.kind() {
        // TLS streams report a close without close_notify as UnexpectedEof.
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted => hs.closed(unconsumed).into(),
        _ => AcceptError::Io(e),
    }
}

async fn send(stream: &mut BoxStream, bytes: &[u8]) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    stream.write_all(bytes).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::Command;

    use tokio::io::{AsyncRead, AsyncWrite};
    use tokio::net::TcpListener;

    use super::*;
    use crate::handshake::{ClientConfig, Password, ServerInit, ServerSecurity, VeNCryptSubtype};
    use crate::net::{connect, ClientConnection, ConnectError, ConnectOptions, TlsOptions};
    use crate::pixel::PixelFormat;

    fn server_init() -> ServerInit {
        ServerInit {
            width: 1280,
            height: 720,
            pixel_format: PixelFormat::RGB888,
            name: "loopback".into(),
        }
    }

    fn accept_options(security: Vec<ServerSecurity>, tls: Option<&TestCert>) -> AcceptOptions {
        AcceptOptions {
            config: ServerConfig::new(security, server_init()),
            tls: tls.map(|cert| cert.server_config()),
            timeout: Duration::from_secs(10),
        }
    }

    fn connect_options(
        username: Option<&str>,
        password: Option<&str>,
        ca: Option<&TestCert>,
    ) -> ConnectOptions {
        ConnectOptions {
            config: ClientConfig {
                allow_tls: true,
                username: username.map(Into::into),
                password: password.map(Password::from),
                ..ClientConfig::default()
            },
            tls: TlsOptions {
                ca_file: ca.map(|cert| cert.path("cert.pem")),
                ..TlsOptions::default()
            },
            timeout: Some(Duration::from_secs(10)),
        }
    }

    /// Our server adapter and our client adapter over loopback TCP.
    async fn pair(
        server: AcceptOptions,
        client: ConnectOptions,
    ) -> (
        Result<ServerConnection, AcceptError>,
        Result<ClientConnection, ConnectError>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.map_err(AcceptError::Io)?;
            accept(tcp, &server).await
        });
        let client = connect(&format!("127.0.0.1::{port}"), &client).await;
        (server.await.expect("server task"), client)
    }

    /// Both ends of a finished handshake can talk: a few bytes each way.
    async fn talk(server: &mut ServerConnection, client: &mut ClientConnection) {
        async fn send_and_receive<A: AsyncWrite + Unpin, B: AsyncRead + Unpin>(
            from: &mut A,
            to: &mut B,
            already: &[u8],
            message: &[u8],
        ) {
            from.write_all(message).await.expect("write");
            from.flush().await.expect("flush");
            let mut got = already.to_vec();
            let mut byte = [0u8];
            while got.len() < message.len() {
                to.read_exact(&mut byte).await.expect("read");
                got.push(byte[0]);
            }
            assert_eq!(got, message);
        }
        assert!(server.leftover.is_empty() && client.leftover.is_empty());
        send_and_receive(&mut server.stream, &mut client.stream, &[], b"from server").await;
        send_and_receive(&mut client.stream, &mut server.stream, &[], b"from client").await;
    }

    #[tokio::test]
    async fn loopback_none() {
        let (server, client) = pair(
            accept_options(vec![ServerSecurity::None], None),
            connect_options(None, None, None),
        )
        .await;
        let mut server = server.expect("server side");
        let mut client = client.expect("client side");
        assert_eq!(client.init, server_init());
        assert_eq!(client.version, (3, 8));
        assert_eq!(client.security, Security::None);
        assert_eq!(server.version, ProtocolVersion::V3_8);
        assert_eq!(server.security, Security::None);
        assert_eq!(server.client_init, ClientInit { shared: true });
        assert_eq!(server.username, None);
        talk(&mut server, &mut client).await;
    }

    #[tokio::test]
    async fn loopback_vnc_auth() {
        let security = || {
            vec![ServerSecurity::VncAuth {
                password: "s3cret".into(),
            }]
        };
        let (server, client) = pair(
            accept_options(security(), None),
            connect_options(None, Some("s3cret"), None),
        )
        .await;
        let mut server = server.expect("server side");
        let mut client = client.expect("client side");
        assert_eq!(server.security, Security::VncAuth);
        assert_eq!(client.security, Security::VncAuth);
        talk(&mut server, &mut client).await;

        let (server, client) = pair(
            accept_options(security(), None),
            connect_options(None, Some("guess"), None),
        )
        .await;
        let server_err = server.expect_err("wrong password");
        assert!(
            matches!(
                &server_err,
                AcceptError::Handshake(HandshakeError::AuthenticationFailed { reason: Some(r) })
                    if r == "wrong VNC authentication response"
            ),
            "{server_err:?}"
        );
        let client_err = client.expect_err("wrong password");
        assert_eq!(
            client_err.to_string(),
            "authentication failed: authentication failed"
        );
        assert!(matches!(
            client_err,
            ConnectError::Handshake(HandshakeError::AuthenticationFailed { reason: Some(_) })
        ));
    }

    fn vencrypt(subtypes: &[VeNCryptSubtype]) -> Vec<ServerSecurity> {
        vec![ServerSecurity::VeNCrypt {
            subtypes: subtypes.to_vec(),
            vnc_password: Some("vncpw".into()),
            users: vec![("alice".into(), "hunter2".into())],
        }]
    }

    #[tokio::test]
    async fn loopback_vencrypt_x509() {
        use VeNCryptSubtype::{X509None, X509Plain, X509Vnc};
        let cert = TestCert::new("x509");
        let table = [
            (X509None, None, None),
            (X509Vnc, None, Some("vncpw")),
            (X509Plain, Some("alice"), Some("hunter2")),
        ];
        for (subtype, username, password) in table {
            let (server, client) = pair(
                accept_options(vencrypt(&[X509Plain, X509Vnc, X509None]), Some(&cert)),
                connect_options(username, password, Some(&cert)),
            )
            .await;
            let mut server = server.expect("server side");
            let mut client = client.expect("client side");
            assert_eq!(server.security, Security::VeNCrypt(subtype));
            assert_eq!(client.security, Security::VeNCrypt(subtype));
            assert_eq!(server.username.as_deref(), username);
            assert_eq!(client.init, server_init());
            // The session continues inside TLS.
            talk(&mut server, &mut client).await;
        }
    }

    #[tokio::test]
    async fn loopback_vencrypt_wrong_credentials() {
        use VeNCryptSubtype::{X509Plain, X509Vnc};
        let cert = TestCert::new("x509-wrong");
        let table = [
            (
                X509Vnc,
                None,
                Some("vncpw!"),
                "wrong VNC authentication response",
            ),
            (
                X509Plain,
                Some("alice"),
                Some("hunter3"),
                "wrong username or password (user \"alice\")",
            ),
        ];
        for (subtype, username, password, detail) in table {
            let (server, client) = pair(
                accept_options(vencrypt(&[subtype]), Some(&cert)),
                connect_options(username, password, Some(&cert)),
            )
            .await;
            let server_err = server.expect_err("wrong credentials");
            assert_eq!(
                server_err.to_string(),
                format!("authentication failed: {detail}")
            );
            // The reason arrived through TLS before the connection closed.
            let client_err = client.expect_err("wrong credentials");
            assert_eq!(
                client_err.to_string(),
                "authentication failed: authentication failed"
            );
        }
    }

    #[tokio::test]
    async fn tls_sub_types_need_a_certificate() {
        let opts = accept_options(vencrypt(&[VeNCryptSubtype::X509Vnc]), None);
        let (_client, server_end) = tokio::io::duplex(64);
        let err = accept(server_end, &opts).await.expect_err("no certificate");
        assert_eq!(
            err.to_string(),
            "invalid server configuration: VeNCrypt X509 sub-types are offered but no TLS \
             certificate is configured"
        );
        let mut opts = accept_options(vec![], None);
        let (_client, server_end) = tokio::io::duplex(64);
        opts.config.security.clear();
        assert!(matches!(
            accept(server_end, &opts).await,
            Err(AcceptError::Config(_))
        ));
    }

    #[tokio::test]
    async fn silent_client_times_out() {
        let mut opts = accept_options(vec![ServerSecurity::None], None);
        opts.timeout = Duration::from_millis(100);
        let (mut client, server_end) = tokio::io::duplex(64);
        let err = accept(server_end, &opts).await.expect_err("no answer");
        assert!(
            matches!(
                err,
                AcceptError::Timeout {
                    stage: "ProtocolVersion",
                    ..
                }
            ),
            "{err:?}"
        );
        // The version went out before the wait.
        let mut version = [0u8; 12];
        client.read_exact(&mut version).await.expect("version");
        assert_eq!(&version, b"RFB 003.008\n");
    }

    #[tokio::test]
    async fn non_rfb_client_and_early_close() {
        let opts = accept_options(vec![ServerSecurity::None], None);
        let (mut client, server_end) = tokio::io::duplex(256);
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        let err = accept(server_end, &opts).await.expect_err("not RFB");
        assert_eq!(
            err.to_string(),
            "client did not speak RFB: it sent \"GET / HTTP/1\""
        );

        // Closes once the security types are in.
        let (mut client, server_end) = tokio::io::duplex(256);
        let client = tokio::spawn(async move {
            client.write_all(b"RFB 003.008\n").await?;
            let mut version_and_types = [0u8; 12 + 2];
            client.read_exact(&mut version_and_types).await?;
            io::Result::Ok(version_and_types)
        });
        let err = accept(server_end, &opts).await.expect_err("closed");
        let received = client.await.expect("client task").expect("client side");
        assert_eq!(&received[12..], [1, 1]);
        assert_eq!(
            err.to_string(),
            "client closed the connection during security type choice (after 12 bytes)"
        );
    }

    #[tokio::test]
    async fn refused_3_3_client_gets_the_reason() {
        let cert = TestCert::new("refuse");
        let opts = accept_options(vencrypt(&[VeNCryptSubtype::X509None]), Some(&cert));
        let (mut client, server_end) = tokio::io::duplex(1024);
        client.write_all(b"RFB 003.003\n").await.expect("write");
        let err = accept(server_end, &opts).await.expect_err("refused");
        assert!(matches!(
            err,
            AcceptError::Handshake(HandshakeError::RefusedClient { .. })
        ));
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("read");
        let reason = b"RFB 3.3 has only None and VNC authentication; this server offers \
                       VeNCrypt (19)";
        let expected = [
            &b"RFB 003.008\n"[..],
            &[0, 0, 0, 0],
            &(reason.len() as u32).to_be_bytes(),
            reason,
        ]
        .concat();
        assert_eq!(got, expected);
    }

    #[test]
    fn server_config_errors() {
        let cert = TestCert::new("config");
        tls_server_config(&cert.path("cert.pem"), &cert.path("key.pem")).expect("valid");
        let message = tls_server_config(&cert.path("missing.pem"), &cert.path("key.pem"))
            .expect_err("no file");
        assert!(
            message.starts_with(&format!(
                "cannot read certificate file {}: ",
                cert.path("missing.pem").display()
            )),
            "{message}"
        );
        std::fs::write(cert.path("empty.pem"), "no certificate here\n").expect("write");
        let message =
            tls_server_config(&cert.path("empty.pem"), &cert.path("key.pem")).expect_err("no PEM");
        assert!(message.ends_with("holds no PEM certificate"), "{message}");
        let message =
            tls_server_config(&cert.path("cert.pem"), &cert.path("cert.pem")).expect_err("no key");
        assert!(
            message.starts_with("cannot read private key file"),
            "{message}"
        );
        let message = tls_server_config(&cert.path("cert.pem"), &cert.path("other.key"))
            .expect_err("key of another certificate");
        assert!(message.contains("with key"), "{message}");
    }

    use crate::net::tls::server_config as tls_server_config;

    /// A self-signed certificate for localhost and 127.0.0.1 (`CA:FALSE`, used
    /// directly as the client's trust anchor) and an unrelated key; made with
    /// the openssl command line, removed on drop.
    struct TestCert {
        dir: PathBuf,
    }

    impl TestCert {
        fn new(tag: &str) -> TestCert {
            let dir =
                std::env::temp_dir().join(format!("rfb-net-server-{tag}-{}", std::process::id()));
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
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-addext",
                "extendedKeyUsage=serverAuth",
            ]);
            openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-out",
                "other.key",
            ]);
            TestCert { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.join(name)
        }

        fn server_config(&self) -> Arc<rustls::ServerConfig> {
            tls_server_config(&self.path("cert.pem"), &self.path("key.pem")).expect("config")
        }
    }

    impl Drop for TestCert {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
