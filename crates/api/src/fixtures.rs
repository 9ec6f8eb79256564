//! Builders for unit tests: `BehaviorProfile::test().learning().build()`,
//! `SecurityAlert::test().severity(Severity::Critical).build()`.

use crate::*;

/// A small body: one process with two exemplars, one file entry, one peer.
pub fn body() -> ProfileBody {
    ProfileBody {
        model_id: Some("kestrel-test-trigram-v1".into()),
        argument_measure: Some(2),
        process_keys: None,
        similarity_threshold: 0.9,
        processes: vec![ProcessEntry {
            image: "webapp:v1".into(),
            parent: "sh".into(),
            exe: "java".into(),
            arguments: vec![
                ArgumentSpec {
                    args: "-jar app.jar".into(),
                    min_similarity: None,
                },
                ArgumentSpec {
                    args: "-jar app.jar --port <num>".into(),
                    min_similarity: Some(0.8),
                },
            ],
        }],
        files: vec![FileEntry {
            image: "webapp:v1".into(),
            process: "java".into(),
            access: "read".into(),
            paths: vec!["/app/*.jar".into(), "/proc/*/status".into()],
        }],
        network: vec![NetworkEntry {
            image: "webapp:v1".into(),
            process: "java".into(),
            direction: "outbound".into(),
            peer: "10.0.0.0/8".into(),
            ports: vec!["5432/tcp".into()],
        }],
    }
}

/// Convergence state in `phase`, since t = 100 s.
pub fn convergence(phase: ConvergencePhase) -> ConvergenceStatus {
    ConvergenceStatus {
        phase,
        phase_since_unix_nanos: 100_000_000_000,
        learning_since_unix_nanos: 0,
        last_growth_unix_nanos: Some(50_000_000_000),
        now_unix_nanos: 120_000_000_000,
        bucket_index: 24,
        buckets: vec![0; 36],
        total_growth: 7,
    }
}

/// Builds a [`BehaviorProfile`].
pub struct ProfileBuilder(BehaviorProfile);

impl BehaviorProfile {
    /// A learned profile of `Deployment/webapp` in `shop`, no status yet.
    pub fn test() -> ProfileBuilder {
        let spec = BehaviorProfileSpec {
            source: ProfileSource::Learned,
            mode: ProfileMode::Auto,
            workload: Some(WorkloadRef::parse("Deployment/webapp")),
            learning: Some(LearningSpec {
                window: Some("1h".into()),
                min_learning_time: Some("2h".into()),
                max_new_per_window: Some(0),
                clean_windows: Some(3),
                buckets_per_window: Some(12),
            }),
            compaction: None,
            baseline: None,
        };
        let mut bp = BehaviorProfile::new("deployment-webapp", spec);
        bp.metadata.namespace = Some("shop".into());
        ProfileBuilder(bp)
    }
}

impl ProfileBuilder {
    fn with_status(mut self, phase: ConvergencePhase) -> Self {
        let c = convergence(phase);
        let learned = (self.0.spec.source == ProfileSource::Learned).then(body);
        let summary = learned
            .as_ref()
            .or(self.0.spec.baseline.as_ref())
            .map(ProfileBody::summary);
        self.0.status = Some(BehaviorProfileStatus {
            observed_generation: Some(1),
            phase: Some(phase.into()),
            conditions: vec![converged_condition(&c)],
            learned,
            convergence: Some(c),
            summary,
            size_bytes: None,
        });
        self.0.measure_size();
        self
    }

    /// Learning, with the learned body.
    pub fn learning(self) -> Self {
        self.with_status(ConvergencePhase::Learning)
    }

    /// Detecting, with the learned body.
    pub fn detecting(self) -> Self {
        self.with_status(ConvergencePhase::Detecting)
    }

    /// Promoted: the body as `spec.baseline`, mode `Detect`.
    pub fn promoted(mut self) -> Self {
        self.0.spec.source = ProfileSource::Promoted;
        self.0.spec.mode = ProfileMode::Detect;
        self.0.spec.baseline = Some(body());
        self
    }

    /// The object.
    pub fn build(self) -> BehaviorProfile {
        self.0
    }
}

