//! The `verdict-collector` binary as an operator runs it: an unusable setting is refused at
//! start with a message naming it, and a clean start/stop works with no configuration file.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn run_with(config: &str, dir: &std::path::Path) -> (i32, String) {
    let path = dir.join("c.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_verdict-collector"))
        .arg("--config")
        .arg(&path)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_settings_are_all_named_and_refused() {
    let (_guard, dir) = support::tempdir();
    let (code, err) = run_with(
        "[grpc]\nlisten = \"127.0.0.1:0\"\nmax_batch_bytes = \"1GiB\"\n[parquet]\nzstd_level = 0\n[storage]\nurl = \"ftp://x\"\n",
        &dir,
    );
    assert_eq!(code, 2, "{err}");
    for setting in [
        "grpc.max_batch_bytes:",
        "parquet.zstd_level:",
        "storage.url:",
    ] {
        assert!(err.contains(setting), "{setting} missing from {err}");
    }
    let (code, err) = run_with("[grpc]\nlistn = \"x\"\n", &dir);
    assert_eq!(code, 2);
    assert!(err.contains("unknown field `listn`"), "{err}");
}

#[test]
fn unusable_settings_are_refused_at_start() {
    let (_guard, dir) = support::tempdir();
    std::fs::write(dir.join("a-file"), "").unwrap();
    let (code, err) = run_with(
        "[grpc]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[wal]\ndir = \"a-file/wal\"\n",
        &dir,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("wal.dir: cannot create a-file/wal"), "{err}");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (code, err) = run_with(
        &format!("[grpc]\nlisten = \"{}\"\n", busy.local_addr().unwrap()),
        &dir,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("grpc.listen: cannot listen on"), "{err}");
}

#[test]
fn defaults_start_and_a_term_signal_stops_cleanly() {
    let (_guard, dir) = support::tempdir();
    // Defaults everywhere except the ports (env overrides, as in a container).
    let mut child = Command::new(env!("CARGO_BIN_EXE_verdict-collector"))
        .current_dir(&dir)
        .env("VERDICT_COLLECTOR__GRPC__LISTEN", "127.0.0.1:0")
        .env("VERDICT_COLLECTOR__HTTP__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("verdict-collector listening grpc=127.0.0.1:"),
        "{line}"
    );
    assert!(dir.join("verdict-data/lake").is_dir());
    assert!(dir.join("verdict-data/wal/LOCK").is_file());
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
}
