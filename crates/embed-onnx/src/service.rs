//! [`ArgEmbedder`]: normalisation, an exact LRU cache and a batching
//! inference thread in front of any [`Embedder`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::lru::Lru;
use kestrel_embed::normalize;
use kestrel_embed::{EmbeddedText, Embedder};
use kestrel_embed::{Error, Result};

/// Sizes and time bounds of the cache and the miss batcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheOptions {
    /// Most normalised strings kept (LRU); 0 turns the cache off.
    pub capacity: usize,
    /// Most distinct misses embedded in one model call.
    pub max_batch: usize,
    /// Longest time the first miss of a batch waits for more to join it.
    pub max_wait: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            max_batch: 32,
            max_wait: Duration::from_millis(2),
        }
    }
}

/// One argument string's embedding.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    /// The normalised string (the cache key), as it was embedded.
    pub key: Arc<str>,
    /// Unit-length vector of the model's dimension.
    pub vector: Arc<[f32]>,
    /// The input was longer than the model takes and only its start was embedded.
    pub truncated: bool,
}

/// Cache and batcher counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that needed the model.
    pub misses: u64,
    /// Entries in the cache now.
    pub entries: usize,
    /// Most entries the cache holds.
    pub capacity: usize,
    /// Model calls made by the batcher.
    pub batches: u64,
    /// Strings embedded by those calls.
    pub embedded: u64,
}

impl CacheStats {
    /// `hits / (hits + misses)`, 0 before the first lookup.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

#[derive(Clone)]
struct Cached {
    vector: Arc<[f32]>,
    truncated: bool,
}

struct Job {
    key: Arc<str>,
    slot: Arc<Slot>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

struct Shared {
    model: Arc<dyn Embedder>,
    opts: CacheOptions,
    cache: Mutex<Lru<Cached>>,
    queue: Mutex<Queue>,
    wake: Condvar,
    hits: AtomicU64,
    misses: AtomicU64,
    batches: AtomicU64,
    embedded: AtomicU64,
}

/// Locks a mutex, carrying on past poisoning: every critical section here
/// leaves the data consistent, so a panic elsewhere does not invalidate it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The argument-embedding front end other crates use.
///
/// `embed` normalises the argument string ([`normalize`]), answers from an
/// exact LRU cache keyed by the normalised string, and otherwise queues the
/// miss for a dedicated inference thread that embeds up to
/// [`CacheOptions::max_batch`] distinct misses per model call, waiting at most
/// [`CacheOptions::max_wait`] for a batch to fill.
///
/// Blocking callers use [`ArgEmbedder::embed`] / [`ArgEmbedder::embed_many`];
/// async callers `.await` [`ArgEmbedder::submit`], which never blocks the
/// executor (a cache hit is ready at once, a miss wakes the task when its
/// batch is done). Share it with `Arc<ArgEmbedder>`; dropping the last handle
/// finishes queued work and stops the thread.
pub struct ArgEmbedder {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ArgEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArgEmbedder")
            .field("model_id", &self.shared.model.model_id())
            .field("opts", &self.shared.opts)
            .field("stats", &self.stats())
            .finish()
    }
}

impl ArgEmbedder {
    /// Starts the batching thread in front of `model`.
    pub fn new(model: Arc<dyn Embedder>, opts: CacheOptions) -> Result<Self> {
        let opts = CacheOptions {
            max_batch: opts.max_batch.max(1),
            ..opts
        };
        let shared = Arc::new(Shared {
            cache: Mutex::new(Lru::new(opts.capacity)),
            model,
            opts,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            embedded: AtomicU64::new(0),
        });
        let worker_shared = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("kestrel-embed".into())
            .spawn(move || run_batcher(&worker_shared))
            .map_err(|e| Error::Inference(format!("cannot start the embedding thread: {e}")))?;
        Ok(Self {
            shared,
            worker: Some(worker),
        })
    }

    /// The model's id.
    pub fn model_id(&self) -> &str {
        self.shared.model.model_id()
    }

    /// The model's output dimension.
    pub fn dim(&self) -> usize {
        self.shared.model.dim()
    }

    /// Embeds one raw argument string, blocking until its vector is ready.
    pub fn embed(&self, args: &str) -> Result<Embedding> {
        self.submit(args).wait()
    }

