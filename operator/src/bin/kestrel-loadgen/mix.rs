//! The simulated agents' traffic: what an edge filter forwards from a node
//! running replicas of five kinds of application.
//!
//! Every workload is one of five archetypes (nginx front end, node.js API,
//! python queue worker, cron shell job, JVM service), each with its own image,
//! process tree and a weighted list of templates for exec, file and network
//! events. A template's variable parts are the ones real traffic varies in:
//!
//! - arguments carry timestamps, epochs, request and job ids (UUIDs, hex),
//!   pids and small counters, which `kestrel_embed::normalize` collapses, so
//!   each template has a bounded number of normalised shapes (served by the
//!   embedding cache after the first sight, as in production);
//! - file paths vary in cache, temp, upload and asset file names under a few
//!   directory trees (high cardinality: the trie collapses them into `*`) and
//!   in small bounded sets (library files, log rotation numbers);
//! - peers are a few service addresses, plus inbound clients from a /22 of
//!   pod addresses (which the trie collapses into networks).
//!
//! In detection a controlled fraction of events is anomalous ([`Mix::next`]):
//! a miner exec (`xmrig` with stratum arguments), a write under `/etc`, or a
//! connection to a mining pool.

use kestrel_events::{
    Ancestor, Argv, ByteStr, ContainerRef, Endpoint, Event, EventKind, Exec, FileOp, FileOpKind,
    Namespaces, NetOp, NetOpKind, Runtime, Task,
};
use kestrel_proto::WorkloadEvent;
use std::fmt::Write as _;
use std::net::IpAddr;

/// Replicas per workload (spread round-robin over the agents).
pub const REPLICAS: usize = 3;

const O_RDONLY: u32 = 0;
const O_WRONLY_APPEND: u32 = 0o2001;
const O_CREATE: u32 = 0o1101; // O_WRONLY | O_CREAT | O_TRUNC
const O_CREATE_EXCL: u32 = 0o302; // O_RDWR | O_CREAT | O_EXCL

/// An exec: parent comm, the path given to execve, argv (arguments separated
/// by `|`, so one argument may hold spaces).
struct ExecT {
    weight: u32,
    parent: &'static str,
    filename: &'static str,
    argv: &'static str,
}

/// A file open by `comm`.
struct FileT {
    weight: u32,
    comm: &'static str,
    path: &'static str,
    flags: u32,
}

/// A connect (outbound to `addr`) or an accept (inbound from `addr` on
/// `port`); TCP, except UDP for port 53.
struct NetT {
    weight: u32,
    comm: &'static str,
    accept: bool,
    addr: &'static str,
    port: u16,
}

struct Archetype {
    name: &'static str,
    image: &'static str,
    /// Comm and argv of the container's main process (the chain's root).
    main: &'static str,
    main_argv: &'static str,
    execs: &'static [ExecT],
    files: &'static [FileT],
    nets: &'static [NetT],
}

const fn exec(
    weight: u32,
    parent: &'static str,
    filename: &'static str,
    argv: &'static str,
) -> ExecT {
    ExecT {
        weight,
        parent,
        filename,
        argv,
    }
}

const fn file(weight: u32, comm: &'static str, path: &'static str, flags: u32) -> FileT {
    FileT {
        weight,
        comm,
        path,
        flags,
    }
}

const fn connect(weight: u32, comm: &'static str, addr: &'static str, port: u16) -> NetT {
    NetT {
        weight,
        comm,
        accept: false,
        addr,
        port,
    }
}

const fn accept(weight: u32, comm: &'static str, addr: &'static str, port: u16) -> NetT {
    NetT {
        weight,
        comm,
        accept: true,
        addr,
        port,
    }
}

