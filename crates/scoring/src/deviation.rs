//! The profile-deviation engine: what a converged profile never saw, scored
//! on its own, so that a learned profile raises alerts without a rule hit
//! and without an LLM.
//!
//! Every candidate is a deviation from its workload's profile (the engine
//! only produces candidates in detection). This engine weighs it by four
//! things, each a score from 0 to 100, combined as a noisy-OR
//! (`100 · (1 − Π(1 − sᵢ/100))`, the rule pack's combination: one part gives
//! its own score, independent parts reinforce each other, never above 100):
//!
//! - **what** deviated: a new process, unusual arguments, a new file access
//!   (by kind: a read weighs less than a write), a new peer (by direction);
//! - **where**: the location classes of [`DeviationConfig::locations`]
//!   (credentials, persistence, binaries and libraries, kernel and proc
//!   interfaces, container runtime sockets, logs and shell history, cloud
//!   metadata), matched on the
//!   file path (canonical spelling), the peer's address or socket name, or
//!   the new program's path;
//! - **who**: the actor classes of [`DeviationConfig::actors`] (a shell, an
//!   interpreter, a network tool, a program in a writable directory),
//!   matched on the process's executable, with a score per kind of
//!   deviation (a shell that opens a network connection weighs more than a
//!   shell that reads a file);
//! - **how much**: one process touching many new files or new peers within
//!   [`SweepConfig::window_secs`] is a sweep or a scan
//!   ([`SweepConfig::steps`]).
//!
//! The defaults are set so that a lone deviation in a sensitive class, or by
//! a shell on the network, reaches the default alert threshold (50) by
//! itself, and a new harmless file in the workload's own directories (a
//! write scores 30, a read 15) does not. Every number is configurable under
//! `scoring.deviation`; `docs/scoring.md` has the tables.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use kestrel_events::{Direction, FileAccess, Glob};
use serde::{Deserialize, Serialize};

use crate::candidate::{basename, CandidateAlert};
use crate::combiner::round2;
use crate::error::{Error, Result};
use crate::{PeerAddress, Signal};

/// Scores of what deviated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct WhatScores {
    /// A program the profile never saw under this parent.
    pub new_process: f64,
    /// Arguments unlike every exemplar of a known program.
    pub unusual_arguments: f64,
    /// A new file opened read-only.
    pub file_read: f64,
    /// A new file written, created, renamed or deleted.
    pub file_write: f64,
    /// A new outbound peer.
    pub peer_outbound: f64,
    /// A new inbound peer.
    pub peer_inbound: f64,
    /// A new listening port.
    pub peer_listen: f64,
    /// A failed exec attempt of a path this process never tried (a
    /// missing tool, a `noexec` mount, a file that is not executable).
    pub failed_exec: f64,
}

impl Default for WhatScores {
    fn default() -> Self {
        Self {
            new_process: 35.0,
            unusual_arguments: 25.0,
            file_read: 15.0,
            file_write: 30.0,
            peer_outbound: 30.0,
            peer_inbound: 15.0,
            peer_listen: 35.0,
            failed_exec: 40.0,
        }
    }
}

/// Which file accesses a location class applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Accesses {
    /// Every access.
    #[default]
    Any,
    /// Writes, creations, renames and deletions (not reads).
    Modify,
    /// Deletions and renames only: where writing is the normal business
    /// (logs) and removing is the evasion.
    Remove,
}

impl Accesses {
    /// Whether this class counts a file access of kind `access`.
    pub fn covers(self, access: FileAccess) -> bool {
        match self {
            Accesses::Any => true,
            Accesses::Modify => access != FileAccess::Read,
            Accesses::Remove => matches!(access, FileAccess::Delete | FileAccess::Rename),
        }
    }
}

