//! Framed TCP: length-delimited frames (a 4-byte big-endian length, then the payload) that
//! carry postcard-encoded messages, a request/reply [`call`] over one connection, and a [`serve`]
//! loop that answers requests with a handler.
//!
//! Every frame is capped at `max_frame_bytes`. The cap is checked on the length header alone,
//! before any buffer is reserved for the payload (tokio-util's `LengthDelimitedCodec` checks
//! `max_frame_length` ahead of its `reserve`), so a peer cannot make us allocate by claiming a
//! large frame. A connection that sends an oversized frame, a truncated frame, or a frame that
//! does not decode as the expected message (or holds bytes after it) is closed with an error
//! logged; the server keeps serving every other connection.
//!
//! Every wait is bounded: connecting, each call (request out, reply in), an idle server-side
//! connection (which also bounds a peer that trickles a partial frame), the handler, and writing
//! a reply.

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::bytes::{Bytes, BytesMut};
use tokio_util::codec::length_delimited::LengthDelimitedCodecError;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// The default cap on one frame's payload: 64 MiB, eight times a full copy batch of 16 KiB rows.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 << 20;

/// How long the accept loop waits after a failed accept (for example, out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Why a framed exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    /// Connecting to the peer failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// The peer's address.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// Reading or writing the socket failed, or the stream ended inside a frame.
    #[error("connection i/o: {0}")]
    Io(#[source] io::Error),
    /// A received length header claims more than the cap; the payload was neither reserved
    /// nor read, and the connection is unusable.
    #[error("received frame header exceeds the maximum of {max_bytes} bytes")]
    OversizedFrame {
        /// The cap.
        max_bytes: usize,
    },
    /// A message to send encodes to more than the cap; nothing was sent.
    #[error("frame of {bytes} bytes exceeds the maximum of {max_bytes} bytes")]
    FrameTooLarge {
        /// The encoded size.
        bytes: usize,
        /// The cap.
        max_bytes: usize,
    },
    /// A message could not be encoded.
    #[error("message does not encode: {0}")]
    Encode(#[source] postcard::Error),
    /// A received frame does not decode as the expected message.
    #[error("frame does not decode: {0}")]
    Decode(#[source] postcard::Error),
    /// A received frame holds bytes after its message.
    #[error("frame holds {extra_bytes} bytes after its message")]
    TrailingBytes {
        /// How many bytes follow the message.
        extra_bytes: usize,
    },
    /// The peer closed the connection before replying.
    #[error("connection closed by the peer")]
    Closed,
    /// A wait passed its bound; the connection's state is unknown and it should be dropped.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// The bound.
        after: Duration,
    },
}

impl TcpError {
    /// Classifies an error of the frame codec or the socket under it.
    fn from_codec(error: io::Error, max_bytes: usize) -> Self {
        let oversized = error
            .get_ref()
            .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>());
        if oversized {
            Self::OversizedFrame { max_bytes }
        } else {
            Self::Io(error)
        }
    }
}

/// The frame codec: a 4-byte big-endian length header, payloads of at most `max_frame_bytes`.
pub fn codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(max_frame_bytes)
        .new_codec()
}

/// Encodes `message` with postcard into one frame payload of at most `max_frame_bytes`.
pub fn encode<T: Serialize>(message: &T, max_frame_bytes: usize) -> Result<Bytes, TcpError> {
    let payload = postcard::to_allocvec(message).map_err(TcpError::Encode)?;
    if payload.len() > max_frame_bytes {
        return Err(TcpError::FrameTooLarge {
            bytes: payload.len(),
            max_bytes: max_frame_bytes,
        });
    }
    Ok(Bytes::from(payload))
}

/// Decodes one frame payload as exactly one message (trailing bytes are an error).
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, TcpError> {
    let (message, rest) = postcard::take_from_bytes(payload).map_err(TcpError::Decode)?;
    if !rest.is_empty() {
        return Err(TcpError::TrailingBytes {
            extra_bytes: rest.len(),
        });
    }
    Ok(message)
}

/// The bounds of a client connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameOptions {
    /// The largest frame payload sent or accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Bound on establishing the connection.
    pub connect_timeout: Duration,
    /// Bound on one call: sending the request and receiving the whole reply.
    pub call_timeout: Duration,
}

