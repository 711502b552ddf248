//! kube-gw's own HTTP/1.1 client toward backends, for requests without a body (the
//! keep-alive GET/HEAD traffic that makes most of a gateway's requests).
//!
//! - Input: a request head (method, origin-form target, headers already rewritten by the
//!   proxy) and a backend connection ([`H1Conn`]: a fresh one, or one the client connection
//!   kept from an earlier request, `pool.rs`).
//! - Output: the backend's response, whose body ([`H1Body`]) reads straight from the backend
//!   socket in the client connection's own task: no connection task, no channel between
//!   the two, no second copy of the head into a request structure. hyper's client (with its
//!   task per connection) still carries requests with a body, where it sends and receives at
//!   once.
//! - Ownership: the body owns the connection while it streams; once the response ended on a
//!   message boundary and the backend allows it (`Connection`, HTTP/1.0), the body gives the
//!   connection back to the client connection's pool. A body dropped early (the client went
//!   away) closes it.
//!
//! Framing follows RFC 9112 6.3: no body for HEAD, 1xx, 204 and 304; chunked when it is the
//! final transfer coding; else Content-Length (differing values refused); else until the
//! backend closes. Interim 1xx responses are skipped. A response head over 64 KiB or with
//! more than [`MAX_HEADERS`] fields is refused (the proxy answers 502).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Response, StatusCode, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::pool::{BoxError, Local, Pooled};

/// Header fields a response head may have.
pub const MAX_HEADERS: usize = 100;
/// The largest response head read.
pub const MAX_HEAD: usize = 64 * 1024;
/// Bytes asked of the socket per read.
const READ: usize = 16 * 1024;

/// A backend connection spoken to by this module.
#[derive(Debug)]
pub struct H1Conn {
    io: TcpStream,
    /// Bytes read and not yet used.
    buf: BytesMut,
}

impl H1Conn {
    pub fn new(io: TcpStream) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
        }
    }
}

impl Pooled for H1Conn {
    /// An idle connection has nothing to say: if its socket became readable (the backend
    /// closed it, or sent bytes nobody asked for), it is not used again. This reads the
    /// readiness the runtime already has, without a system call.
    fn is_closed(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.io.poll_read_ready(&mut cx).is_ready()
    }
    fn is_ready(&self) -> bool {
        true
    }
}

/// Where a finished connection goes: the client connection's pool, for this endpoint.
#[derive(Clone, Debug)]
pub struct Home {
    pub pool: Arc<Mutex<Local<H1Conn>>>,
    pub endpoint: SocketAddr,
    pub proxied: bool,
}

impl Home {
    fn keep(&self, c: H1Conn) {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keep(self.endpoint, self.proxied, c);
    }
}

/// Why a round trip failed; `untouched` when the backend sent nothing at all (a reused
/// connection it had closed: the request may go again on a new one).
#[derive(Debug)]
pub struct Error {
    pub text: String,
    pub untouched: bool,
}

fn err(text: impl Into<String>, untouched: bool) -> Error {
    Error {
        text: text.into(),
        untouched,
    }
}

