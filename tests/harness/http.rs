//! HTTP/1.1 framing over std sockets: a raw client for the tests, and the message reader the
//! recording upstream shares with it.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use crate::DEFAULT_HOST;

/// Upper bound of every socket operation, so that a proxy that never answers fails the test
/// instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// A client waits this long for `100 Continue` (curl waits 1 s, then sends anyway).
pub const CONTINUE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEAD_BYTES: usize = 64 * 1024;

pub type Headers = Vec<(String, String)>;

/// First value of a header, by case-insensitive name.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Every value of a header, by case-insensitive name.
pub fn header_all<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// A start line and its header fields.
#[derive(Debug, Clone)]
pub struct Head {
    pub start_line: String,
    pub headers: Headers,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Reads a start line and header fields, appending the bytes read to `raw`.
/// `Ok(None)` on end of stream before the first byte (a peer closing an idle connection).
pub fn read_head<R: BufRead>(reader: &mut R, raw: &mut Vec<u8>) -> io::Result<Option<Head>> {
    let start = raw.len();
    let mut lines: Vec<String> = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            if raw.len() == start {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&line);
        if raw.len() - start > MAX_HEAD_BYTES {
            return Err(invalid("header section too large"));
        }
        let line = trim_eol(&line);
        if line.is_empty() {
            // RFC 9112 §2.2: empty lines before the start line are ignored.
            if lines.is_empty() {
                continue;
            }
            break;
        }
        lines.push(String::from_utf8_lossy(line).into_owned());
    }
    let start_line = lines.remove(0);
    let headers = lines
        .iter()
        .map(|l| {
            let (name, value) = l
                .split_once(':')
                .ok_or_else(|| invalid(format!("header line without colon: {l:?}")))?;
            Ok((name.to_string(), value.trim().to_string()))
        })
        .collect::<io::Result<Headers>>()?;
    Ok(Some(Head {
        start_line,
        headers,
    }))
}

/// How a message body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(usize),
    Chunked,
    /// Until the peer closes the connection (responses only).
    Close,
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    header_all(headers, "transfer-encoding")
        .iter()
        .flat_map(|v| v.split(','))
        .any(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
}

fn content_length(headers: &[(String, String)]) -> io::Result<Option<usize>> {
    header(headers, "content-length")
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| invalid(format!("bad content-length {v:?}")))
        })
        .transpose()
}

pub fn request_framing(headers: &[(String, String)]) -> io::Result<Framing> {
    if is_chunked(headers) {
        return Ok(Framing::Chunked);
    }
    Ok(content_length(headers)?.map_or(Framing::Empty, Framing::Length))
}

pub fn response_framing(
    status: u16,
    head_request: bool,
    headers: &[(String, String)],
) -> io::Result<Framing> {
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Framing::Empty);
    }
    if is_chunked(headers) {
        return Ok(Framing::Chunked);
    }
    Ok(content_length(headers)?.map_or(Framing::Close, Framing::Length))
}

/// Reads a body framed as `framing`, appending the bytes read to `raw`; returns the payload.
pub fn read_body<R: BufRead>(
    reader: &mut R,
    framing: Framing,
    raw: &mut Vec<u8>,
) -> io::Result<Vec<u8>> {
    match framing {
        Framing::Empty => Ok(Vec::new()),
        Framing::Length(len) => {
            let mut body = vec![0; len];
            reader.read_exact(&mut body)?;
            raw.extend_from_slice(&body);
            Ok(body)
        }
        Framing::Close => {
            let mut body = Vec::new();
            reader.read_to_end(&mut body)?;
            raw.extend_from_slice(&body);
            Ok(body)
        }
        Framing::Chunked => read_chunked(reader, raw),
    }
}

