//! A tiny HTTP/1.1 file server on 127.0.0.1 that honours `Range: bytes=N-` and can cut a
//! transfer short once, for the fetch tests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// How the server answers one path.
#[derive(Clone)]
pub enum Route {
    /// Serve the bytes, honouring ranges.
    Bytes(Vec<u8>),
    /// The first request gets only `after` body bytes (full `Content-Length` announced) and the
    /// connection is closed; later requests are served normally.
    CutOnce { bytes: Vec<u8>, after: usize, cut: bool },
    /// Serve the bytes but ignore any `Range` header (always 200, whole body).
    NoRange(Vec<u8>),
}

/// One request the server saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Request path.
    pub path: String,
    /// Value of the `Range` header, if any.
    pub range: Option<String>,
}

/// A running server; lives until the test process exits.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestServer {
    /// Starts a server on an ephemeral port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (r, s) = (routes.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = handle(stream, &r, &s);
            }
        });
        Self { base, routes, seen }
    }

    /// Serves `route` at `/name`; returns the URL.
    pub fn serve(&self, name: &str, route: Route) -> String {
        self.routes.lock().unwrap().insert(format!("/{name}"), route);
        format!("{}/{name}", self.base)
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn handle(
    stream: TcpStream,
    routes: &Mutex<HashMap<String, Route>>,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    seen.lock().unwrap().push(Seen { path: path.clone(), range: range.clone() });
    let mut out = stream;
    let route = routes.lock().unwrap().get(&path).cloned();
    let (bytes, cut_after, honour_range) = match route {
        None => {
            let body = b"not found";
            write!(
                out,
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            out.write_all(body)?;
            return out.shutdown(Shutdown::Both);
        }
        Some(Route::Bytes(b)) => (b, None, true),
        Some(Route::NoRange(b)) => (b, None, false),
        Some(Route::CutOnce { bytes, after, cut }) => {
            if !cut {
                if let Some(Route::CutOnce { cut, .. }) = routes.lock().unwrap().get_mut(&path) {
                    *cut = true;
                }
                (bytes, Some(after), true)
            } else {
                (bytes, None, true)
            }
        }
    };
    let len = bytes.len();
    let start = range
        .as_deref()
        .filter(|_| honour_range)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let (status, from) = match start {
        Some(s) if s >= len => {
            write!(
                out,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return out.shutdown(Shutdown::Both);
        }
        Some(s) => ("206 Partial Content", s),
        None => ("200 OK", 0),
    };
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", len - from);
    if from > 0 || status.starts_with("206") {
        head.push_str(&format!("Content-Range: bytes {from}-{}/{len}\r\n", len - 1));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    let body = &bytes[from..];
    let body = match cut_after {
        Some(a) => &body[..a.min(body.len())],
        None => body,
    };
    out.write_all(body)?;
    out.flush()?;
    out.shutdown(Shutdown::Both)
}
