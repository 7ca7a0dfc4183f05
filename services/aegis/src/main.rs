use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    aegis::run(aegis::Config::parse()).await
}