// Templates: {num} any number, {pid}, {epoch}, {ts} ISO time, {uuid},
// {hex} 16 hex digits, {tmp} 8 random letters and digits, {d:N} 0..N,
// {pick:a,b,c} one of the words.
const ARCHETYPES: [Archetype; 5] = [
    Archetype {
        name: "web",
        image: "docker.io/library/nginx:1.27-alpine",
        main: "nginx",
        main_argv: "nginx: worker process",
        execs: &[
            exec(3, "runc:[2:INIT]", "/bin/sh", "sh|-c|wget -q -O /dev/null http://127.0.0.1:8080/healthz?probe={epoch}"),
            exec(1, "sh", "/bin/gzip", "gzip|-9|/var/log/nginx/access.log.{epoch}"),
        ],
        files: &[
            file(10, "nginx", "/var/cache/nginx/proxy_temp/{d:10}/{d:100}/{num}", O_CREATE_EXCL),
            file(6, "nginx", "/usr/share/nginx/html/assets/app-{hex}.js", O_RDONLY),
            file(3, "nginx", "/usr/share/nginx/html/{pick:index.html,favicon.ico,robots.txt,manifest.json}", O_RDONLY),
            file(2, "nginx", "/var/log/nginx/{pick:access.log,error.log}", O_WRONLY_APPEND),
        ],
        nets: &[
            accept(10, "nginx", "10.244.{d:4}.{d:250}", 8080),
            connect(6, "nginx", "10.96.40.{d:6}", 8080),
        ],
    },
    Archetype {
        name: "api",
        image: "registry.example.com/shop/api:2.14.1",
        main: "node",
        main_argv: "node|/srv/server.js|--port|3000",
        execs: &[
            exec(3, "node", "/bin/sh", "sh|-c|node /srv/scripts/warm-cache.js --shard {d:8} --request-id {uuid}"),
            exec(2, "runc:[2:INIT]", "/usr/local/bin/node", "node|/srv/scripts/ready.js|--deadline={epoch}|--timeout-ms={d:5000}"),
        ],
        files: &[
            file(10, "node", "/srv/node_modules/{pick:express,lodash,pg,ioredis,axios,debug,ms,qs,uuid,zod}/{pick:index.js,package.json,lib/utils.js}", O_RDONLY),
            file(6, "node", "/tmp/upload_{hex}", O_CREATE_EXCL),
            file(2, "node", "/srv/logs/api.log", O_WRONLY_APPEND),
        ],
        nets: &[
            connect(8, "node", "10.96.0.10", 53),
            connect(8, "node", "10.96.12.{d:3}", 6379),
            connect(4, "node", "{pick:52.94.1.10,52.94.1.11,140.82.112.3}", 443),
        ],
    },
    Archetype {
        name: "worker",
        image: "registry.example.com/shop/worker:0.9.3",
        main: "python3",
        main_argv: "python3|/app/worker.py|--queue|jobs",
        execs: &[
            exec(5, "python3", "/usr/local/bin/python3", "python3|/app/worker.py|--queue|jobs|--job-id|{uuid}|--attempt|{d:3}"),
            exec(2, "python3", "/usr/bin/pg_dump", "pg_dump|-h|10.96.3.4|-U|app|--table=events_{d:20}|--file=/tmp/dump-{epoch}.sql"),
        ],
        files: &[
            file(8, "python3", "/tmp/tmp{tmp}", O_CREATE_EXCL),
            file(8, "python3", "/app/data/{uuid}.json", O_RDONLY),
            file(4, "python3", "/usr/local/lib/python3.12/{pick:json,http,email,encodings,logging}/__init__.py", O_RDONLY),
        ],
        nets: &[
            connect(8, "python3", "10.96.3.4", 5432),
            connect(6, "python3", "10.96.12.7", 6379),
        ],
    },
    Archetype {
        name: "batch",
        image: "registry.example.com/ops/backup:1.3",
        main: "crond",
        main_argv: "crond|-f|-l|2",
        execs: &[
            exec(4, "crond", "/bin/sh", "sh|-c|/scripts/backup.sh --since {ts} --out /backup/db-{epoch}.sql.gz"),
            exec(3, "sh", "/bin/date", "date|+%s"),
            exec(3, "sh", "/usr/bin/curl", "curl|-fsS|-X|POST|http://pushgateway.monitoring:9091/metrics/job/backup/instance/{hex}"),
            exec(2, "sh", "/bin/gzip", "gzip|-c|/backup/db-{epoch}.sql"),
        ],
        files: &[
            file(6, "sh", "/backup/db-{epoch}.sql.gz", O_CREATE),
            file(4, "sh", "/scripts/backup.sh", O_RDONLY),
            file(3, "gzip", "/backup/db-{epoch}.sql", O_RDONLY),
        ],
        nets: &[connect(4, "curl", "10.96.9.9", 9091)],
    },
    Archetype {
        name: "jvm",
        image: "registry.example.com/shop/orders:5.2.0",
        main: "java",
        main_argv: "java|-XX:MaxRAMPercentage=75|-jar|/app/orders.jar",
        execs: &[
            exec(3, "runc:[2:INIT]", "/bin/sh", "sh|-c|curl -fsS http://localhost:8080/actuator/health --max-time {d:5}"),
            exec(1, "java", "/bin/sh", "sh|-c|jcmd {pid} GC.heap_info"),
        ],
        files: &[
            file(8, "java", "/proc/self/{pick:stat,status,statm,limits}", O_RDONLY),
            file(8, "java", "/tmp/tomcat.8080.{num}/work/Tomcat/localhost/ROOT/upload_{hex}.tmp", O_CREATE_EXCL),
            file(6, "java", "/app/logs/orders.{d:30}.log", O_WRONLY_APPEND),
            file(4, "java", "/app/lib/{pick:spring-core,spring-web,jackson-databind,netty-buffer,HikariCP,postgresql}-{d:3}.jar", O_RDONLY),
        ],
        nets: &[
            accept(10, "java", "10.244.{d:4}.{d:250}", 8080),
            connect(6, "java", "10.96.3.4", 5432),
        ],
    },
];

