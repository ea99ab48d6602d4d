//! `lorb`: score texts, rescore n-best lists, evaluate and tune WER, benchmark.
//!
//! One module per subcommand (its clap arguments and its function); `common` holds the shared
//! argument groups and helpers, `lists` what the list commands share.

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Items that exist only natively: the CLI's dependencies (clap, indicatif, pollster) do not
/// build for wasm32, where the binary is the empty stub above.
macro_rules! native {
    ($($item:item)*) => { $(#[cfg(not(target_arch = "wasm32"))] $item)* };
}

native! {
    mod adapter;
    mod bench;
    mod common;
    mod eval;
    mod fit_head;
    mod lists;
    mod personalize;
    mod profile;
    mod rescore;
    mod score;
    mod teacher;
    mod train;
    mod train_mlm;
    mod tune;
}

#[cfg(not(target_arch = "wasm32"))]
#[derive(clap::Parser)]
#[command(name = "lorb", version, about = "Rescore ASR n-best lists with BERT-family models on the GPU (WGSL) or CPU")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[cfg(not(target_arch = "wasm32"))]
#[derive(clap::Subcommand)]
enum Cmd {
    /// Score texts (one per argument, or one per line of --file) with s2
    Score(score::ScoreArgs),
    /// Rescore n-best lists and write them re-ranked (JSON Lines)
    Rescore(rescore::RescoreArgs),
    /// WER of the first pass, the rescored lists and the oracle
    Eval(common::ListArgs),
    /// Grid-search the weight λ on a dev set
    Tune(tune::TuneArgs),
    /// Milliseconds per n-best list for CLS and PLL scoring (JSON)
    Bench(bench::BenchArgs),
    /// Fit a CLS head on a frozen encoder with MWER (RescoreBERT's head; LoRB's head-only baseline)
    FitHead(fit_head::FitHeadArgs),
    /// Train a LoRB adapter (LoRA + CLS head; MWER, MWED, MD) or an MLM head, or fine-tune fully
    Train(Box<train::TrainArgs>),
    /// Inspect LoRA adapters
    #[command(subcommand)]
    Adapter(adapter::AdapterCmd),
    /// Personalisation, measured: per chapter (or speaker, or --group REGEX), train on the
    /// first part's references from the global adapter, and report the WER of the rest
    /// (first pass, global adapter, personalised; JSON with --json)
    Personalize(Box<personalize::PersonalizeArgs>),
    /// What n-best files look like to an adapter tuned on them (fields, s1 scale, top-2 gap;
    /// JSON): the profile `train` records in train_log.json and list commands compare
    Profile(profile::ProfileArgs),
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    std::process::exit(run());
}

/// Parses the command line, runs the subcommand and turns its result into the exit status.
#[cfg(not(target_arch = "wasm32"))]
fn run() -> i32 {
    use clap::Parser;
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    // matrixmultiply counts physical cores (1 on many VMs); use every logical one unless told.
    if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        std::env::set_var("MATMUL_NUM_THREADS", n.to_string());
    }
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Score(a) => score::score(a),
        Cmd::Rescore(a) => rescore::rescore(a),
        Cmd::Eval(a) => eval::eval(a),
        Cmd::Tune(a) => tune::tune(a),
        Cmd::Bench(a) => bench::bench(a),
        Cmd::FitHead(a) => fit_head::fit_head(a),
        Cmd::Train(a) => train::train(*a),
        Cmd::Adapter(adapter::AdapterCmd::Info { dir, model, json }) => adapter::adapter_info(&dir, model, json),
        Cmd::Profile(a) => profile::profile(&a.files, &a.s1, a.depth),
        Cmd::Personalize(a) => personalize::personalize(*a),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("lorb: error [{}]: {e}", e.kind());
            1
        }
    }
}