/// An alert's content: a miner in `shop/Deployment/webapp`.
pub fn alert_spec() -> SecurityAlertSpec {
    let engine = |weight: f64, score: Option<f64>, reason: &str| EngineScore {
        weight,
        effective_weight: weight,
        score,
        points: weight * score.unwrap_or(0.0) / 100.0,
        reason: reason.into(),
    };
    SecurityAlertSpec {
        id: "00ab12cd34ef5678".into(),
        title: "Crypto miner xmrig in shop/Deployment/webapp".into(),
        severity: Severity::Critical,
        score: 93.5,
        evidence: Evidence {
            namespace: "shop".into(),
            workload: "Deployment/webapp".into(),
            pod: "webapp-7d4b9-x2x7q".into(),
            container_id: "containerd://4f2a".into(),
            node: "node-1".into(),
            image: "registry.example/webapp:v1".into(),
            pid: 4242,
            exe: "/tmp/xmrig".into(),
            args: vec![
                "xmrig".into(),
                "-o".into(),
                "stratum+tcp://pool:4444".into(),
            ],
            args_normalized: "xmrig -o stratum+tcp://pool:<num>".into(),
            process_chain: vec![ProcessAncestor::new("/bin/sh", ["sh", "-c", "x"])],
            signals: vec![
                Signal::UnknownProcess,
                Signal::UnknownPeer {
                    addr: PeerAddress::Ip("10.1.2.3".parse().expect("an address")),
                    port: 4444,
                    proto: Protocol::Tcp,
                    direction: Direction::Outbound,
                },
            ],
            shape: AnomalyShape::new("registry.example/webapp:v1/sh/xmrig", u64::MAX - 7),
        },
        breakdown: ScoreBreakdown {
            rules: engine(40.0, Some(95.0), "rule crypto-miner"),
            deviation: engine(
                30.0,
                Some(51.25),
                "new process (35) by a network tool (25) → 51.3",
            ),
            cluster: engine(25.0, Some(90.0), "1 of 100 replicas"),
            llm: engine(35.0, None, "LLM: unavailable (not configured)"),
            breadth: 0.0,
            total: 93.5,
            threshold: 60.0,
            notes: vec![],
        },
        llm: LlmSummary {
            status: LlmStatus::Unavailable,
            verdict: None,
            explanation: "LLM: unavailable (not configured)".into(),
            tactics: vec![],
            cached: false,
        },
        rule_hits: vec![RuleHitSummary {
            id: "crypto-miner".into(),
            description: "Crypto mining".into(),
            score: 95.0,
            tags: vec!["T1496".into()],
            action: RuleAction::IsolatePod,
        }],
        mitre: vec!["T1496".into()],
        recommendation: Recommendation {
            action: RecommendedAction::IsolatePod,
            summary: "Isolate the pod shop/webapp-7d4b9-x2x7q".into(),
            network_policy: Some("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n".into()),
            hints: vec![],
        },
        incident: IncidentSummary {
            count: 3,
            first_seen_ns: 1_700_000_000_000_000_000,
            last_seen_ns: 1_700_000_060_000_000_000,
            first_seen: rfc3339_ns(1_700_000_000_000_000_000),
            last_seen: rfc3339_ns(1_700_000_060_000_000_000),
            pods: vec!["webapp-7d4b9-x2x7q".into()],
            pods_total: 1,
            activities: 1,
            processes: 1,
            commands: vec!["/tmp/xmrig -o stratum+tcp://pool.minexmr.com:4444".into()],
            files: vec![],
            peers: vec!["10.1.2.3:4444/tcp".into()],
        },
    }
}

/// Builds a [`SecurityAlert`].
pub struct AlertBuilder(SecurityAlertSpec);

impl SecurityAlert {
    /// The miner alert of [`alert_spec`].
    pub fn test() -> AlertBuilder {
        AlertBuilder(alert_spec())
    }
}

impl AlertBuilder {
    /// With another severity.
    pub fn severity(mut self, s: Severity) -> Self {
        self.0.severity = s;
        self
    }

    /// The object (named, namespaced, status open).
    pub fn build(self) -> SecurityAlert {
        SecurityAlert::from_spec(self.0)
    }
}