/// Small, fast, seeded generator (SplitMix64); not for secrets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    /// The next 64 random bits.
    pub fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.u64()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        let unit = (self.u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }
}

/// The name of workload `w` (`web-00`, `api-01`, …).
pub fn workload_name(w: usize) -> String {
    format!("{}-{w:02}", ARCHETYPES[w % ARCHETYPES.len()].name)
}

/// The image of workload `w`.
pub fn workload_image(w: usize) -> &'static str {
    ARCHETYPES[w % ARCHETYPES.len()].image
}

/// Container id of replica `r` of workload `w`: 64 hex digits, as
/// containerd's, the first 16 shared by the workload's replicas.
fn container_id(w: usize, r: usize) -> String {
    let mut rng = Rng::new((w * 1000 + r) as u64);
    format!(
        "{}{:016x}{:016x}{:016x}",
        workload_prefix(w),
        rng.u64(),
        rng.u64(),
        rng.u64()
    )
}

fn workload_prefix(w: usize) -> String {
    format!("{:016x}", Rng::new(w as u64 + 0xc0ffee).u64())
}

/// The container-id glob of workload `w` in the operator's config.
pub fn workload_glob(w: usize) -> String {
    format!("{}*", workload_prefix(w))
}

struct Container {
    workload: String,
    image: &'static str,
    arch: &'static Archetype,
    id: String,
    cgroup: u64,
    main_pid: u32,
}

/// One agent's event source: the replicas scheduled on its node.
pub struct Mix {
    rng: Rng,
    containers: Vec<Container>,
    ts_ns: u64,
    scratch: String,
}

/// Anomalous events, per kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct Anomalies {
    /// Miner execs.
    pub exec: u64,
    /// Writes under `/etc`.
    pub etc_write: u64,
    /// Connections to a mining pool.
    pub pool_connect: u64,
}

impl Anomalies {
    /// All kinds together.
    pub fn total(&self) -> u64 {
        self.exec + self.etc_write + self.pool_connect
    }
}