    /// Embeds raw argument bytes (as read from the kernel); invalid UTF-8 is
    /// replaced by U+FFFD before normalising.
    pub fn embed_bytes(&self, args: &[u8]) -> Result<Embedding> {
        self.embed(&String::from_utf8_lossy(args))
    }

    /// Embeds raw argument strings, blocking; all misses go to the batcher
    /// together, so they share model calls.
    pub fn embed_many(&self, args: &[&str]) -> Result<Vec<Embedding>> {
        let keys: Vec<Arc<str>> = args.iter().map(|a| Arc::from(normalize(a))).collect();
        self.lookup_or_queue(keys)
            .into_iter()
            .map(Pending::wait)
            .collect()
    }

    /// Starts embedding one raw argument string. The result is a future for
    /// async callers and has a blocking [`Pending::wait`] for the others.
    pub fn submit(&self, args: &str) -> Pending {
        let key: Arc<str> = Arc::from(normalize(args));
        self.lookup_or_queue(vec![key])
            .pop()
            .unwrap_or(Pending::ready(Err(Error::Closed)))
    }

    /// Embeds strings that are already normalised (the cache keys), blocking.
    pub fn embed_normalized(&self, keys: &[&str]) -> Result<Vec<Embedding>> {
        let keys = keys.iter().map(|k| Arc::from(*k)).collect();
        self.lookup_or_queue(keys)
            .into_iter()
            .map(Pending::wait)
            .collect()
    }

    /// Counters since start.
    pub fn stats(&self) -> CacheStats {
        let s = &self.shared;
        let (entries, capacity) = {
            let cache = lock(&s.cache);
            (cache.len(), cache.capacity())
        };
        CacheStats {
            hits: s.hits.load(Ordering::Relaxed),
            misses: s.misses.load(Ordering::Relaxed),
            entries,
            capacity,
            batches: s.batches.load(Ordering::Relaxed),
            embedded: s.embedded.load(Ordering::Relaxed),
        }
    }

    fn lookup_or_queue(&self, keys: Vec<Arc<str>>) -> Vec<Pending> {
        let s = &self.shared;
        let mut out = Vec::with_capacity(keys.len());
        let mut misses = Vec::new();
        {
            let mut cache = lock(&s.cache);
            for key in keys {
                match cache.get(&key) {
                    Some(c) => {
                        s.hits.fetch_add(1, Ordering::Relaxed);
                        out.push(Pending::ready(Ok(Embedding {
                            key,
                            vector: c.vector,
                            truncated: c.truncated,
                        })));
                    }
                    None => {
                        s.misses.fetch_add(1, Ordering::Relaxed);
                        let slot = Arc::new(Slot::default());
                        out.push(Pending::waiting(Arc::clone(&slot)));
                        misses.push(Job { key, slot });
                    }
                }
            }
        }
        if !misses.is_empty() {
            let mut queue = lock(&s.queue);
            if queue.closed {
                misses
                    .iter()
                    .for_each(|j| j.slot.complete(Err(Error::Closed)));
            } else {
                queue.jobs.extend(misses);
                s.wake.notify_one();
            }
        }
        out
    }
}

impl Drop for ArgEmbedder {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_all();
        if let Some(worker) = self.worker.take() {
            // The thread catches model panics; a join error cannot carry anything useful.
            let _ = worker.join();
        }
    }
}

/// `ArgEmbedder` is itself an [`Embedder`] over normalised strings, with the cache
/// and batching in between.
impl Embedder for ArgEmbedder {
    fn model_id(&self) -> &str {
        self.shared.model.model_id()
    }

    fn dim(&self) -> usize {
        self.shared.model.dim()
    }

    fn embed_batch(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(self
            .embed_normalized(inputs)?
            .into_iter()
            .map(|e| e.vector.to_vec())
            .collect())
    }

    fn embed_batch_flagged(&self, inputs: &[&str]) -> Result<Vec<EmbeddedText>> {
        Ok(self
            .embed_normalized(inputs)?
            .into_iter()
            .map(|e| EmbeddedText {
                vector: e.vector.to_vec(),
                truncated: e.truncated,
            })
            .collect())
    }
}

