use clap::Parser;

#[global_allocator]
static ALLOCATOR: oa_service::runtime::Allocator = oa_service::runtime::Allocator;

fn main() -> anyhow::Result<()> {
    let config = aegis::Config::parse();
    oa_service::runtime::build(config.common.worker_threads)?.block_on(aegis::run(config))
}