impl Mix {
    /// The replicas of `workloads` workloads that agent `agent` of `agents`
    /// hosts (replica `r` of workload `w` runs on agent `(w·REPLICAS + r) mod agents`).
    pub fn new(agent: usize, agents: usize, workloads: usize, seed: u64) -> Self {
        let mut containers = Vec::new();
        for w in 0..workloads {
            for r in 0..REPLICAS {
                if (w * REPLICAS + r) % agents.max(1) != agent {
                    continue;
                }
                let arch = &ARCHETYPES[w % ARCHETYPES.len()];
                containers.push(Container {
                    workload: workload_name(w),
                    image: arch.image,
                    arch,
                    id: container_id(w, r),
                    cgroup: 10_000 + (w * REPLICAS + r) as u64,
                    main_pid: 20_000 + (w * REPLICAS + r) as u32 * 97,
                });
            }
        }
        Mix {
            rng: Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(agent as u64)),
            containers,
            ts_ns: 1_000_000_000,
            scratch: String::new(),
        }
    }

    /// The next forwarded event; with probability `anomaly` an anomalous one
    /// (counted in `seen`).
    pub fn next(&mut self, anomaly: f64, seen: &mut Anomalies) -> Option<WorkloadEvent> {
        if self.containers.is_empty() {
            return None;
        }
        let c = self.rng.below(self.containers.len() as u64) as usize;
        self.ts_ns += 1 + self.rng.below(20_000);
        if anomaly > 0.0 && self.rng.chance(anomaly) {
            return Some(self.anomalous(c, seen));
        }
        let arch = self.containers[c].arch;
        let total: u32 = arch.execs.iter().map(|e| e.weight).sum::<u32>()
            + arch.files.iter().map(|f| f.weight).sum::<u32>()
            + arch.nets.iter().map(|n| n.weight).sum::<u32>();
        let mut pick = self.rng.below(u64::from(total)) as u32;
        for e in arch.execs {
            if pick < e.weight {
                return Some(self.exec(c, e.parent, e.filename, e.argv));
            }
            pick -= e.weight;
        }
        for f in arch.files {
            if pick < f.weight {
                return Some(self.file(c, f.comm, f.path, f.flags));
            }
            pick -= f.weight;
        }
        for n in arch.nets {
            if pick < n.weight {
                return Some(self.net(c, n));
            }
            pick -= n.weight;
        }
        None
    }

    fn anomalous(&mut self, c: usize, seen: &mut Anomalies) -> WorkloadEvent {
        match self.rng.below(3) {
            0 => {
                seen.exec += 1;
                self.exec(
                    c,
                    "sh",
                    "/tmp/.cache/xmrig",
                    "xmrig|-o|stratum+tcp://pool.minexmr.com:4444|-u|4{hex}{hex}{hex}|-p|x|--donate-level|1",
                )
            }
            1 => {
                seen.etc_write += 1;
                let comm = self.containers[c].arch.main;
                self.file(
                    c,
                    comm,
                    "/etc/{pick:ld.so.preload,cron.d/sync,profile.d/env.sh}",
                    O_CREATE,
                )
            }
            _ => {
                seen.pool_connect += 1;
                let comm = self.containers[c].arch.main;
                self.net(
                    c,
                    &NetT {
                        weight: 1,
                        comm,
                        accept: false,
                        addr: "45.9.148.{d:250}",
                        port: 4444,
                    },
                )
            }
        }
    }

    fn expand(&mut self, template: &str) -> String {
        let mut out = String::with_capacity(template.len() + 32);
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            let token = &rest[open + 1..open + close];
            self.token(token, &mut out);
            rest = &rest[open + close + 1..];
        }
        out.push_str(rest);
        out
    }

    fn token(&mut self, token: &str, out: &mut String) {
        let r = &mut self.rng;
        let _ = match token {
            "num" => write!(out, "{}", r.below(10_000_000)),
            "pid" => write!(out, "{}", 2 + r.below(4_000_000)),
            "epoch" => write!(out, "{}", 1_764_000_000 + r.below(10_000_000)),
            "ts" => write!(
                out,
                "2026-11-{:02}T{:02}:{:02}:{:02}Z",
                1 + r.below(30),
                r.below(24),
                r.below(60),
                r.below(60)
            ),
            "uuid" => {
                let (a, b) = (r.u64(), r.u64());
                write!(
                    out,
                    "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
                    a >> 32,
                    (a >> 16) & 0xffff,
                    a & 0xfff,
                    0x8000 | (b >> 48) & 0x3fff,
                    b & 0xffff_ffff_ffff
                )
            }
            "hex" => write!(out, "{:016x}", r.u64()),
            "tmp" => {
                const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";
                for _ in 0..8 {
                    out.push(ALNUM[r.below(ALNUM.len() as u64) as usize] as char);
                }
                Ok(())
            }
            t => {
                if let Some(n) = t.strip_prefix("d:") {
                    write!(out, "{}", r.below(n.parse().unwrap_or(10)))
                } else if let Some(words) = t.strip_prefix("pick:") {
                    let n = words.split(',').count() as u64;
                    let i = r.below(n) as usize;
                    out.push_str(words.split(',').nth(i).unwrap_or_default());
                    Ok(())
                } else {
                    out.push_str(t);
                    Ok(())
                }
            }
        };
    }

    fn base(&mut self, c: usize, pid: u32, ppid: u32, comm: &str, kind: EventKind) -> Event {
        let ct = &self.containers[c];
        Event {
            ts_ns: self.ts_ns,
            cgroup_id: ct.cgroup,
            task: Some(Task {
                pid,
                tid: pid,
                ppid,
                uid: 1000,
                comm: comm.into(),
            }),
            ns: Namespaces {
                pid: 4_026_532_000 + ct.cgroup as u32,
                mnt: 4_026_533_000 + ct.cgroup as u32,
            },
            container: Some(ContainerRef {
                id: ct.id.clone(),
                runtime: Runtime::Containerd,
            }),
            kind,
        }
    }

    fn root(&self, c: usize) -> Ancestor {
        let ct = &self.containers[c];
        Ancestor {
            pid: ct.main_pid,
            exe: ct.arch.main.into(),
            argv: ct.arch.main_argv.split('|').map(String::from).collect(),
        }
    }

    fn wrap(
        &self,
        c: usize,
        event: Event,
        process: Ancestor,
        chain: Vec<Ancestor>,
    ) -> WorkloadEvent {
        let ct = &self.containers[c];
        WorkloadEvent {
            workload: ct.workload.clone(),
            image: ct.image.into(),
            event,
            process: Some(process),
            chain,
        }
    }

    fn exec(&mut self, c: usize, parent: &str, filename: &str, argv: &str) -> WorkloadEvent {
        let expanded = self.expand(argv);
        let args: Vec<ByteStr> = expanded.split('|').map(ByteStr::from).collect();
        let main_pid = self.containers[c].main_pid;
        let pid = main_pid + 1 + self.rng.below(30_000) as u32;
        let ppid = pid - 1;
        let exe = filename.rsplit('/').next().unwrap_or(filename);
        let size = args.iter().map(|a| a.as_bytes().len() as u32 + 1).sum();
        let kind = EventKind::Exec(Exec {
            filename: filename.into(),
            exe: exe.into(),
            parent_comm: parent.into(),
            ns_pid: pid - main_pid + 1,
            argv: Argv {
                args,
                size,
                truncated: false,
                read_failed: false,
            },
            from_proc_scan: false,
            dir: None,
        });
        let event = self.base(c, pid, ppid, exe, kind);
        let process = Ancestor {
            pid,
            exe: exe.into(),
            argv: expanded.split('|').map(String::from).collect(),
        };
        let chain = vec![
            Ancestor {
                pid: ppid,
                exe: parent.into(),
                argv: vec![parent.into()],
            },
            self.root(c),
        ];
        self.wrap(c, event, process, chain)
    }

    fn file(&mut self, c: usize, comm: &str, path: &str, flags: u32) -> WorkloadEvent {
        self.scratch = self.expand(path);
        let path = ByteStr::from(self.scratch.as_str());
        let main_pid = self.containers[c].main_pid;
        let pid = main_pid + self.rng.below(4) as u32;
        let kind = EventKind::File(FileOp {
            op: FileOpKind::Open,
            syscall_nr: 257,
            dfd: -100,
            path,
            new_path: None,
            new_dfd: None,
            flags,
            mode: if flags & 0o100 != 0 { 0o644 } else { 0 },
            truncated: false,
            read_failed: false,
            dir: None,
            new_dir: None,
        });
        let event = self.base(c, pid, main_pid, comm, kind);
        let mut process = self.root(c);
        process.pid = pid;
        process.exe = comm.into();
        let chain = vec![self.root(c)];
        self.wrap(c, event, process, chain)
    }

    fn net(&mut self, c: usize, n: &NetT) -> WorkloadEvent {
        let addr: IpAddr = self
            .expand(n.addr)
            .parse()
            .unwrap_or(IpAddr::from([10, 0, 0, 1]));
        let main_pid = self.containers[c].main_pid;
        let pid = main_pid + self.rng.below(4) as u32;
        let ephemeral = 32_768 + self.rng.below(28_000) as u16;
        let pod_ip = IpAddr::from([10, 244, 7, (c % 250) as u8 + 2]);
        let (local, remote) = if n.accept {
            (
                Endpoint::Ip {
                    addr: pod_ip,
                    port: n.port,
                },
                Endpoint::Ip {
                    addr,
                    port: ephemeral,
                },
            )
        } else {
            (
                Endpoint::Ip {
                    addr: pod_ip,
                    port: ephemeral,
                },
                Endpoint::Ip { addr, port: n.port },
            )
        };
        let udp = n.port == 53;
        let kind = EventKind::Net(NetOp {
            op: if n.accept {
                NetOpKind::Accept
            } else {
                NetOpKind::Connect
            },
            family: 2,
            protocol: if udp { 17 } else { 6 },
            local: if n.accept { Some(local) } else { None },
            remote: Some(remote),
            fd: 3 + self.rng.below(200) as i32,
            sock: 0xffff_8880_0000_0000 | (self.rng.u64() & 0xffff_fff0),
            tcp_state: None,
            read_failed: false,
        });
        let event = self.base(c, pid, main_pid, n.comm, kind);
        let mut process = self.root(c);
        process.pid = pid;
        process.exe = n.comm.into();
        let chain = vec![self.root(c)];
        self.wrap(c, event, process, chain)
    }
}
