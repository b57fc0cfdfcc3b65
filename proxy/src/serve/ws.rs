//! RFB over WebSocket, as noVNC speaks it: binary frames carrying the RFB byte
//! stream, so noVNC connects without websockify.
//!
//! [`accept`] runs the HTTP upgrade (choosing the `binary` subprotocol when the client
//! offers it) and returns a byte stream the RFB server reads and writes like TCP.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::WebSocketStream;

/// Largest WebSocket message accepted from a client: RFB client messages are small,
/// the largest legal one is a clipboard transfer.
const MAX_MESSAGE: usize = 16 << 20;

/// Upgrades an HTTP connection to a WebSocket and wraps it as a byte stream.
pub async fn accept(tcp: TcpStream) -> io::Result<WsByteStream> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let ws = tokio_tungstenite::accept_hdr_async_with_config(tcp, choose_binary, Some(config))
        .await
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("websocket: {e}")))?;
    Ok(WsByteStream {
        ws,
        read: Bytes::new(),
        closed: false,
    })
}

/// Answers the upgrade with the `binary` subprotocol when the client offers it (noVNC
/// does; websockify's older `base64` is not supported).
#[allow(clippy::result_large_err)] // The signature is the library's callback type.
fn choose_binary(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let offers_binary = req
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == "binary");
    if offers_binary {
        resp.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("binary"));
    }
    Ok(resp)
}

/// A WebSocket as an ordered byte stream: binary (and text) messages in, binary
/// messages out.
pub struct WsByteStream {
    ws: WebSocketStream<TcpStream>,
    /// What is left of the last message received.
    read: Bytes,
    closed: bool,
}

fn to_io(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Io(e) => e,
        Error::ConnectionClosed | Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "websocket closed")
        }
        e => io::Error::new(io::ErrorKind::InvalidData, format!("websocket: {e}")),
    }
}

impl AsyncRead for WsByteStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.read.is_empty() {
                let n = self.read.len().min(buf.remaining());
                let chunk = self.read.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            if self.closed {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.read = data,
                Some(Ok(Message::Text(text))) => self.read = Bytes::from(text.as_str().to_owned()),
                // Pings are answered by the library on the next write or flush.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => self.closed = true,
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl AsyncWrite for WsByteStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(to_io)?;
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(to_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(to_io)
    }
}
