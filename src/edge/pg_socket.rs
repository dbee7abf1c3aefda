//! The TCP socket Postgres connections run over, on Workers.
//!
//! `worker::Socket` takes and releases the stream's reader (or writer) lock around every
//! single read and write. A profile of `/v1/me` under load in workerd put those lock calls,
//! with the promise plumbing around them, at about a fifth of the isolate's time. A Postgres
//! connection is one reader and one writer for its whole life, so this adapter locks each
//! stream once when the socket opens and keeps the locks until it is dropped.

use std::io::{Error as IoError, Result as IoResult};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};
use worker::js_sys::{self, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::{ReadableStreamDefaultReader, WritableStreamDefaultWriter};
use worker::worker_sys;

/// One TCP connection with its streams locked for its whole life.
pub struct PgSocket {
    inner: worker_sys::Socket,
    reader: ReadableStreamDefaultReader,
    writer: WritableStreamDefaultWriter,
    /// The read in flight, if any.
    reading: Option<JsFuture>,
    /// Bytes received but not yet handed out, from `unread_from` on.
    unread: Vec<u8>,
    unread_from: usize,
    /// The write in flight and its length.
    writing: Option<(JsFuture, usize)>,
    closing: Option<JsFuture>,
    /// The writer is closed.
    closed: bool,
}

// Workers run one thread per isolate; tokio-postgres wants `Send` streams.
unsafe impl Send for PgSocket {}
unsafe impl Sync for PgSocket {}

fn js_error(e: JsValue) -> IoError {
    let text = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"));
    IoError::other(text)
}

impl PgSocket {
    /// Opens `host:port`; `starttls` leaves the socket able to upgrade when the server
    /// accepts Postgres' SSLRequest (Hyperdrive's sockets are opened this way).
    pub fn connect(host: &str, port: u16, starttls: bool) -> IoResult<Self> {
        let address = js_sys::Object::new();
        let options = js_sys::Object::new();
        let set = |o: &js_sys::Object, k: &str, v: JsValue| {
            Reflect::set(o, &JsValue::from_str(k), &v).map(|_| ())
        };
        set(&address, "hostname", JsValue::from_str(host)).map_err(js_error)?;
        set(&address, "port", JsValue::from(port)).map_err(js_error)?;
        let transport = if starttls { "starttls" } else { "off" };
        set(&options, "secureTransport", JsValue::from_str(transport)).map_err(js_error)?;
        set(&options, "allowHalfOpen", JsValue::FALSE).map_err(js_error)?;
        let inner = worker_sys::connect(address.into(), options.into()).map_err(js_error)?;
        Self::locked(inner)
    }

    fn locked(inner: worker_sys::Socket) -> IoResult<Self> {
        let reader = inner
            .readable()
            .map_err(js_error)?
            .get_reader()
            .dyn_into::<ReadableStreamDefaultReader>()
            .map_err(|_| IoError::other("the socket's reader is not a default reader"))?;
        let writer = inner
            .writable()
            .map_err(js_error)?
            .get_writer()
            .map_err(js_error)?;
        Ok(Self {
            inner,
            reader,
            writer,
            reading: None,
            unread: Vec::new(),
            unread_from: 0,
            writing: None,
            closing: None,
            closed: false,
        })
    }

    /// Upgrades to TLS (after the server accepted the SSLRequest).
    fn start_tls(self) -> IoResult<Self> {
        self.reader.release_lock();
        self.writer.release_lock();
        let upgraded = self.inner.start_tls().map_err(js_error)?;
        Self::locked(upgraded)
    }
}

impl AsyncRead for PgSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<IoResult<()>> {
        let this = &mut *self;
        // An empty chunk is not the end of the stream (that is `done`): read on.
        while this.unread_from >= this.unread.len() {
            let reader = &this.reader;
            let read = this
                .reading
                .get_or_insert_with(|| JsFuture::from(reader.read()));
            let result = match read.poll_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            };
            this.reading = None;
            let result = result.map_err(js_error)?;
            let done = Reflect::get(&result, &JsValue::from_str("done")).map_err(js_error)?;
            if done.is_truthy() {
                return Poll::Ready(Ok(())); // end of stream: nothing filled
            }
            let chunk = Reflect::get(&result, &JsValue::from_str("value")).map_err(js_error)?;
            let chunk: Uint8Array = chunk
                .dyn_into()
                .map_err(|_| IoError::other("a socket chunk that is not bytes"))?;
            this.unread = chunk.to_vec();
            this.unread_from = 0;
        }
        let rest = &this.unread[this.unread_from..];
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.unread_from += n;
        Poll::Ready(Ok(()))
    }
}