/// Sends the head of a bodiless request and reads the response head.
pub async fn round_trip(
    mut c: H1Conn,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    home: Home,
) -> Result<Response<H1Body>, Error> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (n, v) in headers {
        head.extend_from_slice(n.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(v.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    c.io.write_all(&head)
        .await
        .map_err(|e| err(format!("sending the request: {e}"), true))?;
    let (status, version, fields) = loop {
        if let Some(head) = final_head(&mut c.buf)? {
            break head;
        }
        if c.buf.len() > MAX_HEAD {
            return Err(err("response head over 64 KiB", false));
        }
        c.buf.reserve(READ);
        let untouched = c.buf.is_empty();
        let n = tokio::io::AsyncReadExt::read_buf(&mut c.io, &mut c.buf)
            .await
            .map_err(|e| err(format!("reading the response: {e}"), untouched))?;
        if n == 0 {
            return Err(err("the backend closed the connection", untouched));
        }
    };
    let framing = framing(method, status, &fields)?;
    let reuse = framing.delimited() && keeps_alive(version, &fields);
    let mut fields = fields;
    if fields.contains_key(hyper::header::TRANSFER_ENCODING) {
        // Transfer-Encoding decided the framing: a Content-Length beside it is not the
        // body's length (RFC 9112 6.3) and must not reach the client.
        fields.remove(hyper::header::CONTENT_LENGTH);
    }
    let mut resp = Response::new(H1Body {
        conn: None,
        framing: Framing::Empty,
        home: None,
    });
    // The backend's HTTP version concerns the backend connection only.
    *resp.status_mut() = status;
    *resp.headers_mut() = fields;
    if let Framing::Empty = framing {
        if reuse && c.buf.is_empty() {
            home.keep(c);
        }
        return Ok(resp);
    }
    // The head's Transfer-Encoding no longer applies once the body is decoded: the proxy
    // removes it with the other hop-by-hop fields.
    let body = resp.body_mut();
    body.conn = Some(c);
    body.framing = framing;
    body.home = reuse.then_some(home);
    Ok(resp)
}

type Head = (usize, StatusCode, Version, HeaderMap);

/// Consumes the response heads at the start of `buf` up to the final one (interim 1xx heads
/// are skipped) and returns it; `None` if more bytes are needed.
fn final_head(buf: &mut BytesMut) -> Result<Option<(StatusCode, Version, HeaderMap)>, Error> {
    loop {
        let Some((len, status, version, fields)) = parse_head(buf)? else {
            return Ok(None);
        };
        buf.advance(len);
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(err(
                "101 Switching Protocols to a request without Upgrade",
                false,
            ));
        }
        if !status.is_informational() {
            return Ok(Some((status, version, fields)));
        }
    }
}

/// The response head at the start of `buf`: its length and contents, or `None` if more
/// bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut fields);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(err(format!("malformed response head: {e}"), false)),
    };
    let status = r
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| err("malformed status code", false))?;
    let version = if r.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut map = HeaderMap::with_capacity(r.headers.len());
    for f in r.headers.iter() {
        let name = HeaderName::from_bytes(f.name.as_bytes())
            .map_err(|_| err(format!("malformed header name {:?}", f.name), false))?;
        let value = HeaderValue::from_bytes(f.value)
            .map_err(|_| err(format!("malformed value of {}", f.name), false))?;
        map.append(name, value);
    }
    Ok(Some((len, status, version, map)))
}