/// A class of sensitive locations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocationClass {
    /// Name shown in the reason (`credentials`).
    pub name: String,
    /// Its score, 0..=100.
    pub score: f64,
    /// File paths (and new programs' paths, and unix sockets' paths), in the
    /// one glob syntax ([`kestrel_events::glob`]).
    #[serde(default)]
    pub paths: Vec<Glob>,
    /// Which file accesses count (default: any).
    #[serde(default)]
    pub accesses: Accesses,
    /// Peers: addresses or networks (`169.254.169.254`, `fd00:ec2::/64`).
    #[serde(default)]
    pub networks: Vec<String>,
    /// Peers by name (DNS or service names), globs.
    #[serde(default)]
    pub peer_names: Vec<Glob>,
}

/// A class of actors: who deviated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActorClass {
    /// Name shown in the reason (`shell`).
    pub name: String,
    /// Executable names (the last path component), globs (`python*`).
    #[serde(default)]
    pub names: Vec<Glob>,
    /// Executable paths, globs (`/tmp/**`).
    #[serde(default)]
    pub paths: Vec<Glob>,
    /// Score when the deviation is a new process or unusual arguments.
    pub process: f64,
    /// Score when it is a new file access.
    pub file: f64,
    /// Score when it is a new peer.
    pub network: f64,
}

/// Sweeps and scans: many new files or peers from one process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct SweepConfig {
    /// The window new files and peers are counted in, per process (s).
    pub window_secs: u64,
    /// `[count, score]` steps, ascending: from `count` distinct new files
    /// (or peers) in the window, the sweep part scores `score`.
    pub steps: Vec<(u32, f64)>,
    /// Most processes tracked; past it the oldest are forgotten.
    pub max_tracked: usize,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            window_secs: 60,
            steps: vec![(10, 25.0), (30, 50.0), (100, 70.0)],
            max_tracked: 50_000,
        }
    }
}

/// The deviation engine's settings (`scoring.deviation`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviationConfig {
    /// What deviated.
    pub what: WhatScores,
    /// Where: sensitive location classes (the highest matching class counts).
    pub locations: Vec<LocationClass>,
    /// Who: actor classes (the highest matching class counts).
    pub actors: Vec<ActorClass>,
    /// How much: sweeps and scans.
    pub sweep: SweepConfig,
}

fn globs(list: &[&str]) -> Vec<Glob> {
    list.iter()
        .map(|g| Glob::new(g).expect("a default glob is valid"))
        .collect()
}

