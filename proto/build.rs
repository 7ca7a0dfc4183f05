//! Compiles `proto/` with protox (a pure-Rust protobuf compiler, so no system `protoc`), then
//! generates prost messages, tonic services and pbjson serde impls (the proto3 JSON mapping)
//! from the same descriptor set. The descriptor set is also embedded for `/openapi.json`.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "openagents/common/v1/common.proto",
    "openagents/wallet/v1/executor.proto",
    "openagents/hydra/v1/liquidity.proto",
    "openagents/hydra/v1/risk.proto",
    "openagents/hydra/v1/credit.proto",
    "openagents/hydra/v1/routing.proto",
    "openagents/hydra/v1/fx.proto",
    "openagents/aegis/v1/aegis.proto",
    "openagents/treasury/v1/treasury.proto",
    "openagents/ops/v1/ops.proto",
    "lnrpc/lightning.proto",
    "routerrpc/router.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=openagents");
    println!("cargo:rerun-if-changed=lnrpc");
    println!("cargo:rerun-if-changed=routerrpc");

    let fds = protox::compile(PROTOS, ["."])?;
    let bytes = fds.encode_to_vec();
    fs::write(out.join("descriptor.bin"), &bytes)?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;

    // Proto3 JSON: original (snake_case) field names on output, both spellings on input, every
    // field emitted, and unknown fields refused.
    pbjson_build::Builder::new()
        .register_descriptors(&bytes)?
        .preserve_proto_field_names()
        .emit_fields()
        .build(&[".openagents"])?;
    Ok(())
}
