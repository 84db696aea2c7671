//! Deadlines of one server connection, enforced on its byte stream (the
//! plaintext, inside TLS): a request head must be complete within `head` of
//! the connection's start or of its first byte (slowloris), a keep-alive
//! connection waits at most `idle` for its next request, and a write that
//! makes no progress for `send` (a client that stopped reading its
//! response) ends the connection.
//!
//! hyper's own `header_read_timeout` starts when the previous response is
//! written, so it would also be the keep-alive idle time, and it cannot tell
//! an idle keep-alive connection from a slow head. The head's end is found
//! here from the bytes (an empty line after a non-empty one, CRLF or LF:
//! where hyper's parser ends a head too); whatever hyper then makes of the
//! head, it answers, and its answer starts the idle deadline.
//!
//! The same stream tells the connection's [`Activity`] what it does: bytes
//! read, written and flushed (when it is idle, to be evicted).

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

use crate::http::activity::Activity;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    pub head: Duration,
    pub idle: Duration,
    pub send: Duration,
}

/// Which deadline ended a connection: the error its IO returned carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    Head,
    Idle,
    Send,
}

impl std::fmt::Display for Expired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Expired::Head => "no complete request head in time",
            Expired::Idle => "idle for too long",
            Expired::Send => "the client read nothing of the response for too long",
        })
    }
}

impl std::error::Error for Expired {}

impl Expired {
    /// The deadline behind an error from a connection, if one was.
    pub fn of(err: &(dyn std::error::Error + 'static)) -> Option<Expired> {
        let mut next = Some(err);
        while let Some(e) = next {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                if let Some(expired) = io.get_ref().and_then(|inner| inner.downcast_ref::<Expired>()) {
                    return Some(*expired);
                }
            }
            if let Some(expired) = e.downcast_ref::<Expired>() {
                return Some(*expired);
            }
            next = e.source();
        }
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A head is awaited or being read. `line`: bytes other than CR seen on
    /// the current line; `content`: a non-empty line seen in this head.
    Head { line: bool, content: bool },
    /// The head is complete: the request is being answered, or the
    /// connection waits for the next one (`answered`: a response byte was written).
    Between { answered: bool },
}

pub struct Timed<T> {
    io: T,
    limits: Deadlines,
    phase: Phase,
    /// Reads fail with the phase's deadline once it passes.
    read_deadline: Pin<Box<Sleep>>,
    /// Armed while a write is pending.
    stalled: Option<Pin<Box<Sleep>>>,
    activity: Arc<Activity>,
}

impl<T> Timed<T> {
    /// Starts the head deadline now.
    pub fn new(io: T, limits: Deadlines, activity: Arc<Activity>) -> Timed<T> {
        Timed {
            io,
            limits,
            phase: Phase::Head { line: false, content: false },
            read_deadline: Box::pin(tokio::time::sleep(limits.head)),
            stalled: None,
            activity,
        }
    }

    fn on_read(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut phase = self.phase;
        if let Phase::Between { answered: true } = phase {
            // The next request begins: its head has `head` from its first byte.
            phase = Phase::Head { line: false, content: false };
            self.read_deadline.as_mut().reset(Instant::now() + self.limits.head);
        }
        // A request body (read before the answer) leaves the phase as it is.
        if let Phase::Head { mut line, mut content } = phase {
            for (i, &b) in bytes.iter().enumerate() {
                match b {
                    b'\n' if !line && content => {
                        phase = Phase::Between { answered: false };
                        self.read_deadline.as_mut().reset(Instant::now() + self.limits.idle);
                        // Bytes after the head are its body, or a pipelined request.
                        self.phase = phase;
                        return self.on_read(&bytes[i + 1..]);
                    }
                    b'\n' => line = false,
                    b'\r' => {}
                    _ => (line, content) = (true, true),
                }
            }
            phase = Phase::Head { line, content };
        }
        self.phase = phase;
    }

    fn on_written(&mut self, n: usize) {
        self.stalled = None;
        if n > 0 {
            self.activity.wrote();
            // An answer ends the head, also one hyper gave before the head's
            // end was seen here (an error response).
            self.phase = Phase::Between { answered: true };
            self.read_deadline.as_mut().reset(Instant::now() + self.limits.idle);
        }
    }

    fn expired_read(&self) -> Expired {
        match self.phase {
            Phase::Head { .. } => Expired::Head,
            Phase::Between { .. } => Expired::Idle,
        }
    }