impl Default for DeviationConfig {
    fn default() -> Self {
        let class = |name: &str, score, accesses, paths: &[&str]| LocationClass {
            name: name.into(),
            score,
            paths: globs(paths),
            accesses,
            networks: Vec::new(),
            peer_names: Vec::new(),
        };
        let actor =
            |name: &str, names: &[&str], paths: &[&str], process, file, network| ActorClass {
                name: name.into(),
                names: globs(names),
                paths: globs(paths),
                process,
                file,
                network,
            };
        Self {
            what: WhatScores::default(),
            locations: vec![
                class(
                    "credentials",
                    50.0,
                    Accesses::Any,
                    &[
                        "/etc/shadow",
                        "/etc/gshadow",
                        "/etc/master.passwd",
                        "/etc/sudoers",
                        "/etc/sudoers.d/**",
                        "/etc/ssl/private/**",
                        "/etc/kubernetes/**",
                        "/root/**/.ssh/**",
                        "/root/.ssh/**",
                        "/home/*/.ssh/**",
                        "**/.ssh/id_*",
                        "**/.aws/credentials",
                        "**/.aws/config",
                        "**/.kube/config",
                        "**/.docker/config.json",
                        "**/.git-credentials",
                        "**/.netrc",
                        "**/.pgpass",
                        "**/.bash_history",
                        "/var/run/secrets/kubernetes.io/serviceaccount/**",
                        "/run/secrets/kubernetes.io/serviceaccount/**",
                        "/var/run/secrets/eks.amazonaws.com/**",
                        "/var/lib/kubelet/pki/**",
                        "/proc/*/environ",
                    ],
                ),
                class(
                    "persistence",
                    50.0,
                    Accesses::Modify,
                    &[
                        "/etc/crontab",
                        "/etc/cron.*/**",
                        "/var/spool/cron/**",
                        "/etc/systemd/**",
                        "/lib/systemd/**",
                        "/usr/lib/systemd/**",
                        "/etc/init.d/**",
                        "/etc/rc.local",
                        "/etc/rc*.d/**",
                        "/etc/profile",
                        "/etc/profile.d/**",
                        "/etc/bash.bashrc",
                        "/etc/environment",
                        "/etc/ld.so.preload",
                        "/etc/ld.so.conf.d/**",
                        "/etc/passwd",
                        "/etc/group",
                        "/etc/shadow",
                        "/etc/sudoers",
                        "/etc/sudoers.d/**",
                        "/etc/pam.d/**",
                        "/etc/ssh/**",
                        "**/.ssh/authorized_keys*",
                        "**/.bashrc",
                        "**/.bash_profile",
                        "**/.bash_login",
                        "**/.profile",
                        "**/.zshrc",
                        "/etc/update-motd.d/**",
                        "/etc/xdg/autostart/**",
                        "**/.config/autostart/**",
                    ],
                ),
                class(
                    "binaries and libraries",
                    45.0,
                    Accesses::Modify,
                    &[
                        "/bin/**",
                        "/sbin/**",
                        "/usr/bin/**",
                        "/usr/sbin/**",
                        "/usr/local/bin/**",
                        "/usr/local/sbin/**",
                        "/lib/**",
                        "/lib64/**",
                        "/usr/lib/**",
                        "/usr/lib64/**",
                        "/usr/local/lib/**",
                        "/usr/libexec/**",
                    ],
                ),
                class(
                    "kernel and proc interfaces",
                    50.0,
                    Accesses::Any,
                    &[
                        "/proc/kcore",
                        "/proc/kallsyms",
                        "/proc/sysrq-trigger",
                        "/proc/*/mem",
                        "/proc/*/map_files/**",
                        "/proc/*/root/**",
                        "/dev/mem",
                        "/dev/kmem",
                        "/dev/port",
                        "/sys/kernel/debug/**",
                        "/sys/kernel/security/**",
                        "/sys/fs/cgroup/**/release_agent",
                        "/sys/fs/cgroup/**/notify_on_release",
                        "/sys/firmware/**",
                        "/boot/**",
                        "/lib/modules/**",
                        "/dev/sd*",
                        "/dev/nvme*",
                        "/dev/vd*",
                        "/dev/xvd*",
                        "/dev/dm-*",
                    ],
                ),
                class(
                    "kernel and proc interfaces (write)",
                    50.0,
                    Accesses::Modify,
                    &[
                        "/proc/sys/**",
                        "/proc/*/attr/**",
                        "/proc/*/oom_score_adj",
                        "/sys/**",
                        "/proc/*/uid_map",
                        "/proc/*/gid_map",
                        "/proc/*/setgroups",
                    ],
                ),
                class(
                    "container runtime sockets",
                    55.0,
                    Accesses::Any,
                    &[
                        "/var/run/docker.sock",
                        "/run/docker.sock",
                        "/var/run/docker/**",
                        "/run/containerd/**",
                        "/var/run/containerd/**",
                        "/run/crio/**",
                        "/var/run/crio/**",
                        "/run/k3s/**",
                        "/run/podman/**",
                        "/var/run/cri-dockerd.sock",
                        "**/dockershim.sock",
                        "/var/lib/kubelet/**",
                        "/run/runc/**",
                    ],
                ),
                class(
                    "logs and shell history",
                    45.0,
                    Accesses::Remove,
                    &[
                        "/var/log/**",
                        "/var/adm/**",
                        "/var/run/utmp",
                        "/run/utmp",
                        "**/.*_history",
                        "**/.history",
                        "**/.lesshst",
                        "**/.viminfo",
                    ],
                ),
                LocationClass {
                    name: "cloud metadata".into(),
                    score: 50.0,
                    paths: Vec::new(),
                    accesses: Accesses::Any,
                    networks: [
                        "169.254.169.254/32",
                        "169.254.170.2/32",
                        "100.100.100.200/32",
                        "fd00:ec2::254/128",
                    ]
                    .into_iter()
                    .map(String::from)
                    .collect(),
                    peer_names: globs(&[
                        "metadata.google.internal",
                        "metadata",
                        "instance-data",
                        "instance-data.*",
                    ]),
                },
            ],
            actors: vec![
                actor(
                    "a shell",
                    &[
                        "sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish",
                        "rbash",
                    ],
                    &[],
                    25.0,
                    10.0,
                    40.0,
                ),
                actor(
                    "an interpreter",
                    &[
                        "python",
                        "python[0-9]*",
                        "perl",
                        "perl5*",
                        "ruby",
                        "ruby[0-9]*",
                        "php",
                        "php[0-9]*",
                        "lua",
                        "lua[0-9]*",
                        "luajit",
                        "node",
                        "nodejs",
                        "deno",
                        "bun",
                        "tclsh*",
                        "expect",
                        "pwsh",
                        "awk",
                        "gawk",
                        "mawk",
                        "nawk",
                        "busybox",
                    ],
                    &[],
                    25.0,
                    10.0,
                    30.0,
                ),
                actor(
                    "a network tool",
                    &[
                        "nc", "ncat", "netcat", "nc.*", "socat", "curl", "wget", "nmap", "masscan",
                        "zmap", "telnet", "ssh", "scp", "sftp", "rsync", "ftp", "tftp", "openssl",
                        "dig", "nslookup", "host", "ping", "tcpdump", "tshark", "aria2c", "fetch",
                        "kubectl", "crictl", "docker", "ctr", "nerdctl", "nsenter",
                    ],
                    &[],
                    25.0,
                    10.0,
                    20.0,
                ),
                actor(
                    "a program in a writable directory",
                    &[],
                    &[
                        "/tmp/**",
                        "/var/tmp/**",
                        "/dev/shm/**",
                        "/run/user/**",
                        "/var/run/user/**",
                        "/dev/mqueue/**",
                        "/proc/*/fd/*",
                        "/proc/self/fd/*",
                        "memfd:*",
                    ],
                    35.0,
                    25.0,
                    35.0,
                ),
            ],
            sweep: SweepConfig::default(),
        }
    }
}

