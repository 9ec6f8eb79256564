//! Agent identity in a cluster: a node's client certificate for a
//! ServiceAccount token (the `Enroll` call; docs/kubernetes.md, "Agent
//! identity").
//!
//! No node holds a CA key. Each agent pod gets a projected ServiceAccount
//! token with the audience [`AUDIENCE`] (the kubelet rotates it, and it is
//! bound to the pod: it stops working when the pod is deleted). The agent
//! makes its own key and sends a certificate request with the token; the
//! operator
//!
//! 1. asks the API server to review the token (`TokenReview`, audience
//!    [`AUDIENCE`]): it must be authenticated for that audience, and be
//!    the agent ServiceAccount's (`system:serviceaccount:<ns>:<name>`), and
//!    carry the pod it is bound to (name and uid);
//! 2. reads that pod: it must still exist with that uid and be scheduled;
//!    its `spec.nodeName` is the only name the certificate gets;
//! 3. signs the request's public key with its CA for that node, valid for
//!    the configured lifetime (default 24 h; the agent renews at two
//!    thirds).
//!
//! The certificate then ties the agent's stream to that node, and the
//! operator drops events for pods on any other node (`foreignNode`).

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::core::v1::Pod;
use kestrel_proto::server::{Refusal, RefusalCode};
use kestrel_proto::wire::{EnrollRequest, EnrollResponse};
use kestrel_proto::CertSigner;
use kube::api::{Api, PostParams};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The audience agents' tokens must be issued for.
pub const AUDIENCE: &str = "kestrel";

const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const POD_UID: &str = "authentication.kubernetes.io/pod-uid";

/// Enrollments handled at once; more are refused with `RESOURCE_EXHAUSTED`
/// (the agent retries with back-off), so a restart of every agent at once
/// cannot flood the API server with token reviews.
const MAX_CONCURRENT: usize = 16;

/// What enrollment has done; read at any time.
#[derive(Debug, Default)]
pub struct EnrollStats {
    /// Certificates issued.
    pub issued: AtomicU64,
    /// Requests refused (token, ServiceAccount, pod, request).
    pub refused: AtomicU64,
    /// Requests that failed because the API server could not answer.
    pub failed: AtomicU64,
}

/// Who may enroll, and for how long.
#[derive(Debug, Clone)]
pub struct EnrollSettings {
    /// The agents' ServiceAccount: namespace and name.
    pub service_account: (String, String),
    /// Lifetime of an issued certificate.
    pub lifetime: Duration,
}

/// The pod a reviewed token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPod {
    /// Its name (in the ServiceAccount's namespace).
    pub name: String,
    /// Its uid, when the token carries one.
    pub uid: Option<String>,
}

