use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wallet_executor::run(wallet_executor::Config::parse()).await
}