impl DeviationConfig {
    /// Checks scores (0..=100), networks and the sweep steps.
    pub fn validate(&self) -> Result<()> {
        let pct = |what: &str, v: f64| {
            if (0.0..=100.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::Config(format!(
                    "deviation: {what} must be within 0..=100, got {v}"
                )))
            }
        };
        let w = &self.what;
        for (n, v) in [
            ("what.newProcess", w.new_process),
            ("what.unusualArguments", w.unusual_arguments),
            ("what.fileRead", w.file_read),
            ("what.fileWrite", w.file_write),
            ("what.peerOutbound", w.peer_outbound),
            ("what.peerInbound", w.peer_inbound),
            ("what.peerListen", w.peer_listen),
            ("what.failedExec", w.failed_exec),
        ] {
            pct(n, v)?;
        }
        for l in &self.locations {
            pct(&format!("location {:?} score", l.name), l.score)?;
            for n in &l.networks {
                parse_net(n)
                    .map_err(|e| Error::Config(format!("deviation: location {:?}: {e}", l.name)))?;
            }
        }
        for a in &self.actors {
            for (k, v) in [
                ("process", a.process),
                ("file", a.file),
                ("network", a.network),
            ] {
                pct(&format!("actor {:?} {k}", a.name), v)?;
            }
        }
        let mut last = 0;
        for &(n, s) in &self.sweep.steps {
            pct("sweep step score", s)?;
            if n <= last {
                return Err(Error::Config(
                    "deviation: sweep.steps counts must be ascending and above 0".into(),
                ));
            }
            last = n;
        }
        Ok(())
    }
}

fn parse_net(s: &str) -> std::result::Result<IpNet, String> {
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or a network"))
}

/// The deviation engine's part of one candidate's score.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviationPart {
    /// 0..=100.
    pub score: f64,
    /// What, where, who and how much, in words.
    pub reason: String,
}

/// New files and peers one process touched within the window.
#[derive(Debug, Default)]
struct Sweep {
    started_ns: u64,
    last_ns: u64,
    files: std::collections::HashSet<String>,
    peers: std::collections::HashSet<String>,
}

