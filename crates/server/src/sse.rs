//! The subscriber's way out: from an accepted TCP connection to SSE bytes on its socket.
//!
//! A subscription request arrives on a connection that [`accept`] took from the listener. Its head
//! is read by [`accept`] with a small buffer and classified by [`head`]: a plain HTTP/1.1 `GET` of
//! the hub path takes the lean path, everything else (publishes, other routes, HTTP/2, requests
//! with bodies or upgrades) is handed to hyper with the bytes already read. Either way the request
//! is answered by the one axum router (CORS, metrics, authentication and every header stay in one
//! place); the subscribe handler ([`crate::subscribe`]) answers with a [`SubscriberStream`]: the
//! response [`body`] that yields the preamble, the replayed history, then live updates and
//! heartbeats, and that carries its subscriber's [`CutOff`] in the response.
//!
//! On the lean path the response is written by [`writer`]: the head encoded by [`head`], then the
//! body's frames as chunks, holding no buffer between writes and watching the stream's cut-off
//! while a write is blocked. That is what an idle subscriber costs: a socket, a small task and its
//! queue, instead of hyper's 16 KiB of per-connection buffers. After the response, the next request
//! of a kept-alive connection (a load balancer reusing its upstream connections) is read the same
//! way, so every subscription of the connection is lean.
//!
//! On the TLS listener (`--tls-cert`) a connection first completes its handshake; HTTP/2 (agreed
//! by ALPN) goes to hyper, HTTP/1.1 takes the same lean path over the TLS session ([`tls`]).
//!
//! SSE frames themselves are encoded once per update by the protocol crate
//! ([`quicksilver_protocol::sse`]) and shared by every subscriber: nothing here encodes events.
//!
//! # Layout
//! - [`accept`]: the listener, the accept loop, one task per connection, the TLS handshake, the
//!   head-read timeout and the hand-off to hyper.
//! - [`head`]: HTTP/1.1 request head classification, response head encoding and chunk framing (pure).
//! - [`writer`]: writes a streamed response to a socket, chunk by chunk, until it ends, the client
//!   leaves or the stream is cut off.
//! - [`tls`]: a TLS session as the lean path writes to and watches it.
//! - [`body`]: a subscriber's SSE response body ([`SubscriberStream`]).
//!
//! [`CutOff`]: quicksilver_fanout::CutOff

pub mod accept;
pub mod body;
pub mod head;
pub mod tls;
pub mod writer;

pub use body::{EndReason, SubscriberStream};