/// The rest of one response (interim or final) whose head was just read into `raw`: the
/// status line checked, the body read per its framing.
pub fn read_response_rest<R: BufRead>(
    reader: &mut R,
    head: Head,
    mut raw: Vec<u8>,
    head_request: bool,
) -> io::Result<Response> {
    let status = head
        .start_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| head.start_line.starts_with("HTTP/1."))
        .ok_or_else(|| invalid(format!("bad status line {:?}", head.start_line)))?;
    let framing = response_framing(status, head_request, &head.headers)?;
    let body = read_body(reader, framing, &mut raw)?;
    Ok(Response {
        status,
        headers: head.headers,
        body,
        interim: Vec::new(),
        raw,
    })
}

fn read_line<R: BufRead>(reader: &mut R, raw: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    raw.extend_from_slice(&line);
    Ok(trim_eol(&line).to_vec())
}

fn read_chunked<R: BufRead>(reader: &mut R, raw: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader, raw)?;
        let line = String::from_utf8_lossy(&line);
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailer fields, up to the empty line.
            while !read_line(reader, raw)?.is_empty() {}
            return Ok(body);
        }
        let mut chunk = vec![0; size];
        reader.read_exact(&mut chunk)?;
        raw.extend_from_slice(&chunk);
        body.extend_from_slice(&chunk);
        if !read_line(reader, raw)?.is_empty() {
            return Err(invalid("chunk not followed by CRLF"));
        }
    }
}

/// A response as the client received it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    /// The payload (de-chunked).
    pub body: Vec<u8>,
    /// Statuses of the interim (1xx) responses that preceded this one.
    pub interim: Vec<u16>,
    /// Every byte of this response (interim ones excluded) as it came off the socket.
    pub raw: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_all(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.text()))
    }

    /// One line for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "status {} headers {:?} body {:?}",
            self.status,
            self.headers,
            self.text()
        )
    }
}

/// A client connection, for exchanges that must be driven step by step.
pub struct Connection {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Connection {
    pub fn open(addr: SocketAddr) -> Connection {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Connection { stream, reader }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("cannot send to the proxy: {e}"));
    }

    /// Reads one response, interim (1xx) or final, within `timeout`.
    pub fn read_one(&mut self, timeout: Duration) -> io::Result<Response> {
        self.stream.set_read_timeout(Some(timeout))?;
        let result = self.read_message(false);
        self.stream.set_read_timeout(Some(IO_TIMEOUT))?;
        result
    }

    /// Reads the final response, collecting the interim ones before it. Panics on I/O errors.
    pub fn read_response(&mut self) -> Response {
        self.try_read_response(false)
            .unwrap_or_else(|e| panic!("no complete response from the proxy: {e}"))
    }

    pub fn try_read_response(&mut self, head_request: bool) -> io::Result<Response> {
        let mut interim = Vec::new();
        loop {
            let mut response = self.read_message(head_request)?;
            if (100..200).contains(&response.status) && response.status != 101 {
                interim.push(response.status);
                continue;
            }
            response.interim = interim;
            return Ok(response);
        }
    }

    fn read_message(&mut self, head_request: bool) -> io::Result<Response> {
        let mut raw = Vec::new();
        let head = read_head(&mut self.reader, &mut raw)?
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        read_response_rest(&mut self.reader, head, raw, head_request)
    }

    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Sends `bytes` on a new connection and reads the final response.
///
/// The request is written from a second thread: a proxy may answer (413) and close before it
/// has read the whole body, and a client blocked writing it would then never see the answer.
pub fn exchange(addr: SocketAddr, bytes: &[u8], head_request: bool) -> Response {
    let mut conn = Connection::open(addr);
    let mut writer = conn.stream.try_clone().unwrap();
    let request = bytes.to_vec();
    let sender = std::thread::spawn(move || {
        // Write errors are expected when the proxy refuses the body; the response tells.
        let _ = writer.write_all(&request);
    });
    let response = conn.try_read_response(head_request);
    conn.shutdown();
    let _ = sender.join();
    response.unwrap_or_else(|e| panic!("no complete response from {addr}: {e}"))
}

/// A bounded GET that reports failures instead of panicking: readiness probes poll with it
/// while the proxy is still starting.
pub fn try_get(addr: SocketAddr, target: &str, timeout: Duration) -> io::Result<Response> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut conn = Connection {
        reader: BufReader::new(stream.try_clone()?),
        stream,
    };
    let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.stream.write_all(request.as_bytes())?;
    let response = conn.try_read_response(false);
    conn.shutdown();
    response
}