/// Scores candidates by how and where they deviate (see the module docs).
#[derive(Debug)]
pub struct DeviationEngine {
    config: DeviationConfig,
    networks: Vec<Vec<IpNet>>,
    sweeps: HashMap<(String, u32), Sweep>,
}

impl DeviationEngine {
    /// An engine with `config` (validated).
    pub fn new(config: DeviationConfig) -> Result<Self> {
        config.validate()?;
        let networks = config
            .locations
            .iter()
            .map(|l| {
                l.networks
                    .iter()
                    .filter_map(|n| parse_net(n).ok())
                    .collect()
            })
            .collect();
        Ok(Self {
            config,
            networks,
            sweeps: HashMap::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &DeviationConfig {
        &self.config
    }

    /// Scores one candidate and counts its new files and peers towards its
    /// process's sweep.
    pub fn observe(&mut self, c: &CandidateAlert, now_ns: u64) -> DeviationPart {
        let mut parts: Vec<(f64, String)> = Vec::new();
        for s in &c.signals {
            let (what, label, kind) = self.what(s);
            let mut score = what;
            let mut words = format!("{label} ({})", fmt(what));
            if let Some((name, v)) = self.location(c, s) {
                score = noisy_or([score, v]);
                words.push_str(&format!(" in {name} ({})", fmt(v)));
            }
            if let Some((name, v)) = self.actor(&c.exe, kind) {
                score = noisy_or([score, v]);
                words.push_str(&format!(" by {name} ({})", fmt(v)));
            }
            parts.push((score, words));
        }
        let mut score = noisy_or(parts.iter().map(|p| p.0));
        let mut reason = parts
            .into_iter()
            .map(|p| p.1)
            .collect::<Vec<_>>()
            .join("; ");
        if let Some((n, what, v)) = self.sweep(c, now_ns) {
            score = noisy_or([score, v]);
            reason.push_str(&format!(
                "; {n} new {what} by this process in {}s ({})",
                self.config.sweep.window_secs,
                fmt(v)
            ));
        }
        DeviationPart {
            score: round2(score),
            reason: format!("{reason} → {}", fmt(score)),
        }
    }

    /// Forgets processes idle for longer than the window.
    pub fn expire(&mut self, now_ns: u64) {
        let window = self.config.sweep.window_secs.saturating_mul(1_000_000_000);
        self.sweeps
            .retain(|_, s| now_ns.saturating_sub(s.last_ns) <= window);
    }

    fn what(&self, s: &Signal) -> (f64, &'static str, Kind) {
        let w = &self.config.what;
        match s {
            Signal::UnknownProcess => (w.new_process, "new process", Kind::Process),
            Signal::UnusualArguments { .. } => {
                (w.unusual_arguments, "unusual arguments", Kind::Process)
            }
            Signal::UnknownFile { access, .. } => match access {
                FileAccess::Read => (w.file_read, "new file read", Kind::File),
                _ => (w.file_write, "new file write", Kind::File),
            },
            Signal::FailedExec { .. } => (w.failed_exec, "failed exec", Kind::Process),
            Signal::UnknownPeer { direction, .. } => match direction {
                Direction::Outbound => (w.peer_outbound, "new outbound peer", Kind::Network),
                Direction::Inbound => (w.peer_inbound, "new inbound peer", Kind::Network),
                Direction::Listen => (w.peer_listen, "new listening port", Kind::Network),
            },
        }
    }

    /// The highest-scoring location class the signal falls in.
    fn location(&self, c: &CandidateAlert, s: &Signal) -> Option<(&str, f64)> {
        let hit = |i: usize, l: &LocationClass| -> bool {
            match s {
                Signal::UnknownFile { path, access, .. } => {
                    l.accesses.covers(*access) && l.paths.iter().any(|g| g.is_match(path))
                }
                Signal::UnknownProcess => {
                    // a new program that lives in a sensitive place
                    // (`/proc/1/root/...`, a runtime directory)
                    l.accesses == Accesses::Any && l.paths.iter().any(|g| g.is_match(&c.exe))
                }
                // an attempt to run something in a sensitive place
                Signal::FailedExec { path, .. } => l.paths.iter().any(|g| g.is_match(path)),
                Signal::UnusualArguments { .. } => false,
                Signal::UnknownPeer { addr, .. } => match addr {
                    PeerAddress::Ip(ip) => self.networks[i].iter().any(|n| n.contains(ip)),
                    PeerAddress::Name(name) => match name.strip_prefix("unix:") {
                        Some(path) => l.paths.iter().any(|g| g.is_match(path)),
                        None => l.peer_names.iter().any(|g| g.is_match(name)),
                    },
                },
            }
        };
        self.config
            .locations
            .iter()
            .enumerate()
            .filter(|(i, l)| hit(*i, l))
            .map(|(_, l)| (l.name.as_str(), l.score))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// The highest-scoring actor class of the process, for this kind of
    /// deviation.
    fn actor(&self, exe: &str, kind: Kind) -> Option<(&str, f64)> {
        let name = basename(exe);
        self.config
            .actors
            .iter()
            .filter(|a| {
                a.names.iter().any(|g| g.is_match(name)) || a.paths.iter().any(|g| g.is_match(exe))
            })
            .map(|a| {
                let v = match kind {
                    Kind::Process => a.process,
                    Kind::File => a.file,
                    Kind::Network => a.network,
                };
                (a.name.as_str(), v)
            })
            .filter(|(_, v)| *v > 0.0)
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Counts the candidate's new files and peers for its process; the
    /// sweep step reached, if any: (count, "files"/"peers", score).
    fn sweep(&mut self, c: &CandidateAlert, now_ns: u64) -> Option<(usize, &'static str, f64)> {
        let cfg = &self.config.sweep;
        let window = cfg.window_secs.saturating_mul(1_000_000_000);
        let key = (c.container_id.clone(), c.pid);
        if !self.sweeps.contains_key(&key) && self.sweeps.len() >= cfg.max_tracked {
            let cutoff = now_ns.saturating_sub(window);
            self.sweeps.retain(|_, s| s.last_ns >= cutoff);
            if self.sweeps.len() >= cfg.max_tracked {
                // still full of live processes: forget the oldest half
                let mut ages: Vec<u64> = self.sweeps.values().map(|s| s.last_ns).collect();
                ages.sort_unstable();
                let median = ages[ages.len() / 2];
                self.sweeps.retain(|_, s| s.last_ns > median);
            }
        }
        let sw = self.sweeps.entry(key).or_default();
        if sw.started_ns == 0 || now_ns.saturating_sub(sw.started_ns) > window {
            *sw = Sweep {
                started_ns: now_ns.max(1),
                ..Sweep::default()
            };
        }
        sw.last_ns = now_ns;
        for s in &c.signals {
            match s {
                // bounded: past 100 000 the top step is long reached
                Signal::UnknownFile { path, .. } if sw.files.len() < 100_000 => {
                    sw.files.insert(path.clone());
                }
                Signal::UnknownPeer { addr, port, .. } if sw.peers.len() < 100_000 => {
                    sw.peers.insert(format!("{addr}:{port}"));
                }
                _ => {}
            }
        }
        let (n, what) = if sw.files.len() >= sw.peers.len() {
            (sw.files.len(), "files")
        } else {
            (sw.peers.len(), "peers")
        };
        cfg.steps
            .iter()
            .rev()
            .find(|(at, _)| n >= *at as usize)
            .map(|&(_, v)| (n, what, v))
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Process,
    File,
    Network,
}

/// `100 · (1 − Π(1 − sᵢ/100))`.
fn noisy_or(scores: impl IntoIterator<Item = f64>) -> f64 {
    let keep: f64 = scores
        .into_iter()
        .map(|s| 1.0 - (s / 100.0).clamp(0.0, 1.0))
        .product();
    100.0 * (1.0 - keep)
}

fn fmt(v: f64) -> String {
    // via two decimals, so that 51.249999… (a noisy-OR of 35 and 25) shows
    // as 51.3, like the 51.25 it is
    let r = (round2(v) * 10.0).round() / 10.0;
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

#[cfg(test)]
mod tests;
