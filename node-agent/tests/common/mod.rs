//! Shared helpers for the privileged capture tests.
#![allow(dead_code)]

use kestrel_agent::capture::{self, CaptureConfig, CaptureStats};
use kestrel_events::Event;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// BPF programs and runc containers are global; run one capture at a time.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub struct Running {
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<Event>>>,
    handle: JoinHandle<Result<CaptureStats, String>>,
}

pub fn start(cfg: CaptureConfig) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let events = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready_rx) = mpsc::channel();
    let handle = {
        let stop = Arc::clone(&stop);
        let events = Arc::clone(&events);
        std::thread::spawn(move || {
            capture::run(
                &cfg,
                &stop,
                |e| events.lock().unwrap().push(e),
                move || {
                    let _ = ready_tx.send(());
                },
            )
            .map_err(|e| format!("{e:#}"))
        })
    };
    if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
        stop.store(true, Ordering::Relaxed);
        let err = handle
            .join()
            .map(|r| r.err())
            .unwrap_or(Some("capture thread panicked".into()));
        panic!("capture did not become ready: {err:?}");
    }
    Running {
        stop,
        events,
        handle,
    }
}

impl Running {
    /// Waits until an event satisfies `pred` (or `timeout` passes).
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events.lock().unwrap().iter().find(|e| pred(e)) {
                return Some(e.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn finish(self) -> (Vec<Event>, CaptureStats) {
        // let the last records reach the ring before stopping
        std::thread::sleep(Duration::from_millis(300));
        self.stop.store(true, Ordering::Relaxed);
        let stats = self
            .handle
            .join()
            .expect("capture thread")
            .expect("capture run");
        let events = std::mem::take(&mut *self.events.lock().unwrap());
        (events, stats)
    }
}

pub fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}