impl Default for FrameOptions {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// One client connection that sends `Req` frames and receives `Resp` frames.
pub struct FramedConnection<Req, Resp> {
    framed: Framed<TcpStream, LengthDelimitedCodec>,
    peer: SocketAddr,
    options: FrameOptions,
    _messages: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> std::fmt::Debug for FramedConnection<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramedConnection")
            .field("peer", &self.peer)
            .field("options", &self.options)
            .finish()
    }
}

impl<Req: Serialize, Resp: DeserializeOwned> FramedConnection<Req, Resp> {
    /// Connects to `addr` within `options.connect_timeout`.
    pub async fn connect(addr: SocketAddr, options: FrameOptions) -> Result<Self, TcpError> {
        let bound = options.connect_timeout;
        let stream = tokio::time::timeout(bound, TcpStream::connect(addr))
            .await
            .map_err(|_| TcpError::Timeout {
                what: "connect",
                after: bound,
            })?
            .map_err(|source| TcpError::Connect { addr, source })?;
        Self::from_stream(stream, options)
    }

    /// Frames an established stream.
    pub fn from_stream(stream: TcpStream, options: FrameOptions) -> Result<Self, TcpError> {
        // Request/reply traffic: Nagle's algorithm with delayed acks would stall small frames.
        stream.set_nodelay(true).map_err(TcpError::Io)?;
        let peer = stream.peer_addr().map_err(TcpError::Io)?;
        Ok(Self {
            framed: Framed::new(stream, codec(options.max_frame_bytes)),
            peer,
            options,
            _messages: PhantomData,
        })
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The connection's bounds.
    pub fn options(&self) -> &FrameOptions {
        &self.options
    }

    async fn exchange(&mut self, frame: Bytes) -> Result<Resp, TcpError> {
        let max_bytes = self.options.max_frame_bytes;
        self.framed
            .send(frame)
            .await
            .map_err(|e| TcpError::from_codec(e, max_bytes))?;
        let reply = match self.framed.next().await {
            None => return Err(TcpError::Closed),
            Some(frame) => frame.map_err(|e| TcpError::from_codec(e, max_bytes))?,
        };
        decode(&reply)
    }
}

/// Sends `request` and waits for its reply, all within the connection's call timeout.
///
/// After an error other than [`TcpError::FrameTooLarge`] or [`TcpError::Encode`] (which send
/// nothing) the connection's state is unknown: drop it.
pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
    connection: &mut FramedConnection<Req, Resp>,
    request: &Req,
) -> Result<Resp, TcpError> {
    let frame = encode(request, connection.options.max_frame_bytes)?;
    let bound = connection.options.call_timeout;
    tokio::time::timeout(bound, connection.exchange(frame))
        .await
        .map_err(|_| TcpError::Timeout {
            what: "call",
            after: bound,
        })?
}

/// Binds a listener on `addr`; with the address it is bound to (the port the kernel picked for
/// port 0).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    Ok((listener, local_addr))
}

/// The bounds of a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// The largest frame payload accepted or sent, in bytes.
    pub max_frame_bytes: usize,
    /// A connection that completes no frame for this long is closed; this also bounds a peer
    /// that trickles a partial frame.
    pub idle_timeout: Duration,
    /// Bound on handling one request, and on writing its reply.
    pub request_timeout: Duration,
    /// Connections served at once; further ones wait in the listener's backlog.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(30),
            max_connections: 256,
        }
    }
}

/// Accepts connections on `listener` and answers each request frame with `handler`'s reply.
///
/// Runs until its task is aborted or dropped; that closes every connection it serves too, as
/// they live in its `JoinSet`. A bad frame (see the module doc) closes only its connection.
pub async fn serve<Req, Resp, H, Fut>(listener: TcpListener, options: ServeOptions, handler: H)
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    H: Fn(Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    assert!(
        options.max_connections >= 1,
        "a server serves at least one connection"
    );
    let permits = Arc::new(Semaphore::new(options.max_connections));
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections, so the set holds at most `max_connections` tasks.
        while connections.try_join_next().is_some() {}
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let handler = handler.clone();
        let options = options.clone();
        connections.spawn(async move {
            let _permit = permit;
            serve_connection(stream, peer, &options, handler).await;
        });
    }
}