impl PgSocket {
    fn poll_write_done(&mut self, cx: &mut Context<'_>) -> Poll<IoResult<usize>> {
        let Some((write, len)) = self.writing.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        let len = *len;
        match write.poll_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                self.writing = None;
                Poll::Ready(r.map(|_| len).map_err(js_error))
            }
        }
    }
}

impl AsyncWrite for PgSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<IoResult<usize>> {
        let this = &mut *self;
        if this.writing.is_none() && buf == TERMINATE {
            // Not written: the close that follows tells Postgres and PgBouncer the same (outside
            // a transaction; inside one, both roll back either way). A write never stops short
            // (the whole buffer or nothing), so every write starts at a message boundary, and a
            // lone 'X' message is Terminate. A profile of `/v1/me` had this last write at about
            // half of all socket writes' time.
            return Poll::Ready(Ok(buf.len()));
        }
        if this.writing.is_none() {
            let chunk = Uint8Array::from(buf);
            let write = JsFuture::from(this.writer.write_with_chunk(&chunk));
            this.writing = Some((write, buf.len()));
        }
        // The write in flight is for the front of `buf`: after Pending, tokio-postgres' framed
        // writer calls again with its buffer still starting with those bytes (AsyncWrite
        // itself does not promise it; worker::Socket relies on the same).
        this.poll_write_done(cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<IoResult<()>> {
        self.poll_write_done(cx).map_ok(|_| ())
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<IoResult<()>> {
        ready!(self.poll_write_done(cx))?;
        let this = &mut *self;
        if !this.closed {
            let writer = &this.writer;
            let close = this
                .closing
                .get_or_insert_with(|| JsFuture::from(writer.close()));
            ready!(close.poll_unpin(cx)).map_err(js_error)?;
            this.closing = None;
            this.closed = true;
        }
        // The client always leaves a read waiting for the server. Its promise settles when the
        // server, told by the close, ends the stream; once the event is over the runtime drops
        // it unsettled instead. A `JsFuture` frees its two callbacks, and what they hold, only
        // when its promise settles, so a connection that ended here kept them for the
        // isolate's life: one per request, never collected (BENCHMARKS.md, "the leak"). So
        // shutdown lasts until the stream's end (or error), whatever still comes is dropped.
        while let Some(read) = this.reading.as_mut() {
            let result = ready!(read.poll_unpin(cx));
            this.reading = None;
            let Ok(result) = result else { break };
            let done = Reflect::get(&result, &JsValue::from_str("done")).map_err(js_error)?;
            if !done.is_truthy() {
                this.reading = Some(JsFuture::from(this.reader.read()));
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Postgres' Terminate message, which a closing client writes alone.
const TERMINATE: &[u8] = &[b'X', 0, 0, 0, 4];

/// TLS for Hyperdrive sockets: the runtime encrypts, the client only asks for the upgrade
/// (what `worker::postgres_tls::PassthroughTls` does for `worker::Socket`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StartTls;

impl TlsConnect<PgSocket> for StartTls {
    type Stream = PgSocket;
    type Error = IoError;
    type Future = futures_util::future::Ready<IoResult<PgSocket>>;

    fn connect(self, socket: PgSocket) -> Self::Future {
        futures_util::future::ready(socket.start_tls())
    }
}

impl TlsStream for PgSocket {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}
