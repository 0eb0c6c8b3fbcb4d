//! The `tug` binary as a user runs it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn tug() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tug"))
}

#[test]
fn server_opens_its_store_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tug()
        .args([
            "server",
            "--https-listen-port",
            "0",
            "--bind-address",
            "127.0.0.1",
            "--disable-agent",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--write-kubeconfig")
        .arg(dir.path().join("kubeconfig.yaml"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("tug server is running"))
    {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => seen.push(line),
            Err(err) => panic!("server did not come up ({err}); it said: {seen:#?}"),
        }
    }
    let db = dir.path().join("server/db/state.db");
    assert!(
        seen.iter().any(|l| l.contains(&db.display().to_string())),
        "{seen:#?}"
    );
    assert!(db.exists());

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let status = done
        .recv_timeout(Duration::from_secs(30))
        .expect("server stops within 30 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status}");

    // The store it left is whole: sqlite3 can read it.
    let output = Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT value FROM tug_meta WHERE name = 'schema_version'")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "1");
}

#[test]
fn bad_flags_get_a_one_line_error_and_a_failing_exit() {
    let cases: [(&[&str], &str); 10] = [
        (
            &["server", "--bind-address", "localhost"],
            "--bind-address must be an IP address",
        ),
        (
            &["server", "--write-kubeconfig-mode", "rw"],
            "must be an octal file mode",
        ),
        (
            &["server", "--cluster-cidr", "10.42.0.0"],
            "--cluster-cidr must be a CIDR",
        ),
        (
            &["server", "--data-dir", "relative/dir"],
            "--data-dir must be an absolute path",
        ),
        (
            &[
                "server",
                "--data-dir",
                "/tmp/x",
                "--datastore-endpoint",
                "etcd:2379",
            ],
            "must start with http:// or https://",
        ),
        (
            &[
                "server",
                "--data-dir",
                "/tmp/x",
                "--compaction-interval",
                "0",
            ],
            "at least 1 second",
        ),
        (&["server", "--datastore-certfile", "/c.pem"], "required"),
        (
            &["server", "--eviction-hard", "disk.available<1Gi"],
            "--eviction-hard: unknown eviction signal \"disk.available\"",
        ),
        (
            &["server", "--minimum-image-ttl-duration", "2"],
            "--minimum-image-ttl-duration must be a duration",
        ),
        (
            &[
                "server",
                "--image-gc-high-threshold",
                "70",
                "--image-gc-low-threshold",
                "80",
            ],
            "--image-gc-low-threshold at most it",
        ),
    ];
    for (args, expected) in cases {
        let output = tug().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_file_that_is_not_a_store_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server/db/state.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    std::fs::write(&db, "not a database at all\n".repeat(500)).unwrap();
    let output = tug()
        .args(["server", "--https-listen-port", "0", "--data-dir"])
        .arg(dir.path())
        .arg("--write-kubeconfig")
        .arg(dir.path().join("kubeconfig.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("not a tug store, or corrupt"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
