//! An OpenAI-compatible `/v1/chat/completions` client (vLLM, Ollama,
//! llama.cpp server, hosted APIs).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::Uri;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

use super::answer::{parse_answer, response_format, LlmVerdict};
use super::prompt::Prompt;
use super::{BoxFuture, LlmClient};
use crate::error::{Error, Result};
use crate::http::{snippet, HttpClient};

/// Settings of the OpenAI-compatible client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Base URL (`http://vllm:8000/v1`) or the full
    /// `.../chat/completions` URL.
    pub endpoint: String,
    /// Model name as the server knows it.
    pub model: String,
    /// Environment variable holding the API key (mounted from a Secret);
    /// unset or empty means no `Authorization` header.
    pub api_key_env: String,
    /// Per-attempt limit for the whole exchange (ms).
    pub timeout_ms: u64,
    /// Requests in flight at once.
    pub max_concurrency: usize,
    /// Request starts per second (0 = unlimited).
    pub requests_per_second: f64,
    /// Retries after the first attempt, on timeouts, connection errors,
    /// 408, 429 and 5xx.
    pub max_retries: u32,
    /// First backoff (ms); doubles each retry.
    pub backoff_base_ms: u64,
    /// Longest backoff, `Retry-After` included (ms).
    pub backoff_max_ms: u64,
    /// `max_tokens` of the completion.
    pub max_tokens: u32,
    /// Sampling temperature (0 for repeatable verdicts).
    pub temperature: f64,
    /// Largest response body accepted (bytes).
    pub max_response_bytes: usize,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:8080/v1".into(),
            model: "default".into(),
            api_key_env: "KESTREL_LLM_API_KEY".into(),
            timeout_ms: 10_000,
            max_concurrency: 4,
            requests_per_second: 2.0,
            max_retries: 2,
            backoff_base_ms: 250,
            backoff_max_ms: 5_000,
            max_tokens: 300,
            temperature: 0.0,
            max_response_bytes: 1 << 20,
        }
    }
}

/// The chat-completions client.
#[derive(Debug)]
pub struct OpenAiClient {
    config: OpenAiConfig,
    uri: Uri,
    api_key: Option<String>,
    http: HttpClient,
    in_flight: Arc<Semaphore>,
    next_start: Mutex<Instant>,
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
}

impl OpenAiClient {
    /// A client with the API key read from `config.api_key_env`.
    pub fn new(config: OpenAiConfig) -> Result<Self> {
        let key = std::env::var(&config.api_key_env).ok();
        Self::with_api_key(config, key)
    }

    /// A client with an explicit API key (`None` or empty: none).
    pub fn with_api_key(config: OpenAiConfig, api_key: Option<String>) -> Result<Self> {
        let base = config.endpoint.trim_end_matches('/');
        let full = if base.ends_with("/chat/completions") {
            base.to_string()
        } else {
            format!("{base}/chat/completions")
        };
        let uri: Uri = full
            .parse()
            .map_err(|e| Error::Config(format!("llm endpoint {full:?}: {e}")))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => {
                return Err(Error::Config(format!(
                    "llm endpoint {full:?}: needs http:// or https://"
                )))
            }
        }
        if config.max_concurrency == 0 {
            return Err(Error::Config(
                "llm maxConcurrency must be at least 1".into(),
            ));
        }
        if !config.requests_per_second.is_finite() || config.requests_per_second < 0.0 {
            return Err(Error::Config("llm requestsPerSecond must be >= 0".into()));
        }
        Ok(Self {
            in_flight: Arc::new(Semaphore::new(config.max_concurrency)),
            uri,
            api_key: api_key.filter(|k| !k.is_empty()),
            http: HttpClient::new()?,
            next_start: Mutex::new(Instant::now()),
            config,
        })
    }

    /// The URL requests go to.
    pub fn url(&self) -> String {
        self.uri.to_string()
    }

    /// The request body for a prompt.
    pub fn request_body(&self, prompt: &Prompt) -> serde_json::Value {
        json!({
            "model": self.config.model,
            "messages": [
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": prompt.user},
            ],
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
            "stream": false,
            "response_format": response_format(),
        })
    }

    /// Waits for the rate limiter's next slot.
    async fn pace(&self) {
        if self.config.requests_per_second <= 0.0 {
            return;
        }
        let gap = Duration::from_secs_f64(1.0 / self.config.requests_per_second);
        let start = {
            let mut next = self.next_start.lock().await;
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + gap;
            start
        };
        tokio::time::sleep_until(start).await;
    }

    async fn attempt(&self, body: &Bytes) -> Result<LlmVerdict> {
        let mut headers = Vec::new();
        if let Some(k) = &self.api_key {
            let v = HeaderValue::from_str(&format!("Bearer {k}"))
                .map_err(|_| Error::Config("API key is not a valid header value".into()))?;
            headers.push((AUTHORIZATION, v));
        }
        headers.push((
            HeaderName::from_static("accept"),
            HeaderValue::from_static("application/json"),
        ));
        let resp = self
            .http
            .post_json(
                &self.uri,
                &headers,
                body.clone(),
                Duration::from_millis(self.config.timeout_ms),
                self.config.max_response_bytes,
            )
            .await?;
        if !resp.status.is_success() {
            return Err(Error::HttpStatus {
                status: resp.status.as_u16(),
                body: snippet(&resp.body),
                retry_after_secs: resp.retry_after.map(|d| d.as_secs()),
            });
        }
        let completion: Completion = serde_json::from_slice(&resp.body)
            .map_err(|e| Error::InvalidAnswer(format!("not a chat completion: {e}")))?;
        let choice = completion
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| Error::InvalidAnswer("no choices".into()))?;
        if choice.finish_reason.as_deref() == Some("length") {
            return Err(Error::InvalidAnswer("answer cut off at max_tokens".into()));
        }
        let content = choice
            .message
            .content
            .ok_or_else(|| Error::InvalidAnswer("no message content".into()))?;
        parse_answer(&content)
    }

    fn backoff(&self, retry: u32, err: &Error) -> Duration {
        let max = Duration::from_millis(self.config.backoff_max_ms);
        if let Error::HttpStatus {
            retry_after_secs: Some(ra),
            ..
        } = err
        {
            return Duration::from_secs(*ra).min(max);
        }
        let exp = self
            .config
            .backoff_base_ms
            .saturating_mul(1u64 << retry.min(20));
        Duration::from_millis(exp).min(max)
    }
}

fn retryable(e: &Error) -> bool {
    match e {
        Error::Timeout(_) | Error::Http(_) => true,
        Error::HttpStatus { status, .. } => matches!(status, 408 | 429 | 500..=599),
        _ => false,
    }
}

impl LlmClient for OpenAiClient {
    fn judge<'a>(&'a self, prompt: &'a Prompt) -> BoxFuture<'a, Result<LlmVerdict>> {
        Box::pin(async move {
            let body = Bytes::from(
                serde_json::to_vec(&self.request_body(prompt))
                    .map_err(|e| Error::Serialize(e.to_string()))?,
            );
            let _permit = self
                .in_flight
                .acquire()
                .await
                .map_err(|_| Error::Http("client closed".into()))?;
            let mut retry = 0;
            loop {
                self.pace().await;
                match self.attempt(&body).await {
                    Ok(v) => return Ok(v),
                    Err(e) if retryable(&e) && retry < self.config.max_retries => {
                        tokio::time::sleep(self.backoff(retry, &e)).await;
                        retry += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    }

    fn describe(&self) -> String {
        format!("{} ({})", self.url(), self.config.model)
    }
}