/// The inference thread: waits for misses, gathers a batch (size and time
/// bound), embeds the distinct keys once, fills the cache, answers everyone.
fn run_batcher(s: &Shared) {
    loop {
        let jobs = {
            let mut queue = lock(&s.queue);
            while queue.jobs.is_empty() && !queue.closed {
                queue = s.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
            if queue.jobs.is_empty() {
                return; // closed and drained
            }
            let deadline = Instant::now() + s.opts.max_wait;
            while queue.jobs.len() < s.opts.max_batch && !queue.closed {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                queue = s
                    .wake
                    .wait_timeout(queue, deadline - now)
                    .map(|(q, _)| q)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            take_batch(&mut queue.jobs, s.opts.max_batch)
        };
        embed_jobs(s, jobs);
    }
}

/// Takes jobs from the front until `max_batch` distinct keys are covered.
fn take_batch(queue: &mut VecDeque<Job>, max_batch: usize) -> Vec<Job> {
    let mut distinct: HashMap<Arc<str>, ()> = HashMap::new();
    let mut taken = Vec::new();
    while let Some(job) = queue.front() {
        if !distinct.contains_key(&job.key) {
            if distinct.len() == max_batch {
                break;
            }
            distinct.insert(Arc::clone(&job.key), ());
        }
        if let Some(job) = queue.pop_front() {
            taken.push(job);
        }
    }
    taken
}

fn embed_jobs(s: &Shared, jobs: Vec<Job>) {
    // Keys in first-seen order, and which jobs wait for each.
    let mut order: Vec<Arc<str>> = Vec::new();
    let mut waiting: HashMap<Arc<str>, Vec<Arc<Slot>>> = HashMap::new();
    for job in jobs {
        waiting
            .entry(Arc::clone(&job.key))
            .or_insert_with(|| {
                order.push(Arc::clone(&job.key));
                Vec::new()
            })
            .push(job.slot);
    }
    // Another batch may have filled some keys since they were queued.
    let mut todo = Vec::with_capacity(order.len());
    {
        let mut cache = lock(&s.cache);
        for key in order {
            match cache.get(&key) {
                Some(c) => answer(&waiting, &key, &c),
                None => todo.push(key),
            }
        }
    }
    if todo.is_empty() {
        return;
    }
    let inputs: Vec<&str> = todo.iter().map(|k| k.as_ref()).collect();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        s.model.embed_batch_flagged(&inputs)
    }))
    .unwrap_or_else(|_| {
        Err(Error::Inference(format!(
            "model {} panicked",
            s.model.model_id()
        )))
    })
    .and_then(|rows| check_rows(s, rows, todo.len()));
    s.batches.fetch_add(1, Ordering::Relaxed);
    match result {
        Ok(rows) => {
            s.embedded.fetch_add(rows.len() as u64, Ordering::Relaxed);
            let cached: Vec<Cached> = rows
                .into_iter()
                .map(|r| Cached {
                    vector: Arc::from(r.vector),
                    truncated: r.truncated,
                })
                .collect();
            {
                let mut cache = lock(&s.cache);
                for (key, c) in todo.iter().zip(&cached) {
                    cache.insert(Arc::clone(key), c.clone());
                }
            }
            for (key, c) in todo.iter().zip(&cached) {
                answer(&waiting, key, c);
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for key in &todo {
                for slot in waiting.get(key).into_iter().flatten() {
                    slot.complete(Err(Error::Shared(Arc::clone(&e))));
                }
            }
        }
    }
}

/// Checks that a model returned one vector of the right length per input.
fn check_rows(s: &Shared, rows: Vec<EmbeddedText>, expected: usize) -> Result<Vec<EmbeddedText>> {
    let dim = s.model.dim();
    if rows.len() != expected || rows.iter().any(|r| r.vector.len() != dim) {
        return Err(Error::OutputShape {
            model_id: s.model.model_id().to_string(),
            shape: vec![
                rows.len() as i64,
                rows.first().map_or(0, |r| r.vector.len() as i64),
            ],
            expected: format!("[{expected}, {dim}]"),
        });
    }
    Ok(rows)
}