/// Reads the next request frame; `None` when the connection should close (the reason is logged).
async fn next_request<Req: DeserializeOwned>(
    framed: &mut Framed<TcpStream, LengthDelimitedCodec>,
    peer: SocketAddr,
    options: &ServeOptions,
) -> Option<Req> {
    let frame: BytesMut = match tokio::time::timeout(options.idle_timeout, framed.next()).await {
        Err(_) => {
            tracing::info!(%peer, after = ?options.idle_timeout, "closing idle connection");
            return None;
        }
        // The peer closed the connection between frames.
        Ok(None) => return None,
        Ok(Some(Err(error))) => {
            let error = TcpError::from_codec(error, options.max_frame_bytes);
            tracing::error!(%peer, %error, "bad frame; closing the connection");
            return None;
        }
        Ok(Some(Ok(frame))) => frame,
    };
    match decode(&frame) {
        Ok(request) => Some(request),
        Err(error) => {
            tracing::error!(%peer, %error, frame_bytes = frame.len(), "bad frame; closing the connection");
            None
        }
    }
}

/// Serves one connection until the peer closes it, a frame is bad, or a bound passes.
async fn serve_connection<Req, Resp, H, Fut>(
    stream: TcpStream,
    peer: SocketAddr,
    options: &ServeOptions,
    handler: H,
) where
    Req: DeserializeOwned,
    Resp: Serialize,
    H: Fn(Req) -> Fut,
    Fut: Future<Output = Resp>,
{
    if let Err(error) = stream.set_nodelay(true) {
        tracing::warn!(%peer, %error, "could not disable Nagle's algorithm");
    }
    let mut framed = Framed::new(stream, codec(options.max_frame_bytes));
    // Each turn reads one frame within the idle bound, or the connection closes.
    loop {
        let Some(request) = next_request::<Req>(&mut framed, peer, options).await else {
            return;
        };
        let bound = options.request_timeout;
        let Ok(reply) = tokio::time::timeout(bound, handler(request)).await else {
            tracing::error!(%peer, after = ?bound, "request not handled in time; closing the connection");
            return;
        };
        let frame = match encode(&reply, options.max_frame_bytes) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::error!(%peer, %error, "reply not sent; closing the connection");
                return;
            }
        };
        match tokio::time::timeout(bound, framed.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%peer, %error, "reply not written; closing the connection");
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, after = ?bound, "reply not written in time; closing the connection");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::codec::Decoder;

    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn an_oversized_length_header_is_refused_before_any_payload_is_reserved() {
        let mut buffer = BytesMut::with_capacity(64);
        buffer.extend_from_slice(&u32::MAX.to_be_bytes());
        let capacity_before = buffer.capacity();
        let error = codec(MAX)
            .decode(&mut buffer)
            .expect_err("a header over the cap is an error");
        assert!(matches!(
            TcpError::from_codec(error, MAX),
            TcpError::OversizedFrame { max_bytes: MAX }
        ));
        assert_eq!(
            buffer.capacity(),
            capacity_before,
            "no room was reserved for the claimed payload"
        );
    }

    #[test]
    fn an_accepted_length_header_reserves_its_payload() {
        // The counterpart of the test above: it shows that capacity does reveal a reservation.
        let mut buffer = BytesMut::with_capacity(64);
        buffer.extend_from_slice(&(MAX as u32).to_be_bytes());
        let pending = codec(MAX).decode(&mut buffer).expect("a header at the cap");
        assert!(pending.is_none(), "the payload has not arrived");
        assert!(buffer.capacity() >= MAX);
    }

    #[test]
    fn a_message_round_trips_and_trailing_bytes_are_refused() {
        let message = (7u64, String::from("seven"), vec![1u8, 2, 3]);
        let frame = encode(&message, MAX).expect("encodes");
        let back: (u64, String, Vec<u8>) = decode(&frame).expect("decodes");
        assert_eq!(back, message);
        let mut longer = frame.to_vec();
        longer.push(0);
        let error = decode::<(u64, String, Vec<u8>)>(&longer).expect_err("one byte too many");
        assert!(matches!(error, TcpError::TrailingBytes { extra_bytes: 1 }));
    }

    #[test]
    fn a_message_over_the_cap_is_not_encoded() {
        let error = encode(&vec![0u8; 100], 50).expect_err("over the cap");
        assert!(matches!(
            error,
            TcpError::FrameTooLarge {
                bytes: 101,
                max_bytes: 50
            }
        ));
    }
}
