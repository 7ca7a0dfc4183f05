use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    treasury::run(treasury::Config::parse()).await
}
