use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hydra::run(hydra::Config::parse()).await
}
