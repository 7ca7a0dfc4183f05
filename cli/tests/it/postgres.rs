//! The production shape on loopback: every service on PostgreSQL, two replicas each of treasury,
//! Hydra and Aegis sharing their service's database, callers spread over the replicas; and the
//! database server restarted mid-load, plus replicas killed, with nothing lost.
//!
//! Runs when `OA_TEST_POSTGRES_URL` is set (as `.ci/run` does), on a private PostgreSQL cluster
//! the test creates (initdb in a temporary folder, a free port) so that it can restart the
//! server without disturbing other tests; the cluster and its folder are removed at the end.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{
    faults::{Dbs, check_after_faults, pay_through},
    suite::Up,
};

/// A PostgreSQL cluster of this test's own, run by the `postgres` user when the test is root
/// (initdb refuses root).
struct PrivatePg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PrivatePg {
    fn start() -> PrivatePg {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(|e| Some(e.ok()?.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        let port = oa_testkit::free_port().unwrap();
        let pg = PrivatePg { dir, bin, port };
        // The server runs as `postgres`, which must reach and own its folder.
        run(Command::new("chmod").arg("755").arg(pg.dir.path()));
        run(Command::new("chown").arg("postgres").arg(pg.dir.path()));
        run(&mut pg.as_postgres(
            "initdb",
            &[
                "-D",
                pg.data().to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        ));
        pg.ctl("start");
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(args);
        cmd
    }

    /// `pg_ctl start|restart`, waiting until the server accepts connections.
    fn ctl(&self, action: &str) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        run(&mut self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                action,
            ],
        ));
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self
            .as_postgres(
                "pg_ctl",
                &[
                    "-D",
                    self.data().to_str().unwrap(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            )
            .status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn replica_pid(dir: &Path, svc: &str, replica: usize) -> Option<u32> {
    let suite: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("suite.json")).ok()?).ok()?;
    u32::try_from(suite["services"][svc]["replicas"][replica]["pid"].as_u64()?).ok()
}

/// SIGKILLs one replica and waits (bounded) until `oa up` has started it again.
async fn kill_replica(dir: &Path, svc: &str, replica: usize) {
    let pid = replica_pid(dir, svc, replica).expect("suite.json lists the replicas' pids");
    run(Command::new("kill").args(["-KILL", &pid.to_string()]));
    let restarted = oa_testkit::wait_until(
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async { replica_pid(dir, svc, replica).filter(|p| *p != pid) },
    )
    .await;
    assert!(
        restarted.is_some(),
        "oa up did not restart {svc} replica {replica}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_postgresql_pay_through_a_server_restart_and_replica_kills() {
    if std::env::var_os("OA_TEST_POSTGRES_URL").is_none() {
        eprintln!("skipped: OA_TEST_POSTGRES_URL is not set");
        return;
    }
    let pg = PrivatePg::start();
    let up = Up::start_with(&[
        "--restart",
        "--replicas",
        "2",
        "--postgres-db-prefix",
        "drill",
        "--postgres-url",
        &pg.url("postgres"),
    ]);
    let dir = up.dir.path().to_owned();
    for svc in oa_testkit::SERVICES {
        // On PostgreSQL `oa up` pins nothing: the database's processes share the CPUs.
        assert_eq!(
            crate::suite::thread_cpus(&up, svc),
            [crate::suite::own_cpus()].into(),
            "{svc}'s threads"
        );
    }
    for svc in ["treasury", "hydra", "aegis"] {
        assert_eq!(
            up.suite["services"][svc]["replicas"]
                .as_array()
                .map(Vec::len),
            Some(2),
            "{svc} runs two replicas"
        );
    }
    let disrupt = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        // The server goes away with every connection and comes back; nobody restarts a service.
        let pg = &pg;
        tokio::task::block_in_place(|| pg.ctl("restart"));
        tokio::time::sleep(Duration::from_millis(400)).await;
        kill_replica(&dir, "treasury", 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        kill_replica(&dir, "hydra", 0).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        kill_replica(&dir, "aegis", 1).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    };
    let payments = pay_through(&up, 150, disrupt).await;
    let dbs = Dbs::open(
        ["treasury", "hydra", "wallet_executor"].map(|svc| pg.url(&format!("drill_{svc}"))),
    )
    .await;
    check_after_faults(&up, &dbs, &payments).await;
    let status = up.stop();
    assert!(status.success(), "{status}");
}

/// The production-shape flags are checked before anything starts.
#[test]
fn bad_replica_and_database_flags_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for (flags, expected) in [
        (vec!["--replicas", "2"], "--replicas needs --postgres-url"),
        (vec!["--replicas", "0"], "--replicas must be 1 to 8"),
        (
            vec!["--worker-threads", "0"],
            "--worker-threads must be 1 to 64",
        ),
        (
            vec!["--worker-threads", "65"],
            "--worker-threads must be 1 to 64",
        ),
        (
            vec![
                "--postgres-url",
                "postgres://postgres@127.0.0.1:1/postgres",
                "--postgres-db-prefix",
                "Bad-Name",
            ],
            "--postgres-db-prefix must be 1 to 40",
        ),
    ] {
        let out = Command::new(crate::suite::OA)
            .args(["up", "--base-port", "0", "--data-dir", d])
            .args(&flags)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(expected),
            "{flags:?}: {stderr}"
        );
        assert!(!dir.path().join("suite.json").exists());
    }
}
