//! `kestrel-operator`: the operator process (the operator image's entry
//! point). Serves node agents over gRPC and runs the profile, detection and
//! scoring pipeline. It links no BPF; `kestrel operator` runs the same code.
use clap::Parser;
use kestrel_operator::cli::{init_logging, run_operator, OperatorArgs};

#[derive(Parser)]
#[command(
    name = "kestrel-operator",
    version,
    about = "Kestrel operator: serves node agents, learns profiles, raises alerts"
)]
struct Cli {
    #[command(flatten)]
    args: OperatorArgs,
}

fn main() -> anyhow::Result<()> {
    init_logging();
    run_operator(Cli::parse().args)
}