fn answer(waiting: &HashMap<Arc<str>, Vec<Arc<Slot>>>, key: &Arc<str>, c: &Cached) {
    for slot in waiting.get(key).into_iter().flatten() {
        slot.complete(Ok(Embedding {
            key: Arc::clone(key),
            vector: Arc::clone(&c.vector),
            truncated: c.truncated,
        }));
    }
}

#[derive(Default)]
struct SlotState {
    result: Option<Result<Embedding>>,
    waker: Option<Waker>,
}

/// Where the batcher puts one request's answer.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    done: Condvar,
}

impl Slot {
    fn complete(&self, result: Result<Embedding>) {
        let waker = {
            let mut state = lock(&self.state);
            state.result = Some(result);
            state.waker.take()
        };
        self.done.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// An embedding that is ready or being computed.
///
/// `.await` it from async code, or call [`Pending::wait`] to block.
pub struct Pending {
    ready: Option<Result<Embedding>>,
    slot: Option<Arc<Slot>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("ready", &self.ready.is_some())
            .finish()
    }
}

impl Pending {
    fn ready(result: Result<Embedding>) -> Self {
        Self {
            ready: Some(result),
            slot: None,
        }
    }

    fn waiting(slot: Arc<Slot>) -> Self {
        Self {
            ready: None,
            slot: Some(slot),
        }
    }

    /// True when the answer is already there (a cache hit, or a finished batch).
    pub fn is_ready(&self) -> bool {
        self.ready.is_some()
            || self
                .slot
                .as_ref()
                .is_some_and(|s| lock(&s.state).result.is_some())
    }

