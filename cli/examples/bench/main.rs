//! Benchmarks (`./dev bench`): measures docker-agent against plain Docker on this machine, each
//! reference in the same run, and prints the README's table (median, p99, ratio). Nothing here is
//! asserted against a goal; the machine is noisy, so the figures are for people to read.
//! (Sleeping is fine here: this is a benchmark, not a test.)

mod attack;
mod create;
mod exec;
mod fixture;
mod fleet;
mod report;
mod scale;
mod simulate;
mod stream;
mod swarm;
mod terminal;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::fixture::{AgentListen, Hub, run};
use crate::report::Row;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    Exec,
    Stream,
    Echo,
    Cp,
    Create,
    Fleet,
    Scale,
    Attack,
    Swarm,
}

#[derive(Debug, Parser)]
#[command(about = "docker-agent's benchmarks against plain Docker")]
struct Args {
    /// Sections to run (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<Section>,
    /// Runs of each exec, ours and the reference's, alternating.
    #[arg(long, default_value_t = 100)]
    exec_runs: usize,
    /// Output per throughput run, in MiB.
    #[arg(long, default_value_t = 1024)]
    stream_mib: u64,
    #[arg(long, default_value_t = 3)]
    stream_runs: usize,
    #[arg(long, default_value_t = 200)]
    keystrokes: usize,
    #[arg(long, default_value_t = 256)]
    cp_mib: u64,
    #[arg(long, default_value_t = 3)]
    cp_runs: usize,
    #[arg(long, default_value_t = 10)]
    create_runs: usize,
    /// Agents created at once.
    #[arg(long, default_value_t = 50)]
    burst: usize,
    /// Execs on the victim in each phase of the attack section (none, control, flood).
    #[arg(long, default_value_t = 1000)]
    attack_runs: usize,
    /// Real agents in the fleet section.
    #[arg(long, default_value_t = 250)]
    fleet: usize,
    /// Simulated agents per scale stage.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    scale: Vec<usize>,
    /// Measuring window of each scale stage, in seconds.
    #[arg(long, default_value_t = 30)]
    scale_window: u64,
    /// Execs per second during a scale stage.
    #[arg(long, default_value_t = 10)]
    scale_execs_per_sec: u32,
    /// A quick run with tiny counts, to check the benchmark itself works (CI).
    #[arg(long)]
    smoke: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The scale section's load process (internal).
    #[command(hide = true)]
    Simulate { file: PathBuf },
}

impl Args {
    fn shrink_for_smoke(&mut self) {
        self.exec_runs = 5;
        self.stream_mib = 16;
        self.stream_runs = 1;
        self.keystrokes = 10;
        self.cp_mib = 4;
        self.cp_runs = 1;
        self.create_runs = 1;
        self.burst = 3;
        self.fleet = 3;
        self.attack_runs = 5;
        self.scale = vec![20];
        self.scale_window = 3;
    }

    fn wants(&self, s: Section) -> bool {
        self.only.is_empty() || self.only.contains(&s)
    }
}

fn main() {
    let mut args = Args::parse();
    if let Some(Cmd::Simulate { file }) = &args.command {
        simulate::main(file);
        return;
    }
    if args.smoke {
        args.shrink_for_smoke();
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut add = |new: Vec<Row>| {
        for r in &new {
            eprintln!("{}", r.markdown());
        }
        rows.extend(new);
    };

    let hub = Hub::start(AgentListen::Gateway);
    let prefix = format!("bench{}", std::process::id());
    let name = format!("{prefix}-main");
    let container = format!("docker-agent-{name}");
    run(hub.cli().args(["create", &name]));
    let image = run(fixture::docker().args(["inspect", "-f", "{{.Config.Image}}", &container]))
        .trim()
        .to_string();

    if args.wants(Section::Exec) {
        add(exec::measure(&hub, &name, &container, args.exec_runs));
    }
    if args.wants(Section::Stream) {
        add(stream::measure(
            &hub,
            &name,
            &container,
            args.stream_mib << 20,
            args.stream_runs,
        ));
    }
    if args.wants(Section::Echo) {
        add(terminal::measure(&hub, &name, &container, args.keystrokes));
    }
    if args.wants(Section::Cp) {
        add(terminal::measure_cp(
            &hub,
            &name,
            &container,
            args.cp_mib << 20,
            args.cp_runs,
        ));
    }
    run(hub.cli().args(["destroy", &name, "--purge"]));
    if args.wants(Section::Create) {
        add(create::measure(
            &hub,
            &prefix,
            &image,
            args.create_runs,
            args.burst,
        ));
    }
    if args.wants(Section::Attack) {
        add(attack::measure(&hub, &prefix, args.attack_runs));
    }
    if args.wants(Section::Fleet) {
        add(fleet::measure(&hub, &prefix, args.fleet));
    }
    if args.wants(Section::Swarm) {
        add(swarm::measure(&prefix, args.create_runs, args.exec_runs));
    }
    if args.wants(Section::Scale) {
        for &agents in &args.scale {
            add(scale::measure(
                &image,
                &scale::Stage {
                    agents,
                    window: Duration::from_secs(args.scale_window),
                    exec_interval: Duration::from_secs(1) / args.scale_execs_per_sec.max(1),
                },
            ));
        }
    }
    drop(hub);

    println!("{}", report::HEADER);
    for r in &rows {
        println!("{}", r.markdown());
    }
}
