//! `docker/compose.yaml` and `docker/Dockerfile` agree with the binaries (no Docker engine runs
//! here, so this is what can be checked): every service builds a workspace binary, every
//! environment variable is one of that binary's flags and the whole environment parses as its
//! configuration, the key files it names are the ones `oa token --data-dir` creates, and every
//! database it names is created by the PostgreSQL init script.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use serde_norway::Value;

fn docker_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker")
}

fn compose() -> Value {
    let text = std::fs::read_to_string(docker_dir().join("compose.yaml")).unwrap();
    let mut v: Value = serde_norway::from_str(&text).unwrap();
    v.apply_merge().unwrap();
    v
}

fn services(v: &Value) -> Vec<(String, &Value)> {
    v["services"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, s)| (k.as_str().unwrap().to_owned(), s))
        .collect()
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// The service's environment turned into command-line flags through its clap definition
/// (`OA_X` -> `--x=value`; a boolean switch is given bare when true). Refuses a variable that is
/// not one of the binary's flags.
fn flags_from_env(name: &str, cmd: &clap::Command, env: &Value) -> Result<Vec<String>, String> {
    let mut flags = vec![name.to_owned()];
    for (k, v) in env.as_mapping().unwrap() {
        let var = k.as_str().unwrap();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == var))
            .ok_or_else(|| format!("{name}: {var} is not a flag of the binary"))?;
        let long = arg.get_long().unwrap();
        let value = scalar(v);
        if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
            if value == "true" {
                flags.push(format!("--{long}"));
            }
        } else {
            flags.push(format!("--{long}={value}"));
        }
    }
    Ok(flags)
}

fn parses(package: &str, flags: &[String]) -> Result<(), String> {
    let r = match package {
        "treasury" => treasury::Config::try_parse_from(flags).map(drop),
        "hydra" => hydra::Config::try_parse_from(flags).map(drop),
        "aegis" => aegis::Config::try_parse_from(flags).map(drop),
        "wallet-executor" => wallet_executor::Config::try_parse_from(flags).map(drop),
        "lightning-ops" => lightning_ops::Config::try_parse_from(flags).map(drop),
        other => panic!("no configuration known for {other}"),
    };
    r.map_err(|e| e.to_string())
}

fn command(package: &str) -> clap::Command {
    match package {
        "treasury" => treasury::Config::command(),
        "hydra" => hydra::Config::command(),
        "aegis" => aegis::Config::command(),
        "wallet-executor" => wallet_executor::Config::command(),
        "lightning-ops" => lightning_ops::Config::command(),
        other => panic!("no configuration known for {other}"),
    }
}

#[test]
fn every_compose_service_matches_its_binary_and_the_files_it_names_exist() {
    let v = compose();
    let keys = tempfile::tempdir().unwrap();
    // What the `keys` service runs, with /oa here instead.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oa"))
        .args(["token", "--data-dir"])
        .arg(keys.path())
        .args(["--audience", "treasury", "--scope", "treasury:pay"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let init_sql = std::fs::read_to_string(docker_dir().join("postgres-init.sql")).unwrap();
    let created: BTreeSet<String> = init_sql
        .lines()
        .filter_map(|l| l.strip_prefix("CREATE DATABASE "))
        .map(|l| l.trim_end_matches(';').to_owned())
        .collect();

    let mut built = BTreeSet::new();
    for (name, s) in services(&v) {
        let Some(package) = s["build"]["args"]["SERVICE"].as_str() else {
            continue;
        };
        assert_eq!(s["build"]["dockerfile"].as_str(), Some("docker/Dockerfile"));
        built.insert(package.to_owned());
        if package == "oa" {
            let args: Vec<String> = s["command"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(scalar)
                .collect();
            assert_eq!(args[..3], ["token", "--data-dir", "/oa"], "{name}");
            continue;
        }
        let env = &s["environment"];
        let flags = flags_from_env(package, &command(package), env).unwrap();
        parses(package, &flags).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (k, val) in env.as_mapping().unwrap() {
            let (var, val) = (k.as_str().unwrap(), scalar(val));
            if let Some(rel) = val.strip_prefix("/oa/") {
                assert!(keys.path().join(rel).is_file(), "{name}: {var}={val}");
            }
            if var == "OA_IDENTITY_KID" {
                assert_eq!(val, format!("{package}-dev"), "{name}");
            }
            if var == "OA_DATABASE_URL" {
                let db = val.rsplit('/').next().unwrap();
                assert!(
                    created.contains(db),
                    "{name}: database {db} is never created"
                );
            }
        }
    }
    assert_eq!(
        built,
        [
            "aegis",
            "hydra",
            "lightning-ops",
            "oa",
            "treasury",
            "wallet-executor"
        ]
        .into_iter()
        .map(str::to_owned)
        .collect()
    );
}

#[test]
fn a_variable_that_is_not_a_flag_is_caught() {
    let env: Value = serde_norway::from_str("OA_NO_SUCH_FLAG: 1").unwrap();
    let err = flags_from_env("hydra", &command("hydra"), &env).unwrap_err();
    assert!(err.contains("OA_NO_SUCH_FLAG"), "{err}");
    // And a value the binary refuses fails the parse.
    let flags = vec!["hydra".to_owned(), "--listen=not-an-address".to_owned()];
    assert!(parses("hydra", &flags).is_err());
}

#[test]
fn the_dockerfile_builds_one_named_binary_as_a_non_root_user() {
    let text = std::fs::read_to_string(docker_dir().join("Dockerfile")).unwrap();
    assert!(text.contains("ARG SERVICE"));
    assert!(text.contains(r#"cargo build --release --locked -p "${SERVICE}" --bin "${SERVICE}""#));
    assert!(text.contains("USER 10001:10001"));
    // Multi-stage: the runtime stage starts from a slim image without the toolchain.
    assert_eq!(text.matches("\nFROM ").count(), 2);
    assert!(text.contains("FROM debian:bookworm-slim AS runtime"));
}
