//! A scripted HTTP/1.1 server on 127.0.0.1:0 for end-to-end tests: it records
//! each request body and answers with what the test's closure returns (an
//! OpenAI-compatible LLM, a webhook receiver).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A running fake server; it stops with the test process.
pub struct FakeHttp {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

impl FakeHttp {
    /// Serves `respond(path, body) -> (status, body)` on a new loopback port.
    pub fn start(
        respond: impl Fn(&str, &str) -> (u16, String) + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (reqs, respond) = (Arc::clone(&requests), Arc::new(respond));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (reqs, respond) = (Arc::clone(&reqs), Arc::clone(&respond));
                std::thread::spawn(move || {
                    let _ = serve(stream, &reqs, respond.as_ref());
                });
            }
        });
        Ok(FakeHttp { base_url, requests })
    }

    /// `(path, body)` of every request so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn serve(
    stream: TcpStream,
    reqs: &Mutex<Vec<(String, String)>>,
    respond: &(dyn Fn(&str, &str) -> (u16, String) + Send + Sync),
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        let body = String::from_utf8_lossy(&body).into_owned();
        if let Ok(mut r) = reqs.lock() {
            r.push((path.clone(), body.clone()));
        }
        let (status, out) = respond(&path, &body);
        write!(
            writer,
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{out}",
            out.len()
        )?;
        writer.flush()?;
    }
}

/// An OpenAI chat-completions answer whose message content is `content`.
pub fn chat_answer(content: &serde_json::Value) -> String {
    serde_json::json!({
        "id": "x", "object": "chat.completion", "model": "test",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content.to_string()}}]
    })
    .to_string()
}
