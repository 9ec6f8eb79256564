//! The model's answer: the JSON schema we ask for, and strict parsing of
//! what comes back.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// The model's classification (defined with the alert, in `kestrel-api`).
pub use kestrel_api::Verdict;

/// The classification as the model must spell it (the `response_format`
/// enum): lower case only, whatever casings the alert accepts.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireVerdict {
    Malicious,
    Suspicious,
    Benign,
}

impl From<WireVerdict> for Verdict {
    fn from(w: WireVerdict) -> Self {
        match w {
            WireVerdict::Malicious => Verdict::Malicious,
            WireVerdict::Suspicious => Verdict::Suspicious,
            WireVerdict::Benign => Verdict::Benign,
        }
    }
}

/// A validated LLM judgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmVerdict {
    /// The classification.
    pub verdict: Verdict,
    /// Likelihood of malice, 0..=100.
    pub score: f64,
    /// One or two sentences.
    pub explanation: String,
    /// MITRE ATT&CK ids the model named.
    pub tactics: Vec<String>,
}

const MAX_EXPLANATION: usize = 2000;
const MAX_TACTICS: usize = 16;

/// The `response_format` sent with every request: a strict JSON schema.
pub fn response_format() -> Value {
    json!({
        "type": "json_schema",
        "json_schema": {
            "name": "kestrel_verdict",
            "strict": true,
            "schema": {
                "type": "object",
                "properties": {
                    "verdict": {"type": "string", "enum": ["malicious", "suspicious", "benign"]},
                    "score": {"type": "integer", "minimum": 0, "maximum": 100},
                    "explanation": {"type": "string", "maxLength": 600},
                    "tactics": {
                        "type": "array",
                        "items": {"type": "string", "pattern": "^TA?[0-9]{4}(\\.[0-9]{3})?$"},
                        "maxItems": 8
                    }
                },
                "required": ["verdict", "score", "explanation", "tactics"],
                "additionalProperties": false
            }
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    verdict: WireVerdict,
    score: f64,
    explanation: String,
    tactics: Vec<String>,
}

fn is_attack_id(t: &str) -> bool {
    let rest = t.strip_prefix("TA").or_else(|| t.strip_prefix('T'));
    rest.is_some_and(|r| {
        let (main, sub) = r.split_once('.').unwrap_or((r, ""));
        main.len() == 4
            && main.bytes().all(|b| b.is_ascii_digit())
            && (sub.is_empty() || (sub.len() == 3 && sub.bytes().all(|b| b.is_ascii_digit())))
    })
}

/// Parses the assistant message content into a verdict, or says why not.
///
/// Strict: the content must be exactly one JSON object with exactly the
/// four fields (surrounding whitespace allowed, no prose, no code fences);
/// the score must be a finite number in 0..=100; `malicious` needs a score
/// of at least 50 and `benign` at most 50 (a model that says "malicious,
/// 10" is not answering on the scale we asked for); the explanation must be
/// non-empty. Tactics that are not ATT&CK ids are dropped, not trusted.
pub fn parse_answer(content: &str) -> Result<LlmVerdict> {
    let bad = |m: String| Error::InvalidAnswer(m);
    let trimmed = content.trim();
    if !trimmed.starts_with('{') || !trimmed.ends_with('}') {
        let head: String = trimmed.chars().take(80).collect();
        return Err(bad(format!("not a JSON object: {head:?}")));
    }
    let raw: Raw = serde_json::from_str(trimmed).map_err(|e| bad(format!("malformed: {e}")))?;
    if !raw.score.is_finite() || !(0.0..=100.0).contains(&raw.score) {
        return Err(bad(format!("score {} outside 0..=100", raw.score)));
    }
    let verdict = Verdict::from(raw.verdict);
    match verdict {
        Verdict::Malicious if raw.score < 50.0 => {
            return Err(bad(format!(
                "verdict malicious with score {} < 50",
                raw.score
            )))
        }
        Verdict::Benign if raw.score > 50.0 => {
            return Err(bad(format!("verdict benign with score {} > 50", raw.score)))
        }
        _ => {}
    }
    let explanation = raw.explanation.trim();
    if explanation.is_empty() {
        return Err(bad("empty explanation".into()));
    }
    let explanation: String = explanation.chars().take(MAX_EXPLANATION).collect();
    let tactics = raw
        .tactics
        .into_iter()
        .filter(|t| is_attack_id(t))
        .take(MAX_TACTICS)
        .collect();
    Ok(LlmVerdict {
        verdict,
        score: raw.score,
        explanation,
        tactics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_answer_parses() {
        let v = parse_answer(
            r#" {"verdict":"malicious","score":97,"explanation":"XMRig, a Monero miner.","tactics":["T1496","bogus"]} "#,
        )
        .unwrap();
        assert_eq!(v.verdict, Verdict::Malicious);
        assert_eq!(v.score, 97.0);
        assert_eq!(v.tactics, vec!["T1496"]);
    }

    #[test]
    fn prose_fences_extra_fields_and_out_of_range_scores_are_rejected() {
        for bad in [
            "This looks malicious.",
            "```json\n{\"verdict\":\"malicious\",\"score\":90,\"explanation\":\"x\",\"tactics\":[]}\n```",
            r#"{"verdict":"malicious","score":190,"explanation":"x","tactics":[]}"#,
            r#"{"verdict":"malicious","score":-1,"explanation":"x","tactics":[]}"#,
            r#"{"verdict":"malicious","score":10,"explanation":"malicious","tactics":[]}"#,
            r#"{"verdict":"benign","score":90,"explanation":"x","tactics":[]}"#,
            r#"{"verdict":"evil","score":90,"explanation":"x","tactics":[]}"#,
            r#"{"verdict":"Malicious","score":90,"explanation":"x","tactics":[]}"#,
            r#"{"verdict":"malicious","score":90,"explanation":"x","tactics":[],"extra":1}"#,
            r#"{"verdict":"malicious","score":90,"explanation":"  ","tactics":[]}"#,
            r#"{"verdict":"malicious","score":"90","explanation":"x","tactics":[]}"#,
            r#"{"verdict":"malicious","score":90,"explanation":"x"}"#,
            r#"{"verdict":"malicious","score":90,"#,
            "",
        ] {
            assert!(parse_answer(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn the_schema_requires_all_four_fields_and_nothing_else() {
        let f = response_format();
        assert_eq!(f["type"], "json_schema");
        let s = &f["json_schema"]["schema"];
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["required"].as_array().unwrap().len(), 4);
    }
}