/// How the response body is delimited (RFC 9112 6.3).
fn framing(method: &Method, status: StatusCode, h: &HeaderMap) -> Result<Framing, Error> {
    if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    // Transfer-Encoding, when present, decides (and Content-Length is ignored).
    if h.contains_key(hyper::header::TRANSFER_ENCODING) {
        let last = h
            .get_all(hyper::header::TRANSFER_ENCODING)
            .iter()
            .map(|v| v.to_str().unwrap_or("?"))
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|s| !s.is_empty());
        return Ok(if last.is_some_and(|l| l.eq_ignore_ascii_case("chunked")) {
            Framing::Chunked(Chunked::Size)
        } else {
            Framing::Close
        });
    }
    let mut length: Option<u64> = None;
    for v in h.get_all(hyper::header::CONTENT_LENGTH) {
        for part in v.to_str().unwrap_or("x").split(',') {
            let n: u64 = part
                .trim()
                .parse()
                .map_err(|_| err("malformed Content-Length", false))?;
            if length.is_some_and(|l| l != n) {
                return Err(err("differing Content-Length values", false));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

/// Whether the backend lets the connection carry another request.
fn keeps_alive(version: Version, h: &HeaderMap) -> bool {
    let says = |token: &str| {
        h.get_all(hyper::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if version == Version::HTTP_10 {
        says("keep-alive")
    } else {
        !says("close")
    }
}

#[derive(Debug)]
enum Framing {
    Empty,
    /// Bytes of the body still to come.
    Length(u64),
    Chunked(Chunked),
    /// Until the backend closes.
    Close,
}

impl Framing {
    /// Ends where the message ends (the connection may carry another).
    fn delimited(&self) -> bool {
        !matches!(self, Framing::Close)
    }
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// At a chunk-size line.
    Size,
    /// In a chunk's data: bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    Done,
}

/// A size bigger than any sane chunk (and than u64 arithmetic needs).
const MAX_CHUNK_DIGITS: usize = 15;

/// A response body read from the backend socket as the client's side asks for it.
#[derive(Debug)]
pub struct H1Body {
    conn: Option<H1Conn>,
    framing: Framing,
    /// Where the connection goes at the end; `None`: closed at the end.
    home: Option<Home>,
}

impl H1Body {
    /// The body ended on its message boundary: the connection goes home (when allowed and
    /// nothing unasked for follows).
    fn finish(&mut self) {
        self.framing = Framing::Empty;
        if let (Some(c), Some(home)) = (self.conn.take(), self.home.take()) {
            if c.buf.is_empty() {
                home.keep(c);
            }
        }
    }

    /// Reads more from the backend into the buffer; `Ok(0)` at its end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let Some(c) = self.conn.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        c.buf.reserve(READ);
        tokio_util::io::poll_read_buf(Pin::new(&mut c.io), cx, &mut c.buf)
    }
}

/// What one step of the chunked decoder found.
#[derive(Debug)]
enum Step {
    /// Body bytes.
    Data(Bytes),
    /// The state moved; step again.
    Again,
    /// More bytes are needed.
    More,
    /// The body and its trailers are complete.
    Done,
    Bad(&'static str),
}

/// One step of the chunked decoder (RFC 9112 7.1) over the bytes buffered in `buf`.
fn chunked_step(state: &mut Chunked, buf: &mut BytesMut) -> Step {
    let line_end = |b: &BytesMut| b.windows(2).position(|w| w == b"\r\n");
    match *state {
        Chunked::Size => {
            let Some(end) = line_end(buf) else {
                return if buf.len() > 4096 {
                    Step::Bad("chunk-size line too long")
                } else {
                    Step::More
                };
            };
            let line = buf.split_to(end + 2);
            let digits = line[..end]
                .split(|b| *b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            if digits.is_empty() || digits.len() > MAX_CHUNK_DIGITS {
                return Step::Bad("malformed chunk size");
            }
            let Some(size) = std::str::from_utf8(digits)
                .ok()
                .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|d| u64::from_str_radix(d, 16).ok())
            else {
                return Step::Bad("malformed chunk size");
            };
            *state = if size == 0 {
                Chunked::Trailers
            } else {
                Chunked::Data(size)
            };
            Step::Again
        }
        Chunked::Data(left) => {
            if buf.is_empty() {
                return Step::More;
            }
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let data = buf.split_to(n).freeze();
            let left = left - n as u64;
            *state = if left == 0 {
                Chunked::DataEnd
            } else {
                Chunked::Data(left)
            };
            Step::Data(data)
        }
        Chunked::DataEnd => {
            if buf.len() < 2 {
                return Step::More;
            }
            if &buf[..2] != b"\r\n" {
                return Step::Bad("chunk data not followed by CRLF");
            }
            buf.advance(2);
            *state = Chunked::Size;
            Step::Again
        }
        Chunked::Trailers => {
            let Some(end) = line_end(buf) else {
                return if buf.len() > MAX_HEAD {
                    Step::Bad("trailers over 64 KiB")
                } else {
                    Step::More
                };
            };
            buf.advance(end + 2);
            if end == 0 {
                *state = Chunked::Done;
                return Step::Done;
            }
            Step::Again
        }
        Chunked::Done => Step::Done,
    }
}

/// Decodes one whole response held in `input` (the answer to `method`) as the client does:
/// status and body, or why it is refused. For the fuzz target and tests; the proxy decodes
/// as bytes arrive.
pub fn decode(input: &[u8], method: &Method) -> Result<(StatusCode, Vec<u8>), String> {
    let mut buf = BytesMut::from(input);
    let Some((status, _, fields)) = final_head(&mut buf).map_err(|e| e.text)? else {
        return Err("incomplete head".into());
    };
    let body = match framing(method, status, &fields).map_err(|e| e.text)? {
        Framing::Empty => Vec::new(),
        Framing::Length(n) => {
            if (buf.len() as u64) < n {
                return Err("the body is shorter than its Content-Length".into());
            }
            buf[..usize::try_from(n).map_err(|_| "too long")?].to_vec()
        }
        Framing::Close => buf.to_vec(),
        Framing::Chunked(mut state) => {
            let mut body = Vec::new();
            loop {
                match chunked_step(&mut state, &mut buf) {
                    Step::Data(d) => body.extend_from_slice(&d),
                    Step::Again => {}
                    Step::More => return Err("the chunked body is incomplete".into()),
                    Step::Done => break,
                    Step::Bad(e) => return Err(e.into()),
                }
            }
            body
        }
    };
    Ok((status, body))
}

impl hyper::body::Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match this.framing {
                Framing::Empty => return Poll::Ready(None),
                Framing::Length(left) => {
                    let c = this.conn.as_mut().ok_or("no connection")?;
                    if !c.buf.is_empty() {
                        let n = c.buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                        let data = c.buf.split_to(n).freeze();
                        let left = left - n as u64;
                        this.framing = Framing::Length(left);
                        if left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Close => {
                    let c = this.conn.as_mut().ok_or("no connection")?;
                    if !c.buf.is_empty() {
                        let data = c.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Chunked(ref mut state) => {
                    let c = this.conn.as_mut().ok_or("no connection")?;
                    match chunked_step(state, &mut c.buf) {
                        Step::Data(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        Step::Again => continue,
                        Step::Bad(e) => return Poll::Ready(Some(Err(e.into()))),
                        Step::Done => {
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Step::More => {}
                    }
                }
            }
            // More bytes are needed.
            match this.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Ok(0)) => {
                    if let Framing::Close = this.framing {
                        this.framing = Framing::Empty;
                        this.conn = None;
                        return Poll::Ready(None);
                    }
                    this.conn = None;
                    this.framing = Framing::Empty;
                    return Poll::Ready(Some(Err(
                        "the backend closed the connection mid-body".into()
                    )));
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Empty)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Empty => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;

    use super::super::pool::Shared;
    use super::*;

    /// A backend that reads one request head per item of `answers` and writes the answer
    /// in the given pieces (a pause between them, so they arrive in separate reads); then
    /// closes, or with `linger` waits for the client to close first (so that a busy machine
    /// cannot make a kept connection look closed by the backend). Returns its address and
    /// the request heads it read.
    async fn backend_with(
        answers: Vec<Vec<&'static [u8]>>,
        linger: bool,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap_or_else(|e| panic!("{e}"));
            let mut heads = Vec::new();
            for pieces in answers {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return heads;
                    }
                    head.push(b[0]);
                }
                heads.push(String::from_utf8_lossy(&head).to_string());
                for p in pieces {
                    s.write_all(p).await.unwrap_or_else(|e| panic!("{e}"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            if linger {
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest).await;
            }
            heads
        });
        (addr, task)
    }

    async fn backend(
        answers: Vec<Vec<&'static [u8]>>,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        backend_with(answers, false).await
    }

    struct Client {
        home: Home,
        /// The head of the last answer.
        last: Mutex<HeaderMap>,
    }

    impl Client {
        fn new(endpoint: SocketAddr) -> Self {
            let shared: Arc<Shared<H1Conn>> = Arc::new(Shared::default());
            Client {
                home: Home {
                    pool: Arc::new(Mutex::new(Local::new(shared))),
                    endpoint,
                    proxied: false,
                },
                last: Mutex::new(HeaderMap::new()),
            }
        }

        /// One request over the kept connection (or a new one): status, body, and whether
        /// the connection went back to the pool afterwards.
        async fn get(&self, method: Method) -> Result<(u16, Vec<u8>, bool), String> {
            let kept = self
                .home
                .pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(self.home.endpoint, false);
            let c = match kept {
                Some(c) => c,
                None => H1Conn::new(
                    TcpStream::connect(self.home.endpoint)
                        .await
                        .map_err(|e| e.to_string())?,
                ),
            };
            let mut h = HeaderMap::new();
            h.insert("host", HeaderValue::from_static("app.example"));
            let resp = round_trip(c, &method, "/p?q=1", &h, self.home.clone())
                .await
                .map_err(|e| e.text)?;
            let status = resp.status().as_u16();
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes()
                .to_vec();
            let back = self
                .home
                .pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(self.home.endpoint, false);
            let reused = back.is_some();
            if let Some(c) = back {
                self.home
                    .pool
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keep(self.home.endpoint, false, c);
            }
            Ok((status, body, reused))
        }
    }

    #[tokio::test]
    async fn content_length_chunked_and_bodiless_answers_share_one_connection() {
        let (addr, task) = backend_with(vec![
            vec![b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 5\r\n\r\nhel", b"lo"],
            vec![
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"3;ext=1\r\nabc\r\n",
                b"A\r\n0123456789\r",
                b"\n0\r\nX-Trailer: t\r\n\r\n",
            ],
            vec![b"HTTP/1.1 204 No Content\r\n\r\n"],
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"],
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"2\r\nok\r\n0\r\n\r\n",
            ],
        ], true)
        .await;
        let c = Client::new(addr);
        assert_eq!(c.get(Method::GET).await, Ok((200, b"hello".to_vec(), true)));
        assert_eq!(
            c.get(Method::GET).await,
            Ok((200, b"abc0123456789".to_vec(), true)),
            "chunked, after an interim 100, split across reads"
        );
        assert_eq!(c.get(Method::GET).await, Ok((204, Vec::new(), true)));
        assert_eq!(
            c.get(Method::HEAD).await,
            Ok((200, Vec::new(), true)),
            "HEAD: the Content-Length announces no body"
        );
        assert_eq!(c.get(Method::GET).await, Ok((200, Vec::new(), true)));
        assert_eq!(
            c.get(Method::GET).await,
            Ok((200, b"ok".to_vec(), true)),
            "Transfer-Encoding decides over Content-Length"
        );
        assert!(
            !c.last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(hyper::header::CONTENT_LENGTH),
            "and the Content-Length beside it is gone"
        );
        drop(c);
        let heads = task.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(heads.len(), 6, "six requests on one connection: {heads:?}");
        assert_eq!(heads[0], "GET /p?q=1 HTTP/1.1\r\nhost: app.example\r\n\r\n");
        assert!(heads[3].starts_with("HEAD /p?q=1 HTTP/1.1\r\n"));
    }

    #[tokio::test]
    async fn close_delimited_and_close_marked_answers_are_not_reused() {
        let (addr, task) = backend(vec![vec![b"HTTP/1.1 200 OK\r\n\r\nuntil", b" the end"]]).await;
        let c = Client::new(addr);
        assert_eq!(
            c.get(Method::GET).await,
            Ok((200, b"until the end".to_vec(), false))
        );
        task.await.unwrap_or_else(|e| panic!("{e}"));
        for answer in [
            &b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"[..],
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ] {
            let (addr, task) = backend(vec![vec![answer]]).await;
            let c = Client::new(addr);
            assert_eq!(c.get(Method::GET).await, Ok((200, b"ok".to_vec(), false)));
            task.await.unwrap_or_else(|e| panic!("{e}"));
        }
        // HTTP/1.0 with keep-alive asked for: reused (the control for the case above).
        let (addr, task) = backend_with(
            vec![vec![
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
            ]],
            true,
        )
        .await;
        let c = Client::new(addr);
        assert_eq!(c.get(Method::GET).await, Ok((200, b"ok".to_vec(), true)));
        drop(c);
        task.await.unwrap_or_else(|e| panic!("{e}"));
    }

    #[tokio::test]
    async fn bad_answers_are_errors_not_bodies() {
        for (answer, why) in [
            (
                &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"[..],
                "mid-body",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
                "differing",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "chunk size",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
                "CRLF",
            ),
            (b"garbage\r\n\r\n", "malformed"),
            (b"", "closed"),
        ] {
            let (addr, task) = backend(vec![vec![answer]]).await;
            let c = Client::new(addr);
            let got = c.get(Method::GET).await;
            let e = got.expect_err(why);
            assert!(e.contains(why), "{why}: {e}");
            task.await.unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn whole_answers_decode_as_the_client_reads_them() {
        let ok = |input: &[u8], method: Method| {
            decode(input, &method)
                .map(|(s, b)| (s.as_u16(), String::from_utf8_lossy(&b).into_owned()))
        };
        assert_eq!(
            ok(b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n3;a=b\r\nabc\r\n0\r\nT: 1\r\n\r\n", Method::GET),
            Ok((200, "abc".into()))
        );
        assert_eq!(
            ok(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                Method::HEAD
            ),
            Ok((200, String::new()))
        );
        assert_eq!(
            ok(b"HTTP/1.0 200 OK\r\n\r\nto the end", Method::GET),
            Ok((200, "to the end".into()))
        );
        // A sign or a space is not a hexadecimal digit (Rust's from_str_radix takes "+5").
        for bad in [&b"+5"[..], b"5 5", b"", b"ffffffffffffffff0"] {
            let mut input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            input.extend_from_slice(bad);
            input.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
            assert_eq!(
                ok(&input, Method::GET),
                Err("malformed chunk size".into()),
                "{bad:?}"
            );
        }
        assert_eq!(
            ok(
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
                Method::GET
            ),
            Err("the body is shorter than its Content-Length".into())
        );
    }

    #[tokio::test]
    async fn a_kept_connection_the_backend_closed_is_seen_as_closed() {
        let (addr, task) = backend(vec![vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ]])
        .await;
        let c = Client::new(addr);
        assert_eq!(c.get(Method::GET).await, Ok((200, b"ok".to_vec(), true)));
        let kept = c
            .home
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(addr, false);
        let kept = kept.unwrap_or_else(|| panic!("kept"));
        assert!(!kept.is_closed(), "open while the backend holds it");
        task.await.unwrap_or_else(|e| panic!("{e}")); // the backend closes
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(kept.is_closed(), "closed by the backend");
    }
}