    /// A pending write: fails once it has been pending for `send`.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let send = self.limits.send;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(send)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, Expired::Send))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Timed<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let bytes = &buf.filled()[before..];
                if !bytes.is_empty() {
                    this.activity.read();
                }
                this.on_read(bytes);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                ready!(this.read_deadline.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, this.expired_read())))
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Timed<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.on_written(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_stall(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                this.on_written(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_stall(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Ready(r) => {
                this.stalled = None;
                if r.is_ok() {
                    this.activity.flushed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.poll_stall(cx).map(Err),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_shutdown(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.poll_stall(cx).map(Err),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const LIMITS: Deadlines =
        Deadlines { head: Duration::from_secs(10), idle: Duration::from_secs(60), send: Duration::from_secs(30) };

    /// The server's end wrapped, the client's end bare; `cap` bytes of buffer each way.
    fn pair(cap: usize) -> (Timed<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (server, client) = tokio::io::duplex(cap);
        (Timed::new(server, LIMITS, Arc::default()), client)
    }

    /// Reads until an error; returns it and how long it took (paused time).
    async fn read_until_error(server: &mut Timed<tokio::io::DuplexStream>) -> (Expired, Duration) {
        let start = Instant::now();
        let mut buf = [0u8; 64];
        loop {
            match server.read(&mut buf).await {
                Ok(0) => panic!("EOF"),
                Ok(_) => {}
                Err(e) => return (Expired::of(&e).expect("a deadline"), start.elapsed()),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_has_the_head_deadline() {
        let (mut server, _client) = pair(1024);
        assert_eq!(read_until_error(&mut server).await, (Expired::Head, LIMITS.head));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_is_cut_at_the_head_deadline_from_its_first_byte() {
        let (mut server, mut client) = pair(1024);
        let trickle = tokio::spawn(async move {
            client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if client.write_all(b"X").await.is_err() {
                    break;
                }
            }
        });
        assert_eq!(read_until_error(&mut server).await, (Expired::Head, LIMITS.head));
        drop(server);
        trickle.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_waits_idle_then_a_new_head_gets_its_own_deadline() {
        let (mut server, mut client) = pair(1024);
        client.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(server.phase, Phase::Between { answered: false }, "{:?}", &buf[..n]);
        // The answer takes longer than the head deadline: not cut.
        tokio::time::sleep(LIMITS.head * 2).await;
        server.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        // Idle keep-alive, then the next head arrives late in the idle time.
        tokio::time::sleep(LIMITS.idle - Duration::from_secs(1)).await;
        client.write_all(b"GET /next").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 9);
        assert_eq!(server.phase, Phase::Head { line: true, content: true });
        assert_eq!(read_until_error(&mut server).await, (Expired::Head, LIMITS.head));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_is_closed_after_idle() {
        let (mut server, mut client) = pair(1024);
        client.write_all(b"GET / HTTP/1.1\n\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(server.read(&mut buf).await.unwrap(), 16);
        server.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
        assert_eq!(read_until_error(&mut server).await, (Expired::Idle, LIMITS.idle));
    }

    #[tokio::test(start_paused = true)]
    async fn empty_lines_alone_do_not_end_a_head() {
        let (mut server, mut client) = pair(1024);
        client.write_all(b"\r\n\r\n\n\n\r\n").await.unwrap();
        assert_eq!(read_until_error(&mut server).await, (Expired::Head, LIMITS.head));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_split_anywhere_is_found() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 0..head.len() {
            let (mut server, _client) = pair(1024);
            server.on_read(&head[..cut]);
            assert!(matches!(server.phase, Phase::Head { .. }), "cut at {cut}");
            server.on_read(&head[cut..]);
            assert_eq!(server.phase, Phase::Between { answered: false }, "cut at {cut}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_cut_after_send() {
        let (mut server, _client) = pair(64);
        server.on_read(b"GET / HTTP/1.1\r\n\r\n");
        let start = Instant::now();
        let big = vec![b'x'; 4096];
        let e = server.write_all(&big).await.unwrap_err();
        assert_eq!((Expired::of(&e), start.elapsed()), (Some(Expired::Send), LIMITS.send));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_steady_reader_is_not_cut() {
        let (mut server, mut client) = pair(64);
        server.on_read(b"GET / HTTP/1.1\r\n\r\n");
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 64];
            while got < 1024 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                got += client.read(&mut buf).await.unwrap();
            }
            got
        });
        server.write_all(&[b'x'; 1024]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 1024);
    }
}
