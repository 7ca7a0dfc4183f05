use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lightning_ops::run(lightning_ops::Config::parse()).await
}