#[derive(Debug, Clone)]
enum Body {
    None,
    Fixed(Vec<u8>),
    Chunked(Vec<Vec<u8>>),
}

/// A request written byte by byte as the test wants it on the wire. `Host` defaults to
/// [`DEFAULT_HOST`]; `Content-Length` is added for a fixed body unless the test set one.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    target: String,
    headers: Headers,
    body: Body,
}

impl Request {
    pub fn new(method: &str, target: &str) -> Request {
        Request {
            method: method.to_string(),
            target: target.to_string(),
            headers: vec![("Host".to_string(), DEFAULT_HOST.to_string())],
            body: Body::None,
        }
    }

    pub fn get(target: &str) -> Request {
        Request::new("GET", target)
    }

    pub fn post(target: &str) -> Request {
        Request::new("POST", target)
    }

    /// Adds a header; `Host` replaces the default one.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        if name.eq_ignore_ascii_case("host") {
            self.headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case("host"));
        }
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = Body::Fixed(body.into());
        self
    }

    /// An `application/x-www-form-urlencoded` body, as Entra's auto-submitted form sends it.
    pub fn form(self, body: &str) -> Request {
        self.header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.as_bytes())
    }

    /// A `Transfer-Encoding: chunked` body made of these chunks.
    pub fn chunked(mut self, chunks: Vec<Vec<u8>>) -> Request {
        self.headers
            .push(("Transfer-Encoding".into(), "chunked".into()));
        self.body = Body::Chunked(chunks);
        self
    }

    /// Start line and header section, up to and including the empty line.
    pub fn head_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Body::Fixed(body) = &self.body {
            if header(&self.headers, "content-length").is_none() {
                out.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    /// The body as framed on the wire.
    pub fn body_bytes(&self) -> Vec<u8> {
        match &self.body {
            Body::None => Vec::new(),
            Body::Fixed(body) => body.clone(),
            Body::Chunked(chunks) => {
                let mut out = Vec::new();
                for chunk in chunks.iter().filter(|c| !c.is_empty()) {
                    out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
                out
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.head_bytes();
        out.extend_from_slice(&self.body_bytes());
        out
    }

    /// Sends the request on a new connection and reads the final response.
    pub fn send(&self, addr: SocketAddr) -> Response {
        exchange(addr, &self.to_bytes(), self.method == "HEAD")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_chunked_message_with_trailers() {
        let wire = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
                     3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let mut reader = &wire[..];
        let mut raw = Vec::new();
        let head = read_head(&mut reader, &mut raw).unwrap().unwrap();
        assert_eq!(head.start_line, "POST /x HTTP/1.1");
        let framing = request_framing(&head.headers).unwrap();
        assert_eq!(framing, Framing::Chunked);
        assert_eq!(read_body(&mut reader, framing, &mut raw).unwrap(), b"abcde");
        assert_eq!(reader, b"NEXT");
        assert_eq!(raw, wire[..wire.len() - 4]);
    }

    #[test]
    fn frames_a_request_body() {
        let request = Request::post("/t").form("a=1");
        let text = String::from_utf8(request.to_bytes()).unwrap();
        assert!(text.starts_with("POST /t HTTP/1.1\r\nHost: idp.example.test\r\n"));
        assert!(text.ends_with("Content-Length: 3\r\n\r\na=1"));
        let chunked = Request::post("/t").chunked(vec![b"ab".to_vec(), b"c".to_vec()]);
        assert_eq!(chunked.body_bytes(), b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n");
    }
}