/// Checks the API server's verdict on a token: authenticated for
/// [`AUDIENCE`], the agent ServiceAccount's, bound to a pod.
pub fn check_review(
    status: &TokenReviewStatus,
    service_account: &(String, String),
) -> Result<TokenPod, Refusal> {
    let denied = |code, m: String| Err(Refusal::new(code, m));
    if status.authenticated != Some(true) {
        return denied(
            RefusalCode::Unauthenticated,
            format!(
                "the API server did not accept the token{}",
                status
                    .error
                    .as_deref()
                    .filter(|e| !e.is_empty())
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        );
    }
    let audiences = status.audiences.as_deref().unwrap_or_default();
    if !audiences.iter().any(|a| a == AUDIENCE) {
        return denied(
            RefusalCode::Unauthenticated,
            format!(
                "the token is not for the audience {AUDIENCE:?} (it is for {audiences:?}); \
                 mount a projected ServiceAccount token with `audience: {AUDIENCE}`"
            ),
        );
    }
    let user = status.user.as_ref();
    let username = user.and_then(|u| u.username.as_deref()).unwrap_or("");
    let (ns, sa) = service_account;
    let want = format!("system:serviceaccount:{ns}:{sa}");
    if username != want {
        return denied(
            RefusalCode::PermissionDenied,
            format!("the token is {username:?}'s; only {want:?} may enroll as a node agent"),
        );
    }
    let extra = |key: &str| {
        user.and_then(|u| u.extra.as_ref())
            .and_then(|e| e.get(key))
            .and_then(|v| v.first())
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let Some(name) = extra(POD_NAME) else {
        return denied(
            RefusalCode::PermissionDenied,
            "the token is not bound to a pod: use the pod's projected ServiceAccount token, \
             not a long-lived Secret token"
                .into(),
        );
    };
    Ok(TokenPod {
        name,
        uid: extra(POD_UID),
    })
}

/// Checks the token's pod as the API server has it now, and returns its
/// node.
pub fn node_of(
    pod: Option<&Pod>,
    token_pod: &TokenPod,
    namespace: &str,
) -> Result<String, Refusal> {
    let denied = |m: String| Err(Refusal::new(RefusalCode::PermissionDenied, m));
    let Some(pod) = pod else {
        return denied(format!("pod {namespace}/{} does not exist", token_pod.name));
    };
    if let Some(uid) = &token_pod.uid {
        if pod.metadata.uid.as_ref() != Some(uid) {
            return denied(format!(
                "pod {namespace}/{} was replaced (its uid is not the token's)",
                token_pod.name
            ));
        }
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return denied(format!(
            "pod {namespace}/{} is being deleted",
            token_pod.name
        ));
    }
    match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
        Some(node) if !node.is_empty() => Ok(node.to_string()),
        _ => denied(format!(
            "pod {namespace}/{} is not scheduled to a node",
            token_pod.name
        )),
    }
}

/// Issues node certificates for reviewed tokens.
pub struct Enroller {
    client: kube::Client,
    signer: CertSigner,
    settings: EnrollSettings,
    limit: tokio::sync::Semaphore,
    /// Counters, shown in status.json and /metrics.
    pub stats: EnrollStats,
}

impl std::fmt::Debug for Enroller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enroller")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Enroller {
    /// An enroller signing with `signer`.
    pub fn new(client: kube::Client, signer: CertSigner, settings: EnrollSettings) -> Self {
        Enroller {
            client,
            signer,
            settings,
            limit: tokio::sync::Semaphore::new(MAX_CONCURRENT),
            stats: EnrollStats::default(),
        }
    }

    /// Handles one `Enroll` call.
    pub async fn enroll(
        &self,
        request: EnrollRequest,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<EnrollResponse, Refusal> {
        let r = self.enroll_inner(request).await;
        match &r {
            Ok(resp) => {
                self.stats.issued.fetch_add(1, Ordering::Relaxed);
                tracing::info!(node = %resp.node_name, ?peer, "agent enrolled");
            }
            Err(e) if e.code == RefusalCode::Unavailable => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(?peer, error = %e.message, "enrollment failed");
            }
            Err(e) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(?peer, code = ?e.code, error = %e.message, "enrollment refused");
            }
        }
        r
    }

    async fn enroll_inner(&self, request: EnrollRequest) -> Result<EnrollResponse, Refusal> {
        let Ok(_permit) = self.limit.try_acquire() else {
            return Err(Refusal::new(
                RefusalCode::ResourceExhausted,
                "too many enrollments at once; retry shortly",
            ));
        };
        let unavailable = |what: &str, e: kube::Error| {
            Refusal::new(
                RefusalCode::Unavailable,
                format!("the API server could not {what}: {e}"),
            )
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(request.token),
                audiences: Some(vec![AUDIENCE.to_string()]),
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| unavailable("review the token", e))?;
        let status = reviewed.status.unwrap_or_default();
        let token_pod = check_review(&status, &self.settings.service_account)?;
        let ns = &self.settings.service_account.0;
        let pod = Api::<Pod>::namespaced(self.client.clone(), ns)
            .get_opt(&token_pod.name)
            .await
            .map_err(|e| unavailable("read the token's pod", e))?;
        let node = node_of(pod.as_ref(), &token_pod, ns)?;
        let (certificate_pem, not_after_unix) = self
            .signer
            .sign_client(&request.csr_pem, &node, self.settings.lifetime)
            .map_err(|e| Refusal::new(RefusalCode::InvalidArgument, e.to_string()))?;
        Ok(EnrollResponse {
            certificate_pem,
            ca_pem: self.signer.ca_pem().to_string(),
            node_name: node,
            not_after_unix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;
    use std::collections::BTreeMap;

    fn sa() -> (String, String) {
        ("kestrel".into(), "kestrel-agent".into())
    }

    fn reviewed(user: &str, audiences: &[&str], extra: &[(&str, &str)]) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(user.into()),
                extra: Some(
                    extra
                        .iter()
                        .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..Default::default()
            }),
            error: None,
        }
    }

    const AGENT: &str = "system:serviceaccount:kestrel:kestrel-agent";

    #[test]
    fn the_agents_pod_bound_token_names_its_pod() {
        let s = reviewed(
            AGENT,
            &["kestrel"],
            &[(POD_NAME, "kestrel-agent-x7k2p"), (POD_UID, "u-1")],
        );
        assert_eq!(
            check_review(&s, &sa()).unwrap(),
            TokenPod {
                name: "kestrel-agent-x7k2p".into(),
                uid: Some("u-1".into())
            }
        );
    }

    #[test]
    fn tokens_that_are_not_the_agents_are_refused_with_the_reason() {
        let cases = [
            (
                TokenReviewStatus {
                    authenticated: Some(false),
                    error: Some("token has expired".into()),
                    ..Default::default()
                },
                RefusalCode::Unauthenticated,
                "did not accept the token: token has expired",
            ),
            (
                reviewed(
                    AGENT,
                    &["https://kubernetes.default.svc"],
                    &[(POD_NAME, "p")],
                ),
                RefusalCode::Unauthenticated,
                "not for the audience \"kestrel\"",
            ),
            (
                reviewed(
                    "system:serviceaccount:shop:default",
                    &["kestrel"],
                    &[(POD_NAME, "web-1")],
                ),
                RefusalCode::PermissionDenied,
                "only \"system:serviceaccount:kestrel:kestrel-agent\" may enroll",
            ),
            (
                reviewed(AGENT, &["kestrel"], &[]),
                RefusalCode::PermissionDenied,
                "not bound to a pod",
            ),
        ];
        for (status, code, words) in cases {
            let e = check_review(&status, &sa()).unwrap_err();
            assert_eq!(e.code, code, "{e}");
            assert!(e.message.contains(words), "{e}");
        }
    }

    fn pod(uid: &str, node: Option<&str>, deleting: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "kestrel-agent-x7k2p", "namespace": "kestrel", "uid": uid,
                "deletionTimestamp": if deleting { Some("2026-12-07T00:00:00Z") } else { None },
            },
            "spec": { "containers": [], "nodeName": node },
        }))
        .unwrap()
    }

    #[test]
    fn the_certificate_is_for_the_node_the_pod_runs_on_and_nothing_else() {
        let tp = TokenPod {
            name: "kestrel-agent-x7k2p".into(),
            uid: Some("u-1".into()),
        };
        assert_eq!(
            node_of(Some(&pod("u-1", Some("node-a"), false)), &tp, "kestrel").unwrap(),
            "node-a"
        );
        for (p, words) in [
            (None, "does not exist"),
            (Some(pod("u-2", Some("node-a"), false)), "was replaced"),
            (Some(pod("u-1", None, false)), "not scheduled"),
            (Some(pod("u-1", Some("node-a"), true)), "being deleted"),
        ] {
            let e = node_of(p.as_ref(), &tp, "kestrel").unwrap_err();
            assert_eq!(e.code, RefusalCode::PermissionDenied);
            assert!(e.message.contains(words), "{e}");
        }
    }
}