    /// Blocks until the embedding is ready.
    pub fn wait(mut self) -> Result<Embedding> {
        if let Some(r) = self.ready.take() {
            return r;
        }
        let Some(slot) = self.slot.take() else {
            return Err(Error::Closed);
        };
        let mut state = lock(&slot.state);
        loop {
            if let Some(r) = state.result.take() {
                return r;
            }
            state = slot.done.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Future for Pending {
    type Output = Result<Embedding>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.ready.take() {
            return Poll::Ready(r);
        }
        let Some(slot) = self.slot.clone() else {
            return Poll::Ready(Err(Error::Closed));
        };
        let mut state = lock(&slot.state);
        match state.result.take() {
            Some(r) => {
                drop(state);
                self.slot = None;
                Poll::Ready(r)
            }
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// A deterministic toy model: the vector depends on the string's bytes;
    /// counts calls and the largest batch.
    struct Toy {
        calls: AtomicUsize,
        largest: AtomicUsize,
        fail: bool,
    }

    impl Toy {
        fn new(fail: bool) -> Arc<Self> {
            Arc::new(Self {
                calls: AtomicUsize::new(0),
                largest: AtomicUsize::new(0),
                fail,
            })
        }
    }

    impl Embedder for Toy {
        fn model_id(&self) -> &str {
            "toy"
        }
        fn dim(&self) -> usize {
            2
        }
        fn embed_batch(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.largest.fetch_max(inputs.len(), Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            if self.fail {
                return Err(Error::Inference("toy failure".into()));
            }
            Ok(inputs.iter().map(|s| vec![s.len() as f32, 1.0]).collect())
        }
    }

    fn opts(max_batch: usize) -> CacheOptions {
        CacheOptions {
            capacity: 100,
            max_batch,
            max_wait: Duration::from_millis(20),
        }
    }

    #[test]
    fn a_repeated_argument_shape_is_served_from_the_cache() {
        let toy = Toy::new(false);
        let e = ArgEmbedder::new(toy.clone(), opts(8)).unwrap();
        let a = e.embed("java -jar app.jar --timestamp=12345").unwrap();
        let b = e.embed("java -jar app.jar --timestamp=99999").unwrap();
        assert_eq!(a.key, b.key);
        assert_eq!(a.vector, b.vector);
        let stats = e.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));
        assert_eq!(toy.calls.load(Ordering::SeqCst), 1);
        assert!((stats.hit_ratio() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn misses_are_embedded_together_in_bounded_batches() {
        let toy = Toy::new(false);
        let e = ArgEmbedder::new(toy.clone(), opts(4)).unwrap();
        let args: Vec<String> = (0..10).map(|i| format!("cmd{}", "x".repeat(i))).collect();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = e.embed_many(&refs).unwrap();
        assert_eq!(out.len(), 10);
        assert_eq!(toy.calls.load(Ordering::SeqCst), 3); // 4 + 4 + 2
        assert_eq!(toy.largest.load(Ordering::SeqCst), 4);
        for (arg, emb) in args.iter().zip(&out) {
            assert_eq!(emb.vector[0], arg.len() as f32);
        }
    }

    #[test]
    fn duplicate_misses_in_one_batch_are_embedded_once() {
        let toy = Toy::new(false);
        let e = ArgEmbedder::new(toy.clone(), opts(8)).unwrap();
        let out = e.embed_many(&["sleep 1", "sleep 2", "sleep 3"]).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(e.stats().embedded, 1);
    }

    #[test]
    fn concurrent_callers_share_model_calls() {
        let toy = Toy::new(false);
        let e = Arc::new(ArgEmbedder::new(toy.clone(), opts(64)).unwrap());
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let e = Arc::clone(&e);
                std::thread::spawn(move || {
                    e.embed(&format!("worker {}", "y".repeat(i)))
                        .map(|v| v.vector.len())
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap().unwrap(), 2);
        }
        assert!(toy.calls.load(Ordering::SeqCst) < 16);
    }

    #[test]
    fn a_model_failure_reaches_every_waiter_and_is_not_cached() {
        let toy = Toy::new(true);
        let e = ArgEmbedder::new(toy.clone(), opts(8)).unwrap();
        let err = e.embed_many(&["a", "b"]).unwrap_err();
        assert_eq!(err.label(), "inference");
        assert!(e.embed("a").is_err());
        assert_eq!(e.stats().entries, 0);
    }

    #[test]
    fn a_model_returning_the_wrong_dimension_is_an_error_naming_it() {
        struct Wrong;
        impl Embedder for Wrong {
            fn model_id(&self) -> &str {
                "wrong"
            }
            fn dim(&self) -> usize {
                3
            }
            fn embed_batch(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>> {
                Ok(inputs.iter().map(|_| vec![1.0]).collect())
            }
        }
        let e = ArgEmbedder::new(Arc::new(Wrong), opts(8)).unwrap();
        let err = e.embed("x").unwrap_err();
        assert_eq!(err.label(), "output_shape");
        assert!(err.to_string().contains("wrong"), "{err}");
    }

    #[test]
    fn a_panicking_model_is_an_error_not_a_hang() {
        struct Panics;
        impl Embedder for Panics {
            fn model_id(&self) -> &str {
                "panics"
            }
            fn dim(&self) -> usize {
                1
            }
            fn embed_batch(&self, _: &[&str]) -> Result<Vec<Vec<f32>>> {
                panic!("boom")
            }
        }
        let e = ArgEmbedder::new(Arc::new(Panics), opts(8)).unwrap();
        assert!(e.embed("x").is_err());
        assert!(e.embed("y").is_err()); // the thread is still serving
    }

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn an_awaited_miss_wakes_its_task_and_a_hit_is_ready_at_once() {
        let toy = Toy::new(false);
        let e = ArgEmbedder::new(toy, opts(8)).unwrap();
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        let mut pending = e.submit("nginx -g daemon off;");
        let first = Pin::new(&mut pending).poll(&mut cx);
        assert!(first.is_pending() || first.is_ready());
        let start = Instant::now();
        while !flag.0.load(Ordering::SeqCst) && first.is_pending() {
            assert!(start.elapsed() < Duration::from_secs(5), "never woken");
            std::thread::sleep(Duration::from_millis(1));
        }
        let Poll::Ready(Ok(v)) = Pin::new(&mut pending).poll(&mut cx) else {
            panic!("not ready after wake")
        };
        assert_eq!(v.vector.len(), 2);
        let mut hit = e.submit("nginx -g daemon off;");
        assert!(hit.is_ready());
        assert!(matches!(
            Pin::new(&mut hit).poll(&mut cx),
            Poll::Ready(Ok(_))
        ));
    }

    #[test]
    fn dropping_the_embedder_finishes_queued_work() {
        let toy = Toy::new(false);
        let e = ArgEmbedder::new(toy, opts(8)).unwrap();
        let pending = e.submit("python app.py");
        drop(e);
        assert!(pending.wait().is_ok());
    }
}
