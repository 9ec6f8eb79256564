//! The operator's logs as a log shipper in a cluster reads them:
//! `KESTREL_LOG_FORMAT=json` gives one JSON object per line with the level,
//! the message and the event's fields at the top level; an unknown format
//! is reported and text is used. The real binary, started and stopped with
//! SIGTERM (it needs the embedding model: `make deps`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts `kestrel-operator` with `format`, waits for it to listen, stops
/// it with SIGTERM and returns its stderr lines and whether it exited 0.
fn run_operator(format: &str) -> (Vec<String>, bool) {
    let dir = std::env::temp_dir().join(format!("kestrel-logs-{}-{format}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut op = Command::new(env!("CARGO_BIN_EXE_kestrel-operator"))
        .args(["--listen", "127.0.0.1:0", "--no-mutual-tls"])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--tls-dir")
        .arg(dir.join("tls"))
        .env("KESTREL_LOG_FORMAT", format)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kestrel-operator");
    let stderr = op.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            lines.push(line);
        }
        lines
    });
    // listening: the pipeline is built and has logged its start
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the operator did not start listening within 120 s");
        if line.contains("\"listening\"") {
            break;
        }
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(op.id() as i32, libc::SIGTERM) };
    let ok = op.wait().unwrap().success();
    let lines = reader.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (lines, ok)
}

#[test]
fn json_logs_are_one_object_per_line_with_level_message_and_fields() {
    let (lines, ok) = run_operator("json");
    assert!(ok, "{lines:#?}");
    let logs: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("level").is_some())
        .collect();
    // the pipeline's start: how many stored alerts it took up
    let start = logs
        .iter()
        .find(|v| v["message"] == "open incidents taken up from the stored alerts")
        .unwrap_or_else(|| panic!("no start line in {lines:#?}"));
    assert_eq!(start["level"], "INFO");
    assert_eq!(start["stored"], 0);
    assert_eq!(start["restored"], 0);
    assert!(start["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert!(start["target"]
        .as_str()
        .is_some_and(|t| t.starts_with("kestrel_operator")));
    // nothing on stderr is a text log line
    for l in &lines {
        assert!(
            serde_json::from_str::<serde_json::Value>(l).is_ok(),
            "not JSON: {l}"
        );
    }
}

#[test]
fn an_unknown_log_format_is_reported_and_text_is_used() {
    let (lines, ok) = run_operator("yaml");
    assert!(ok, "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("WARN")
            && l.contains("KESTREL_LOG_FORMAT=\"yaml\" is neither `text` nor `json`")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("INFO") && l.contains("open incidents taken up")),
        "{lines:#?}"
    );
}
