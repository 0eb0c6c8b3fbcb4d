//! The real kubectl against a real `tug server` on loopback.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A real etcd on free loopback ports, for running this suite on the etcd
/// backend (`TUG_TEST_DATASTORE=etcd`, as `scripts/test` does).
struct Etcd {
    child: Child,
    url: String,
}

impl Etcd {
    fn start(dir: &Path) -> Self {
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (client, peer) = (port(), port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting etcd (Debian's etcd-server)");
        let etcd = Self { child, url };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health = Command::new("curl")
                .args(["-sf", &format!("{}/health", etcd.url)])
                .output()
                .unwrap();
            if health.status.success() {
                return etcd;
            }
            assert!(Instant::now() < deadline, "etcd did not start within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `tug server` on a free loopback port with its own data dir.
struct Server {
    child: Child,
    dir: PathBuf,
    kubeconfig: PathBuf,
    etcd: Option<Etcd>,
    agent: Option<Vec<String>>,
}

/// A stopped server's store, to start it again on.
struct Stopped {
    etcd: Option<Etcd>,
    /// The node agent's flags, if the server ran one.
    agent: Option<Vec<String>>,
}

impl Stopped {
    fn start(self, dir: &Path) -> Server {
        let agent: Option<Vec<&str>> = self
            .agent
            .as_ref()
            .map(|flags| flags.iter().map(String::as_str).collect());
        Server::launch(dir, &[], self.etcd, agent.as_deref())
    }
}

/// The server's log, kept in its directory (appended across restarts).
fn server_log(dir: &Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

impl Server {
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    fn start_with(dir: &Path, extra: &[&str]) -> Self {
        let etcd = (std::env::var("TUG_TEST_DATASTORE").as_deref() == Ok("etcd"))
            .then(|| Etcd::start(dir));
        Self::launch(dir, extra, etcd, None)
    }

    /// A server that runs a node agent too, with `agent`'s flags (its
    /// node name, pod network...). Other servers run none.
    fn start_with_agent(dir: &Path, agent: &[&str]) -> Self {
        let etcd = (std::env::var("TUG_TEST_DATASTORE").as_deref() == Ok("etcd"))
            .then(|| Etcd::start(dir));
        Self::launch(dir, &[], etcd, Some(agent))
    }

    fn launch(dir: &Path, extra: &[&str], etcd: Option<Etcd>, agent: Option<&[&str]>) -> Self {
        let kubeconfig = dir.join("kubeconfig.yaml");
        let mut command = Command::new(env!("CARGO_BIN_EXE_tug"));
        if let Some(etcd) = &etcd {
            command
                .arg("server")
                .arg(format!("--datastore-endpoint={}", etcd.url));
        } else {
            command.arg("server");
        }
        match agent {
            Some(flags) => command.args(flags),
            None => command.arg("--disable-agent"),
        };
        let mut child = command
            .args(["--https-listen-port", "0", "--bind-address", "127.0.0.1"])
            .args(extra)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--write-kubeconfig")
            .arg(&kubeconfig)
            .stdout(Stdio::piped())
            .stderr(server_log(dir))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("tug server prints its kubeconfig path within 30 s");
        assert_eq!(line, format!("kubeconfig: {}", kubeconfig.display()));
        Self {
            child,
            dir: dir.to_path_buf(),
            kubeconfig,
            etcd,
            agent: agent.map(|flags| flags.iter().map(|f| f.to_string()).collect()),
        }
    }

    fn kubectl_with(&self, binary: &str, args: &[&str]) -> Output {
        // The cache flag goes first: anything after a `--` is the command's.
        Command::new(binary)
            .arg(format!("--cache-dir={}", self.dir.join("cache").display()))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.dir)
            .output()
            .unwrap()
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with("kubectl", args)
    }

    /// Runs kubectl and answers its standard output, failing on an error.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// `ok` with another kubectl binary.
    fn ok_with(&self, binary: &str, args: &[&str]) -> String {
        let output = self.kubectl_with(binary, args);
        assert!(
            output.status.success(),
            "{binary} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs kubectl expecting it to fail; answers its standard error.
    fn fails(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        assert!(!output.status.success(), "kubectl {args:?} succeeded");
        String::from_utf8(output.stderr).unwrap()
    }

    fn stop(mut self) -> Stopped {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "tug server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Stopped {
            etcd: self.etcd.take(),
            agent: self.agent.take(),
        }
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    fn crash(mut self) -> Stopped {
        let _ = self.child.kill();
        let _ = self.child.wait();
        Stopped {
            etcd: self.etcd.take(),
            agent: self.agent.take(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CONFIGMAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: app
  labels:
    team: blue
data:
  a: \"1\"
  b: two
";

fn columns(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// Calls `check` until it answers, for at most `seconds`.
fn until<T>(seconds: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kubectl_sees_a_1_33_server_and_its_resources() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let version: serde_json::Value =
        serde_json::from_str(&server.ok(&["version", "-o", "json"])).unwrap();
    assert_eq!(version["serverVersion"]["major"], "1");
    assert_eq!(version["serverVersion"]["minor"], "33");

    let resources = server.ok(&["api-resources"]);
    let header = columns(resources.lines().next().unwrap());
    assert_eq!(
        header,
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    );
    for expected in [
        ["deployments", "deploy", "apps/v1", "true", "Deployment"],
        ["pods", "po", "v1", "true", "Pod"],
        ["namespaces", "ns", "v1", "false", "Namespace"],
    ] {
        assert!(
            resources.lines().any(|l| columns(l) == expected),
            "{expected:?} missing from:\n{resources}"
        );
    }
    let versions = server.ok(&["api-versions"]);
    for expected in ["v1", "apps/v1", "batch/v1", "rbac.authorization.k8s.io/v1"] {
        assert!(
            versions.lines().any(|l| l == expected),
            "{expected} missing: {versions}"
        );
    }
    // kubectl 1.28 understands only aggregated discovery v2beta1.
    let old = server.kubectl_with(
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.28",
        &["api-resources", "--api-group=apps"],
    );
    let old = String::from_utf8_lossy(&old.stdout);
    assert!(
        old.lines()
            .any(|l| columns(l).first() == Some(&"statefulsets")),
        "{old}"
    );

    let namespaces = server.ok(&["get", "namespaces"]);
    let mut lines = namespaces.lines();
    assert_eq!(columns(lines.next().unwrap()), ["NAME", "STATUS", "AGE"]);
    let rows: Vec<Vec<&str>> = lines.map(columns).collect();
    let names: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    assert!(rows.iter().all(|r| r[1] == "Active"));
}

#[test]
fn kubectl_creates_reads_labels_and_deletes_a_configmap() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let manifest = dir.path().join("cm.yaml");
    std::fs::write(&manifest, CONFIGMAP).unwrap();
    let file = manifest.to_str().unwrap();

    assert_eq!(
        server.ok(&["create", "-f", file, "--validate=false"]),
        "configmap/app created\n"
    );
    let table = server.ok(&["get", "configmaps"]);
    let lines: Vec<Vec<&str>> = table.lines().map(columns).collect();
    assert_eq!(lines[0], ["NAME", "DATA", "AGE"]);
    assert_eq!(lines[1][..2], ["app", "2"]);
    assert!(
        lines[1][2].ends_with('s'),
        "a fresh object's age is in seconds: {table}"
    );
    assert_eq!(
        server.ok(&["get", "cm", "app", "-o", "jsonpath={.data.b}"]),
        "two"
    );

    let object: serde_json::Value =
        serde_json::from_str(&server.ok(&["get", "cm", "app", "-o", "json"])).unwrap();
    assert_eq!(object["kind"], "ConfigMap");
    assert_eq!(object["metadata"]["namespace"], "default");
    assert!(
        object["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    assert!(
        object["metadata"]["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let created_version: u64 = object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    assert_eq!(
        server.ok(&["label", "cm", "app", "tier=web"]),
        "configmap/app labeled\n"
    );
    assert_eq!(
        server.ok(&["annotate", "cm", "app", "note=hi"]),
        "configmap/app annotated\n"
    );
    assert_eq!(
        server.ok(&["get", "cm", "-l", "tier=web", "-o", "name"]),
        "configmap/app\n"
    );
    assert_eq!(
        server.ok(&["get", "cm", "-l", "tier!=web", "-o", "name"]),
        ""
    );
    assert_eq!(
        server.ok(&["get", "cm", "-l", "team in (blue,red)", "-o", "name"]),
        "configmap/app\n"
    );
    let labelled: serde_json::Value =
        serde_json::from_str(&server.ok(&["get", "cm", "app", "-o", "json"])).unwrap();
    assert_eq!(labelled["metadata"]["labels"]["team"], "blue");
    assert_eq!(labelled["metadata"]["annotations"]["note"], "hi");
    let version: u64 = labelled["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(version > created_version);
    assert_eq!(labelled["metadata"]["uid"], object["metadata"]["uid"]);

    let all = server.ok(&["get", "cm", "-A"]);
    assert_eq!(
        columns(all.lines().next().unwrap()),
        ["NAMESPACE", "NAME", "DATA", "AGE"]
    );
    assert_eq!(
        columns(all.lines().nth(1).unwrap())[..3],
        ["default", "app", "2"]
    );

    let err = server.fails(&["create", "-f", file, "--validate=false"]);
    assert!(
        err.contains("Error from server (AlreadyExists): error when creating")
            && err.contains("configmaps \"app\" already exists"),
        "{err}"
    );
    let err = server.fails(&["get", "cm", "nope"]);
    assert_eq!(
        err.trim(),
        "Error from server (NotFound): configmaps \"nope\" not found"
    );
    let err = server.fails(&["create", "-f", file, "--validate=false", "-n", "missing"]);
    assert!(err.contains("namespaces \"missing\" not found"), "{err}");

    assert_eq!(
        server.ok(&["delete", "cm", "app"]),
        "configmap \"app\" deleted\n"
    );
    let output = server.kubectl(&["get", "cm"]);
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "No resources found in default namespace."
    );
}

#[test]
fn kubectl_watch_sees_changes_as_they_happen() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let manifest = dir.path().join("cm.yaml");
    std::fs::write(&manifest, CONFIGMAP).unwrap();
    let mut watch = Command::new("kubectl")
        .args([
            "get",
            "configmaps",
            "--watch-only",
            "-o",
            "custom-columns=NAME:.metadata.name,B:.data.b",
            "--no-headers",
        ])
        .env("KUBECONFIG", &server.kubeconfig)
        .env("HOME", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The watch may start after the first create; create until it is seen.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    let first = loop {
        assert!(Instant::now() < deadline, "the watch saw no create in 30 s");
        let name = format!("w{n}");
        n += 1;
        let yaml = CONFIGMAP.replace("name: app", &format!("name: {name}"));
        std::fs::write(&manifest, yaml).unwrap();
        server.ok(&[
            "create",
            "-f",
            manifest.to_str().unwrap(),
            "--validate=false",
        ]);
        if let Ok(line) = lines.recv_timeout(Duration::from_secs(2)) {
            break line;
        }
    };
    let name = columns(&first)[0].to_string();
    assert_eq!(columns(&first)[1], "two");
    server.ok(&[
        "patch",
        "cm",
        &name,
        "--type=merge",
        "-p",
        r#"{"data":{"b":"three"}}"#,
    ]);
    let changed = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("the watch saw the patch");
    assert_eq!(columns(&changed), [name.as_str(), "three"]);
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn anonymous_clients_reach_only_health_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let kubeconfig = std::fs::read_to_string(&server.kubeconfig).unwrap();
    let url = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_string();
    // curl with no client certificate: an anonymous client.
    let curl = |path: &str| {
        let output = Command::new("curl")
            .args(["-sk", "-w", "\n%{http_code}", &format!("{url}{path}")])
            .output()
            .unwrap();
        let text = String::from_utf8(output.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (body.to_string(), code.to_string())
    };
    assert_eq!(curl("/healthz"), ("ok".to_string(), "200".to_string()));
    let (body, code) = curl("/version");
    assert_eq!(code, "200");
    assert!(body.contains("\"minor\":\"33\""), "{body}");
    let (body, code) = curl("/api/v1/namespaces");
    assert_eq!(code, "401");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            status["kind"].as_str(),
            status["reason"].as_str(),
            status["code"].as_i64()
        ),
        (Some("Status"), Some("Unauthorized"), Some(401))
    );
}

#[test]
fn objects_and_their_versions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let manifest = dir.path().join("cm.yaml");
    std::fs::write(&manifest, CONFIGMAP).unwrap();
    server.ok(&[
        "create",
        "-f",
        manifest.to_str().unwrap(),
        "--validate=false",
    ]);
    let before = server.ok(&[
        "get",
        "cm",
        "app",
        "-o",
        "jsonpath={.metadata.uid} {.metadata.resourceVersion}",
    ]);
    let stopped = server.stop();

    let server = stopped.start(dir.path());
    let after = server.ok(&[
        "get",
        "cm",
        "app",
        "-o",
        "jsonpath={.metadata.uid} {.metadata.resourceVersion}",
    ]);
    assert_eq!(before, after);
    assert_eq!(server.ok(&["get", "ns", "-o", "name"]).lines().count(), 4);
}

/// An authenticated client that sends exactly what it is given: curl with
/// the admin client certificate.
struct Curl {
    url: String,
    dir: PathBuf,
}

impl Curl {
    fn admin(server: &Server) -> Self {
        use base64::Engine;
        let kubeconfig = std::fs::read_to_string(&server.kubeconfig).unwrap();
        let field = |name: &str| {
            let encoded = kubeconfig
                .lines()
                .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
                .unwrap_or_else(|| panic!("{name} in the kubeconfig"));
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap()
        };
        let dir = server.dir.join("curl");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.crt"), field("certificate-authority-data")).unwrap();
        std::fs::write(dir.join("admin.crt"), field("client-certificate-data")).unwrap();
        std::fs::write(dir.join("admin.key"), field("client-key-data")).unwrap();
        let url = kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .unwrap()
            .to_string();
        Self { url, dir }
    }

    /// kubectl with the cluster CA and a bearer token, no client
    /// certificate.
    fn kubectl_with_token(&self, server: &Server, token: &str, args: &[&str]) -> Output {
        let mut all = vec![
            format!("--server={}", self.url),
            format!(
                "--certificate-authority={}",
                self.dir.join("ca.crt").display()
            ),
            format!("--token={token}"),
            "--kubeconfig=/dev/null".to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        server.kubectl(&all)
    }

    /// Sends a request; answers the status code and the body as JSON.
    fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        let body_file = self.dir.join("body");
        std::fs::write(&body_file, body).unwrap();
        let output = Command::new("curl")
            .args(["-s", "-X", method, "-w", "\n%{http_code}"])
            .arg("--cacert")
            .arg(self.dir.join("ca.crt"))
            .arg("--cert")
            .arg(self.dir.join("admin.crt"))
            .arg("--key")
            .arg(self.dir.join("admin.key"))
            .args(["-H", &format!("Content-Type: {content_type}")])
            .arg("--data-binary")
            .arg(format!("@{}", body_file.display()))
            .arg(format!("{}{path}", self.url))
            .output()
            .unwrap();
        let text = String::from_utf8(output.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        let body = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body}"));
        (code.parse().unwrap(), body)
    }
}

/// Asserts a Status with this code and reason, and answers its message.
fn status(answer: (u16, serde_json::Value), code: u16, reason: &str) -> String {
    let (got, body) = answer;
    assert_eq!(got, code, "{body}");
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    body["message"].as_str().unwrap().to_string()
}

#[test]
fn bad_input_gets_a_status_with_upstreams_code_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let curl = Curl::admin(&server);
    let configmaps = "/api/v1/namespaces/default/configmaps";
    let json = "application/json";

    let message = status(
        curl.send("POST", configmaps, json, b"{not json"),
        400,
        "BadRequest",
    );
    assert!(message.contains("JSON"), "{message}");
    let wrong_version = br#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}"#;
    let message = status(
        curl.send("POST", configmaps, json, wrong_version),
        400,
        "BadRequest",
    );
    assert!(
        message.contains("does not match the expected API version (v1)"),
        "{message}"
    );
    let bad_name = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Not_Valid"}}"#;
    let (code, body) = curl.send("POST", configmaps, json, bad_name);
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(body["details"]["causes"][0]["field"], "metadata.name");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("ConfigMap \"Not_Valid\" is invalid: metadata.name: Invalid value")
    );
    let huge = vec![b' '; 4 * 1024 * 1024];
    status(
        curl.send("POST", configmaps, json, &huge),
        413,
        "RequestEntityTooLarge",
    );
    status(
        curl.send("POST", configmaps, "text/plain", b"hello"),
        415,
        "UnsupportedMediaType",
    );
    // YAML bodies are read as upstream reads them; bad YAML is a 400.
    let (code, object) = curl.send(
        "POST",
        configmaps,
        "application/yaml",
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml # a comment\ndata:\n  k: v\n",
    );
    assert_eq!(
        (code, &object["data"]["k"]),
        (201, &serde_json::json!("v")),
        "{object}"
    );
    status(
        curl.send("POST", configmaps, "application/yaml", b"a: [unclosed"),
        400,
        "BadRequest",
    );
    status(
        curl.send("GET", "/api/v1/widgets", json, b""),
        404,
        "NotFound",
    );
    status(
        curl.send("GET", "/apis/nope.example.com/v1/things", json, b""),
        404,
        "NotFound",
    );
    let message = status(
        curl.send(
            "GET",
            &format!("{configmaps}?labelSelector=a%20b"),
            json,
            b"",
        ),
        400,
        "BadRequest",
    );
    assert!(message.contains("unable to parse requirement"), "{message}");
    status(
        curl.send(
            "GET",
            &format!("{configmaps}?fieldSelector=spec.x%3Dy"),
            json,
            b"",
        ),
        400,
        "BadRequest",
    );
    status(
        curl.send("GET", &format!("{configmaps}?continue=garbage"), json, b""),
        400,
        "BadRequest",
    );

    // A stale resourceVersion loses, with upstream's message.
    let created =
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cas"},"data":{"n":"1"}}"#;
    let (code, object) = curl.send("POST", configmaps, json, created);
    assert_eq!(code, 201, "{object}");
    let version = object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let update = |n: &str, version: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cas","resourceVersion":"{version}"}},"data":{{"n":"{n}"}}}}"#
        )
    };
    let (code, updated) = curl.send(
        "PUT",
        &format!("{configmaps}/cas"),
        json,
        update("2", &version).as_bytes(),
    );
    assert_eq!(code, 200, "{updated}");
    assert_ne!(
        updated["metadata"]["resourceVersion"],
        object["metadata"]["resourceVersion"]
    );
    let message = status(
        curl.send(
            "PUT",
            &format!("{configmaps}/cas"),
            json,
            update("3", &version).as_bytes(),
        ),
        409,
        "Conflict",
    );
    assert_eq!(
        message,
        "Operation cannot be fulfilled on configmaps \"cas\": the object has been modified; please apply your changes to the latest version and try again"
    );
    // A JSON patch whose test fails is refused whole.
    let patch = br#"[{"op":"test","path":"/data/n","value":"1"},{"op":"replace","path":"/data/n","value":"9"}]"#;
    status(
        curl.send(
            "PATCH",
            &format!("{configmaps}/cas"),
            "application/json-patch+json",
            patch,
        ),
        422,
        "Invalid",
    );
    assert_eq!(
        server.ok(&["get", "cm", "cas", "-o", "jsonpath={.data.n}"]),
        "2"
    );
    server.ok(&[
        "patch",
        "cm",
        "cas",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/data/m","value":"x"}]"#,
    ]);
    assert_eq!(
        server.ok(&["get", "cm", "cas", "-o", "jsonpath={.data.m}"]),
        "x"
    );
    let message = status(
        curl.send("DELETE", &format!("{configmaps}/nope"), json, b""),
        404,
        "NotFound",
    );
    assert_eq!(message, "configmaps \"nope\" not found");
}

#[test]
fn an_object_with_finalizers_waits_for_them_before_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let manifest = dir.path().join("held.yaml");
    std::fs::write(
        &manifest,
        CONFIGMAP.replace("name: app", "name: held\n  finalizers: [example.com/hold]"),
    )
    .unwrap();
    server.ok(&[
        "create",
        "-f",
        manifest.to_str().unwrap(),
        "--validate=false",
    ]);
    assert_eq!(
        server.ok(&["delete", "cm", "held", "--wait=false"]),
        "configmap \"held\" deleted\n"
    );
    let marked: serde_json::Value =
        serde_json::from_str(&server.ok(&["get", "cm", "held", "-o", "json"])).unwrap();
    assert!(
        marked["metadata"]["deletionTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{marked}"
    );
    assert_eq!(marked["metadata"]["finalizers"][0], "example.com/hold");
    // Deleting again changes nothing; other updates still go through.
    server.ok(&["delete", "cm", "held", "--wait=false"]);
    server.ok(&["label", "cm", "held", "still=here"]);
    let again: serde_json::Value =
        serde_json::from_str(&server.ok(&["get", "cm", "held", "-o", "json"])).unwrap();
    assert_eq!(
        again["metadata"]["deletionTimestamp"],
        marked["metadata"]["deletionTimestamp"]
    );

    server.ok(&[
        "patch",
        "cm",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let err = server.fails(&["get", "cm", "held"]);
    assert!(err.contains("configmaps \"held\" not found"), "{err}");
}

#[test]
fn kubectl_create_configmap_secret_and_namespace_send_protobuf_that_is_understood() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    assert_eq!(
        server.ok(&[
            "create",
            "configmap",
            "settings",
            "--from-literal=a=b",
            "--from-literal=c=d"
        ]),
        "configmap/settings created\n"
    );
    assert_eq!(
        server.ok(&[
            "create",
            "secret",
            "generic",
            "login",
            "--from-literal=password=hunter2"
        ]),
        "secret/login created\n"
    );
    assert_eq!(
        server.ok(&["create", "namespace", "team-a"]),
        "namespace/team-a created\n"
    );

    let configmap: serde_json::Value =
        serde_json::from_str(&server.ok(&["get", "cm", "settings", "-o", "json"])).unwrap();
    assert_eq!(configmap["data"], serde_json::json!({"a": "b", "c": "d"}));
    let metadata = configmap["metadata"].as_object().unwrap();
    assert!(
        !metadata.contains_key("generateName") && !metadata.contains_key("generation"),
        "{metadata:?}"
    );
    let secret = server.ok(&[
        "get",
        "secret",
        "login",
        "-o",
        "jsonpath={.data.password} {.type}",
    ]);
    assert_eq!(secret, "aHVudGVyMg== Opaque");
    let table = server.ok(&["get", "secrets"]);
    assert_eq!(
        columns(table.lines().nth(1).unwrap())[..3],
        ["login", "Opaque", "1"]
    );
    let namespace = server.ok(&[
        "get",
        "ns",
        "team-a",
        "-o",
        "jsonpath={.status.phase} {.spec.finalizers[0]}",
    ]);
    assert_eq!(namespace, "Active kubernetes");
    assert_eq!(
        server.ok(&["create", "configmap", "there", "-n", "team-a"]),
        "configmap/there created\n"
    );
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: nginx:1.30
        env: [{name: A, value: \"1\"}, {name: B, value: \"1\"}]
      - name: sidecar
        image: busybox
";

#[test]
fn kubectl_apply_twice_removes_what_the_manifest_dropped_and_scale_works() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let manifest = dir.path().join("deploy.yaml");
    let file = manifest.to_str().unwrap();
    std::fs::write(&manifest, DEPLOYMENT).unwrap();
    // Default flags: kubectl reads /openapi/v3 and leaves validation to the server.
    assert_eq!(
        server.ok(&["apply", "-f", file]),
        "deployment.apps/web created\n"
    );
    let changed = DEPLOYMENT
        .replace("nginx:1.30", "nginx:1.31")
        .replace(", {name: B, value: \"1\"}", "")
        .replace("      - name: sidecar\n        image: busybox\n", "");
    std::fs::write(&manifest, changed).unwrap();
    let diff = server.kubectl(&["diff", "-f", file]);
    assert_eq!(diff.status.code(), Some(1), "diff reports a difference");
    assert!(String::from_utf8_lossy(&diff.stdout).contains("+        image: nginx:1.31"));
    assert_eq!(
        server.ok(&["apply", "-f", file]),
        "deployment.apps/web configured\n"
    );
    let containers: serde_json::Value = serde_json::from_str(&server.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers}",
    ]))
    .unwrap();
    let containers = containers.as_array().unwrap();
    assert_eq!(containers.len(), 1, "the sidecar is gone: {containers:?}");
    assert_eq!(
        (
            &containers[0]["name"],
            &containers[0]["image"],
            &containers[0]["env"]
        ),
        (
            &serde_json::json!("app"),
            &serde_json::json!("nginx:1.31"),
            &serde_json::json!([{"name": "A", "value": "1"}])
        )
    );
    // Defaults the server set survive the apply.
    assert_eq!(containers[0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        server.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.generation}"
        ]),
        "2"
    );
    assert_eq!(server.kubectl(&["diff", "-f", file]).status.code(), Some(0));
    assert_eq!(
        server.ok(&["apply", "-f", file]),
        "deployment.apps/web unchanged\n"
    );

    assert_eq!(
        server.ok(&["scale", "deploy", "web", "--replicas=5"]),
        "deployment.apps/web scaled\n"
    );
    assert_eq!(
        server.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "5"
    );
    let err = server.fails(&[
        "scale",
        "deploy",
        "web",
        "--replicas=3",
        "--current-replicas=4",
    ]);
    assert!(err.contains("Expected replicas to be 4, was 5"), "{err}");
    server.ok(&["set", "image", "deploy/web", "app=nginx:1.32"]);
    server.ok(&["rollout", "restart", "deploy", "web"]);
    let template = server.ok(&[
        "get", "deploy", "web", "-o",
        "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}",
    ]);
    let (image, restarted) = template.split_once(' ').unwrap();
    assert_eq!(image, "nginx:1.32");
    assert!(restarted.ends_with('Z'), "{template}");
}

#[test]
fn kubectl_describe_shows_a_pods_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let pod = dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p1}\nspec: {containers: [{name: c, image: busybox:1.36}]}\n",
    )
    .unwrap();
    server.ok(&["apply", "-f", pod.to_str().unwrap()]);
    let uid = server.ok(&["get", "pod", "p1", "-o", "jsonpath={.metadata.uid}"]);
    let event = dir.path().join("event.yaml");
    std::fs::write(
        &event,
        format!(
            "apiVersion: v1\nkind: Event\nmetadata: {{name: p1.1}}\ntype: Warning\nreason: TestReason\n\
             message: something happened to p1\ncount: 1\nsource: {{component: tester}}\n\
             involvedObject: {{kind: Pod, namespace: default, name: p1, uid: {uid}, apiVersion: v1}}\n"
        ),
    )
    .unwrap();
    server.ok(&["create", "-f", event.to_str().unwrap()]);
    // With no nodes, the scheduler says so (once it has tried).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let described = loop {
        let described = server.ok(&["describe", "pod", "p1"]);
        if described.contains("FailedScheduling") || std::time::Instant::now() > deadline {
            break described;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        described
            .lines()
            .any(|l| columns(l) == ["QoS", "Class:", "BestEffort"]),
        "{described}"
    );
    // The DefaultTolerationSeconds admission plugin's tolerations.
    for key in ["not-ready", "unreachable"] {
        assert!(
            described.contains(&format!(
                "node.kubernetes.io/{key}:NoExecute op=Exists for 300s"
            )),
            "{described}"
        );
    }
    let events = described.split("Events:").nth(1).unwrap();
    assert!(
        events
            .lines()
            .any(|l| columns(l).starts_with(&["Warning", "FailedScheduling"])
                && l.ends_with("default-scheduler  no nodes available to schedule pods")),
        "{described}"
    );
    assert!(
        events
            .lines()
            .any(|l| columns(l).starts_with(&["Warning", "TestReason"])
                && l.contains("something happened to p1")),
        "{described}"
    );
    let on_node = server.ok(&[
        "get",
        "pods",
        "--field-selector=spec.nodeName=nowhere",
        "-o",
        "name",
    ]);
    assert_eq!(on_node, "");
    let err = server.fails(&["get", "pods", "--field-selector=spec.image=x"]);
    assert!(
        err.contains("field label not supported: spec.image"),
        "{err}"
    );
}

#[test]
fn services_get_cluster_ips_and_node_ports_that_are_never_shared() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    // Every cluster has the kubernetes Service at the first address.
    let kubernetes = server.ok(&[
        "get",
        "svc",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP} {.spec.ports[0].port}",
    ]);
    assert_eq!(kubernetes, "10.43.0.1 443");

    let manifest = dir.path().join("svc.yaml");
    let service = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n\
             spec:\n  selector: {{app: web}}\n  ports: [{{port: 80}}]\n{extra}"
        )
    };
    let mut ips = std::collections::HashSet::new();
    for i in 0..5 {
        std::fs::write(&manifest, service(&format!("s{i}"), "")).unwrap();
        server.ok(&["apply", "-f", manifest.to_str().unwrap()]);
        let ip = server.ok(&[
            "get",
            "svc",
            &format!("s{i}"),
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        assert!(ip.starts_with("10.43.") && ip != "10.43.0.1", "{ip}");
        assert!(ips.insert(ip.clone()), "{ip} handed out twice");
    }
    let table = server.ok(&["get", "svc", "s0"]);
    let row = columns(table.lines().nth(1).unwrap());
    assert_eq!(row[..5], ["s0", "ClusterIP", row[2], "<none>", "80/TCP"]);
    assert!(ips.contains(row[2]));

    // Applying again keeps the address.
    let before = server.ok(&["get", "svc", "s0", "-o", "jsonpath={.spec.clusterIP}"]);
    std::fs::write(&manifest, service("s0", "  type: NodePort\n")).unwrap();
    server.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    assert_eq!(
        server.ok(&["get", "svc", "s0", "-o", "jsonpath={.spec.clusterIP}"]),
        before
    );

    // The address may not change once set.
    let patch = r#"{"spec":{"clusterIP":"10.43.200.200"}}"#;
    let err = server.fails(&["patch", "svc", "s0", "--type=merge", "-p", patch]);
    assert!(
        err.contains("spec.clusterIPs[0]: Invalid value")
            && err.contains("may not change once set"),
        "{err}"
    );
    // A taken address is refused with upstream's words, and freed on delete.
    let taken = before.clone();
    std::fs::write(
        &manifest,
        service("copy", &format!("  clusterIP: {taken}\n")),
    )
    .unwrap();
    let err = server.fails(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(err.contains("provided IP is already allocated"), "{err}");
    server.ok(&["delete", "svc", "s0"]);
    server.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    assert_eq!(
        server.ok(&["get", "svc", "copy", "-o", "jsonpath={.spec.clusterIP}"]),
        taken
    );

    std::fs::write(&manifest, service("np", "  type: NodePort\n")).unwrap();
    server.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let node_port: u16 = server
        .ok(&[
            "get",
            "svc",
            "np",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .parse()
        .unwrap();
    assert!((30000..=32767).contains(&node_port));
    let table = server.ok(&["get", "svc", "np"]);
    assert_eq!(
        columns(table.lines().nth(1).unwrap())[4],
        format!("80:{node_port}/TCP")
    );
}

/// The kube crate, as tug's own components and users' programs use it.
mod kube_client {
    use std::time::{Duration, Instant};

    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{
        Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
    };
    use kube::config::{KubeConfigOptions, Kubeconfig};

    use super::Server;

    pub(super) async fn client(server: &Server) -> kube::Client {
        let kubeconfig = Kubeconfig::read_from(&server.kubeconfig).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    fn configmap(name: &str, value: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "data": {"v": value},
        }))
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kube_lists_watches_and_resumes_from_a_resource_version() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path());
        let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
        let created = api
            .create(&PostParams::default(), &configmap("a", "1"))
            .await
            .unwrap();
        let list = api.list(&ListParams::default()).await.unwrap();
        assert_eq!(list.items.len(), 1);
        let listed_at = list.metadata.resource_version.unwrap();

        let mut stream = api
            .watch(&WatchParams::default(), &listed_at)
            .await
            .unwrap()
            .boxed();
        let patch = serde_json::json!({"data": {"v": "2"}});
        api.patch("a", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        let modified = match stream.try_next().await.unwrap() {
            Some(WatchEvent::Modified(cm)) => cm,
            other => panic!("expected the change, got {other:?}"),
        };
        assert_eq!(modified.data.unwrap()["v"], "2");
        let modified_at = modified.metadata.resource_version.unwrap();
        assert_ne!(
            Some(&modified_at),
            created.metadata.resource_version.as_ref()
        );
        drop(stream);

        // Changes made while nobody watched come when watching resumes.
        api.delete("a", &DeleteParams::default()).await.unwrap();
        let mut resumed = api
            .watch(&WatchParams::default(), &modified_at)
            .await
            .unwrap()
            .boxed();
        match resumed.try_next().await.unwrap() {
            Some(WatchEvent::Deleted(cm)) => assert_eq!(cm.metadata.name.as_deref(), Some("a")),
            other => panic!("expected the delete, got {other:?}"),
        }
        let err = api.get("a").await.unwrap_err();
        assert!(
            matches!(err, kube::Error::Api(ref status) if status.code == 404),
            "{err:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_sees_only_its_namespace_even_from_far_back() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path());
        let client = client(&server).await;
        let mine: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let other: Api<ConfigMap> = Api::namespaced(client, "kube-public");
        let params = PostParams::default();
        let first = mine
            .create(&params, &configmap("first", "1"))
            .await
            .unwrap();
        let from = first.metadata.resource_version.unwrap();

        // Live: a change in another namespace is not this watch's.
        let mut stream = mine
            .watch(&WatchParams::default(), &from)
            .await
            .unwrap()
            .boxed();
        other
            .create(&params, &configmap("elsewhere", "1"))
            .await
            .unwrap();
        mine.create(&params, &configmap("here", "1")).await.unwrap();
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Added(cm)) => assert_eq!(cm.metadata.name.as_deref(), Some("here")),
            other => panic!("expected `here` added, got {other:?}"),
        }
        drop(stream);

        // From further back than the server's watch cache keeps (4,096
        // changes of a kind): the older changes come from the store, the
        // newer from the cache, and still only this namespace's.
        let early = ["a-0", "a-1", "a-2"];
        for name in early {
            mine.create(&params, &configmap(name, "1")).await.unwrap();
        }
        futures::stream::iter(0..4200)
            .map(|i| {
                let other = other.clone();
                async move {
                    other
                        .create(&PostParams::default(), &configmap(&format!("n-{i}"), "1"))
                        .await
                        .unwrap()
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        let mut resumed = mine
            .watch(&WatchParams::default(), &from)
            .await
            .unwrap()
            .boxed();
        let mut seen = Vec::new();
        while seen.len() < 1 + early.len() {
            match resumed.try_next().await.unwrap() {
                Some(WatchEvent::Added(cm)) => seen.push(cm.metadata.name.unwrap()),
                other => panic!("expected additions, got {other:?}"),
            }
        }
        assert_eq!(seen, ["here", "a-0", "a-1", "a-2"]);
        mine.create(&params, &configmap("late", "1")).await.unwrap();
        match resumed.try_next().await.unwrap() {
            Some(WatchEvent::Added(cm)) => assert_eq!(cm.metadata.name.as_deref(), Some("late")),
            other => panic!("expected `late` added, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kube_server_side_apply_creates_conflicts_and_forces() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path());
        let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
        let manifest = |value: &str| {
            serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "applied"},
                "data": {"v": value},
            })
        };
        let created = api
            .patch(
                "applied",
                &PatchParams::apply("controller-a"),
                &Patch::Apply(manifest("1")),
            )
            .await
            .unwrap();
        let entries = created.metadata.managed_fields.unwrap();
        assert_eq!(
            (
                entries[0].manager.as_deref(),
                entries[0].operation.as_deref()
            ),
            (Some("controller-a"), Some("Apply"))
        );
        let refused = api
            .patch(
                "applied",
                &PatchParams::apply("controller-b"),
                &Patch::Apply(manifest("2")),
            )
            .await
            .unwrap_err();
        match refused {
            kube::Error::Api(status) => {
                assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
                assert_eq!(
                    status.message,
                    "Apply failed with 1 conflict: conflict with \"controller-a\": .data.v"
                );
            }
            other => panic!("a conflict expected, got {other:?}"),
        }
        let forced = api
            .patch(
                "applied",
                &PatchParams::apply("controller-b").force(),
                &Patch::Apply(manifest("2")),
            )
            .await
            .unwrap();
        assert_eq!(forced.data.unwrap()["v"], "2");
        let managers: Vec<String> = forced
            .metadata
            .managed_fields
            .unwrap()
            .into_iter()
            .filter_map(|e| e.manager)
            .collect();
        assert_eq!(managers, ["controller-b"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kube_gets_410_gone_for_a_compacted_resource_version() {
        let dir = tempfile::tempdir().unwrap();
        // Without the controller-manager, whose garbage collector watches
        // every kind: the watch cache of ConfigMaps would then hold the
        // history this test needs to be gone (as upstream's would).
        let server = Server::start_with(
            dir.path(),
            &["--compaction-interval", "1", "--disable-controller-manager"],
        );
        let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
        let first = api
            .create(&PostParams::default(), &configmap("c", "0"))
            .await
            .unwrap();
        let first_at = first.metadata.resource_version.unwrap();
        for n in 1..5 {
            let patch = serde_json::json!({"data": {"v": n.to_string()}});
            api.patch("c", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(
                Instant::now() < deadline,
                "revision {first_at} was never compacted"
            );
            let mut stream = api
                .watch(&WatchParams::default(), &first_at)
                .await
                .unwrap()
                .boxed();
            match tokio::time::timeout(Duration::from_secs(2), stream.next()).await {
                Ok(Some(Ok(WatchEvent::Error(status)))) => {
                    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
                    break;
                }
                Ok(Some(Ok(_))) | Err(_) => {}
                other => panic!("watch from {first_at}: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_resumes_across_a_restart_without_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path());
        let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
        let list = api.list(&ListParams::default()).await.unwrap();
        let from = list.metadata.resource_version.unwrap();
        let mut stream = api
            .watch(&WatchParams::default(), &from)
            .await
            .unwrap()
            .boxed();
        api.create(&PostParams::default(), &configmap("before", "1"))
            .await
            .unwrap();
        let last_seen = match stream.try_next().await.unwrap() {
            Some(WatchEvent::Added(cm)) => cm.metadata.resource_version.unwrap(),
            other => panic!("expected the creation, got {other:?}"),
        };
        drop(stream);

        let stopped = server.stop();
        let server = stopped.start(dir.path());
        let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
        // Written after the restart, before anyone watches again.
        api.create(&PostParams::default(), &configmap("while-away", "1"))
            .await
            .unwrap();
        let mut resumed = api
            .watch(&WatchParams::default(), &last_seen)
            .await
            .unwrap()
            .boxed();
        api.create(&PostParams::default(), &configmap("after", "1"))
            .await
            .unwrap();
        let mut names = Vec::new();
        while names.len() < 2 {
            match tokio::time::timeout(Duration::from_secs(10), resumed.try_next())
                .await
                .expect("an event within 10 s")
                .unwrap()
            {
                Some(WatchEvent::Added(cm)) => names.push(cm.metadata.name.unwrap()),
                Some(WatchEvent::Bookmark(_)) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(names, ["while-away", "after"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn custom_resources_round_trip_through_the_kube_crate() {
        use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path());
        let crd = dir.path().join("crd.yaml");
        std::fs::write(&crd, super::CRD).unwrap();
        server.ok(&["apply", "-f", crd.to_str().unwrap()]);
        server.ok(&[
            "wait",
            "--for",
            "condition=established",
            "crd/widgets.example.com",
            "--timeout=10s",
        ]);
        let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
        let resource = ApiResource::from_gvk_with_plural(&gvk, "widgets");
        let api: Api<DynamicObject> =
            Api::namespaced_with(client(&server).await, "default", &resource);
        let widget =
            DynamicObject::new("w1", &resource).data(serde_json::json!({"spec": {"size": 2}}));
        let created = api.create(&PostParams::default(), &widget).await.unwrap();
        let listed = api.list(&ListParams::default()).await.unwrap();
        assert_eq!(listed.items.len(), 1);
        assert_eq!(listed.items[0].data["spec"]["size"], 2);
        let mut stream = api
            .watch(
                &WatchParams::default(),
                &listed.metadata.resource_version.unwrap(),
            )
            .await
            .unwrap()
            .boxed();
        let patch = serde_json::json!({"spec": {"size": 4}});
        api.patch("w1", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Modified(widget)) => {
                assert_eq!(widget.data["spec"]["size"], 4);
                assert_ne!(
                    widget.metadata.resource_version,
                    created.metadata.resource_version
                );
            }
            other => panic!("expected the change, got {other:?}"),
        }
        api.delete("w1", &DeleteParams::default()).await.unwrap();
        let err = api.get("w1").await.unwrap_err();
        assert!(
            matches!(err, kube::Error::Api(ref status) if status.code == 404),
            "{err:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metadata_only_reads_answer_partial_object_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path());
        let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
        api.create(&PostParams::default(), &configmap("a", "secret-ish"))
            .await
            .unwrap();
        let got = api.get_metadata("a").await.unwrap();
        assert_eq!(got.metadata.name.as_deref(), Some("a"));
        let listed = api.list_metadata(&ListParams::default()).await.unwrap();
        assert_eq!(listed.items.len(), 1);
        let from = listed.metadata.resource_version.unwrap();
        let mut stream = api
            .watch_metadata(&WatchParams::default(), &from)
            .await
            .unwrap()
            .boxed();
        let patch = serde_json::json!({"metadata": {"labels": {"x": "y"}}});
        api.patch("a", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Modified(meta)) => {
                assert_eq!(meta.metadata.labels.unwrap()["x"], "y");
            }
            other => panic!("expected the change, got {other:?}"),
        }
        // The raw answer holds metadata and nothing else.
        let curl = super::Curl::admin(&server);
        let output = std::process::Command::new("curl")
            .args(["-s", "--cacert"])
            .arg(curl.dir.join("ca.crt"))
            .arg("--cert")
            .arg(curl.dir.join("admin.crt"))
            .arg("--key")
            .arg(curl.dir.join("admin.key"))
            .args([
                "-H",
                "Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
            ])
            .arg(format!("{}/api/v1/namespaces/default/configmaps", curl.url))
            .output()
            .unwrap();
        let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(list["kind"], "PartialObjectMetadataList");
        assert_eq!(list["items"][0]["kind"], "PartialObjectMetadata");
        assert_eq!(list["items"][0].get("data"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streaming_lists_end_their_initial_events_with_a_bookmark() {
        use kube::runtime::watcher;
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path());
        let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
        for name in ["one", "two"] {
            api.create(&PostParams::default(), &configmap(name, "1"))
                .await
                .unwrap();
        }
        // kube asks for resourceVersion 0 ("any"): served from the watch
        // cache as it is, as upstream does, which may not have the second
        // configmap yet under load. Wait until a read from it does.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while api
            .list(&ListParams::default().match_any())
            .await
            .unwrap()
            .items
            .len()
            < 2
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the watch cache has both within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // sendInitialEvents=true, resourceVersionMatch=NotOlderThan: the
        // watcher knows the list is complete only from the bookmark.
        let config = watcher::Config::default().streaming_lists();
        let mut events = watcher(api.clone(), config).boxed();
        let mut initial = Vec::new();
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events.try_next())
                .await
                .expect("the watcher yields within 10 s")
                .unwrap()
                .unwrap();
            match event {
                watcher::Event::InitApply(cm) => initial.push(cm.metadata.name.unwrap()),
                watcher::Event::InitDone => break,
                _ => {}
            }
        }
        initial.sort();
        assert_eq!(initial, ["one", "two"]);
        api.delete("one", &DeleteParams::default()).await.unwrap();
        let event = tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .expect("the deletion arrives within 10 s")
            .unwrap()
            .unwrap();
        match event {
            watcher::Event::Delete(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("one")),
            other => panic!("expected the deletion, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_with_a_selector_sees_objects_enter_and_leave_it() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path());
        let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
        let list = api.list(&ListParams::default()).await.unwrap();
        let from = list.metadata.resource_version.unwrap();
        let params = WatchParams::default().labels("team=blue");
        let mut stream = api.watch(&params, &from).await.unwrap().boxed();
        api.create(&PostParams::default(), &configmap("plain", "1"))
            .await
            .unwrap();
        let label = |team: &str| serde_json::json!({"metadata": {"labels": {"team": team}}});
        for team in ["blue", "red"] {
            api.patch(
                "plain",
                &PatchParams::default(),
                &Patch::Merge(&label(team)),
            )
            .await
            .unwrap();
        }
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let event = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .unwrap();
            seen.push(match event {
                WatchEvent::Added(cm) => ("ADDED", cm.metadata.labels.unwrap()["team"].clone()),
                WatchEvent::Deleted(cm) => ("DELETED", cm.metadata.labels.unwrap()["team"].clone()),
                WatchEvent::Bookmark(_) => continue,
                other => panic!("unexpected {other:?}"),
            });
        }
        // Created without the label: unseen. Labelled: ADDED. Relabelled
        // away: DELETED, carrying the new state.
        assert_eq!(
            seen,
            [
                ("ADDED", "blue".to_string()),
                ("DELETED", "red".to_string())
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kube_runtime_watcher_sees_the_initial_state_and_changes() {
        use kube::runtime::watcher;
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path());
        let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
        api.create(&PostParams::default(), &configmap("before", "1"))
            .await
            .unwrap();
        let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
        let mut seen_before = false;
        let mut created_after = false;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let event = tokio::time::timeout(Duration::from_secs(10), events.try_next())
                .await
                .expect("the watcher yields within 10 s")
                .unwrap()
                .unwrap();
            match event {
                watcher::Event::InitApply(cm) if cm.metadata.name.as_deref() == Some("before") => {
                    seen_before = true
                }
                watcher::Event::InitDone => {
                    api.create(&PostParams::default(), &configmap("after", "1"))
                        .await
                        .unwrap();
                }
                watcher::Event::Apply(cm) if cm.metadata.name.as_deref() == Some("after") => {
                    created_after = true;
                    break;
                }
                _ => {}
            }
        }
        assert!(
            seen_before && created_after,
            "before {seen_before}, after {created_after}"
        );
    }
}

#[test]
fn kubectl_auth_whoami_and_can_i_answer_for_the_admin() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let whoami = server.ok(&["auth", "whoami"]);
    let rows: Vec<Vec<&str>> = whoami.lines().map(columns).collect();
    assert_eq!(rows[0], ["ATTRIBUTE", "VALUE"]);
    assert_eq!(rows[1], ["Username", "system:admin"]);
    assert_eq!(
        rows[2],
        ["Groups", "[system:masters", "system:authenticated]"]
    );
    assert_eq!(
        server.ok(&["auth", "can-i", "create", "deployments"]),
        "yes\n"
    );
    assert_eq!(server.ok(&["auth", "can-i", "get", "/healthz"]), "yes\n");
    let err = server.fails(&["get", "selfsubjectreviews"]);
    assert_eq!(
        err.trim(),
        "Error from server (MethodNotAllowed): the server does not allow this method on the requested resource"
    );
}

#[test]
fn kubectl_create_deployment_sends_protobuf_that_is_understood() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    assert_eq!(
        server.ok(&[
            "create",
            "deployment",
            "web",
            "--image=busybox:1.36",
            "--replicas=3",
            "--port=8080",
            "--",
            "httpd",
            "-f",
            "-p",
            "8080",
        ]),
        "deployment.apps/web created\n"
    );
    let deployment: serde_json::Value =
        serde_json::from_str(&server.ok(&["get", "deploy", "web", "-o", "json"])).unwrap();
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 3);
    assert_eq!(spec["selector"]["matchLabels"]["app"], "web");
    assert_eq!(spec["strategy"]["type"], "RollingUpdate");
    let container = &spec["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "busybox:1.36");
    assert_eq!(
        container["command"],
        serde_json::json!(["httpd", "-f", "-p", "8080"])
    );
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert!(spec["template"]["spec"].get("initContainers").is_none());
    // Its ReplicaSet makes three pods, which no node runs.
    until(30, "three up-to-date replicas", || {
        let table = server.ok(&["get", "deploy", "web"]);
        (columns(table.lines().nth(1).unwrap())[..4] == ["web", "0/3", "3", "0"]).then_some(())
    });
    // Every field of every kind is read: a job made from a cron job whose
    // pods have probes (sent as protobuf) keeps them.
    server.ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox:1.36",
        "--schedule=* * * * *",
    ]);
    let probe = r#"{"spec":{"jobTemplate":{"spec":{"template":{"spec":{"containers":[{"name":"tick","livenessProbe":{"exec":{"command":["true"]},"periodSeconds":7}}]}}}}}}"#;
    server.ok(&["patch", "cronjob", "tick", "-p", probe]);
    assert_eq!(
        server.ok(&["create", "job", "j", "--from=cronjob/tick"]),
        "job.batch/j created\n"
    );
    assert_eq!(
        server.ok(&[
            "get",
            "job",
            "j",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].livenessProbe}"
        ]),
        r#"{"exec":{"command":["true"]},"failureThreshold":3,"periodSeconds":7,"successThreshold":1,"timeoutSeconds":1}"#
    );
}

#[test]
fn bearer_tokens_from_the_token_file_and_the_node_join_token_authenticate() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        "# token,user,uid,groups\ns3cret,alice,1001,\"dev,ops\"\n",
    )
    .unwrap();
    let server = Server::start_with(
        dir.path(),
        &[
            "--token-auth-file",
            tokens.to_str().unwrap(),
            "--token",
            "join-me",
        ],
    );
    let curl = Curl::admin(&server);

    let as_token = |token: &str, args: &[&str]| curl.kubectl_with_token(&server, token, args);
    let whoami = as_token("s3cret", &["auth", "whoami"]);
    assert!(whoami.status.success(), "{whoami:?}");
    let rows: Vec<Vec<String>> = String::from_utf8_lossy(&whoami.stdout)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    assert_eq!(rows[1], ["Username", "alice"]);
    assert_eq!(rows[2], ["UID", "1001"]);
    assert_eq!(rows[3], ["Groups", "[dev", "ops", "system:authenticated]"]);
    let listed = as_token("s3cret", &["get", "ns", "default", "-o", "name"]);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        "namespace/default\n"
    );
    let rules = as_token("s3cret", &["auth", "can-i", "--list"]);
    let rules = String::from_utf8_lossy(&rules.stdout).to_string();
    let rows: Vec<Vec<&str>> = rules.lines().map(columns).collect();
    assert_eq!(
        rows[0],
        [
            "Resources",
            "Non-Resource",
            "URLs",
            "Resource",
            "Names",
            "Verbs"
        ]
    );
    assert!(rows.contains(&vec!["*.*", "[]", "[]", "[*]"]), "{rules}");
    assert!(rows.contains(&vec!["[*]", "[]", "[*]"]), "{rules}");

    let refused = as_token("wrong", &["get", "ns"]);
    assert!(!refused.status.success());
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim(),
        "error: You must be logged in to the server (Unauthorized)"
    );

    // The node-join token is kept where agents' operators find it, private.
    let saved = dir.path().join("data/server/node-token");
    // It is the full token, k3s's form: the CA's hash, then the secret.
    let full = std::fs::read_to_string(&saved).unwrap();
    assert!(
        full.starts_with("K10") && full.ends_with("::server:join-me\n"),
        "{full}"
    );
    let mode = std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let review = |token: &str| {
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        });
        curl.send(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            "application/json",
            body.to_string().as_bytes(),
        )
    };
    let (code, answer) = review("join-me");
    assert_eq!(code, 201, "{answer}");
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    assert_eq!(
        answer["status"]["user"]["username"],
        "system:bootstrap:tug-node-join"
    );
    let (_, answer) = review(full.trim());
    assert_eq!(
        answer["status"]["user"]["username"],
        "system:bootstrap:tug-node-join"
    );
    let (_, answer) = review("nope");
    assert_eq!(answer["status"]["authenticated"], serde_json::Value::Null);

    // SubjectAccessReview names its subject; without one it is invalid.
    let sar = |spec: serde_json::Value| {
        let body = serde_json::json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": spec,
        });
        curl.send(
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            "application/json",
            body.to_string().as_bytes(),
        )
    };
    let (code, answer) = sar(serde_json::json!({
        "user": "alice",
        "groups": ["system:authenticated"],
        "resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "default"},
    }));
    assert_eq!(
        (code, &answer["status"]["allowed"]),
        (201, &serde_json::json!(true))
    );
    let message = status(
        sar(serde_json::json!({"resourceAttributes": {"verb": "get", "resource": "pods"}})),
        422,
        "Invalid",
    );
    assert!(
        message.contains(
            "spec.user: Invalid value: \"\": at least one of user or group must be specified"
        ),
        "{message}"
    );

    // The saved token survives a restart without --token.
    let stopped = server.stop();
    let server = stopped.start(dir.path());
    drop(server);
    // It is the full token, k3s's form: the CA's hash, then the secret.
    let full = std::fs::read_to_string(&saved).unwrap();
    assert!(
        full.starts_with("K10") && full.ends_with("::server:join-me\n"),
        "{full}"
    );
}

#[test]
fn lists_honour_resource_version_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let curl = Curl::admin(&server);
    for name in ["a", "b", "c"] {
        server.ok(&["create", "configmap", name]);
    }
    let get = |query: &str| {
        curl.send(
            "GET",
            &format!("/api/v1/namespaces/default/configmaps?{query}"),
            "application/json",
            b"",
        )
    };
    // Unset: consistent, everything written so far.
    let (code, list) = get("");
    assert_eq!(code, 200);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(list["kind"], "ConfigMapList");
    assert_eq!(list["items"][0].get("kind"), None);
    let at: i64 = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // Pages: two, then the rest from the continue token.
    let (_, page) = get("limit=2");
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, rest) = get(&format!("limit=2&continue={token}"));
    assert_eq!(rest["items"][0]["metadata"]["name"], "c");
    assert_eq!(rest["metadata"].get("continue"), None);

    // Not older than a revision the server has: served; one it does not
    // have yet: 504 after the wait, as upstream.
    let (code, _) = get(&format!(
        "resourceVersion={at}&resourceVersionMatch=NotOlderThan"
    ));
    assert_eq!(code, 200);
    let message = status(
        get(&format!(
            "resourceVersion={}&resourceVersionMatch=NotOlderThan",
            at + 1000
        )),
        504,
        "Timeout",
    );
    assert!(
        message.starts_with(&format!("Too large resource version: {}", at + 1000)),
        "{message}"
    );
    let message = status(get("resourceVersionMatch=NotOlderThan"), 422, "Invalid");
    assert!(
        message.contains("resourceVersionMatch is forbidden unless resourceVersion is provided"),
        "{message}"
    );
    let message = status(
        curl.send(
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true",
            "application/json",
            b"",
        ),
        422,
        "Invalid",
    );
    assert!(message.contains("resourceVersionMatch"), "{message}");
}

#[test]
fn kubectl_explain_reads_the_schemas_of_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let pods = server.ok(&["explain", "pods"]);
    let lines: Vec<&str> = pods.lines().collect();
    assert_eq!(lines[0], "KIND:       Pod");
    assert_eq!(lines[1], "VERSION:    v1");
    assert!(
        pods.contains(
            "DESCRIPTION:\n    Pod is a collection of containers that can run on a host."
        ),
        "{pods}"
    );
    assert!(pods.contains("FIELDS:\n"), "{pods}");
    assert!(pods.contains("  spec\t<PodSpec>\n"), "{pods}");
    assert!(pods.contains("  metadata\t<ObjectMeta>\n"), "{pods}");

    let containers = server.ok(&["explain", "pods.spec.containers"]);
    assert!(
        containers.contains("FIELD: containers <[]Container>"),
        "{containers}"
    );
    assert!(containers.contains("  image\t<string>\n"), "{containers}");
    assert!(
        containers.contains("  name\t<string> -required-\n"),
        "{containers}"
    );

    let deployments = server.ok(&["explain", "deployments", "--api-version=apps/v1"]);
    assert!(
        deployments.starts_with("GROUP:      apps\nKIND:       Deployment\nVERSION:    v1\n"),
        "{deployments}"
    );
    let recursive = server.ok(&["explain", "deployments", "--recursive"]);
    assert!(
        recursive.contains("      containers\t<[]Container> -required-\n"),
        "{recursive}"
    );

    let err = server.fails(&["explain", "pods.spec.nope"]);
    assert!(err.contains("field \"nope\" does not exist"), "{err}");

    // An older kubectl reads the same documents.
    let old = server.kubectl_with(
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.29",
        &["explain", "configmaps"],
    );
    let old = String::from_utf8_lossy(&old.stdout);
    assert!(
        old.starts_with("KIND:       ConfigMap\nVERSION:    v1\n"),
        "{old}"
    );
    assert!(old.contains("  data\t<map[string]string>\n"), "{old}");
}

#[test]
fn kubectl_create_generators_send_protobuf_that_is_understood() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&server.ok(&all)).unwrap()
    };
    server.ok(&["create", "service", "nodeport", "web", "--tcp=80:8080"]);
    let service = json(&["service", "web"]);
    assert_eq!(service["spec"]["type"], "NodePort");
    assert_eq!(service["spec"]["ports"][0]["port"], 80);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], 8080);
    assert!(service["spec"]["ports"][0]["nodePort"].as_i64().unwrap() >= 30000);
    assert_eq!(service["spec"]["selector"]["app"], "web");

    server.ok(&[
        "create",
        "job",
        "hello",
        "--image=busybox",
        "--",
        "echo",
        "hi",
    ]);
    let job = json(&["job", "hello"]);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["command"],
        serde_json::json!(["echo", "hi"])
    );
    assert_eq!(pod["restartPolicy"], "Never");

    server.ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=*/5 * * * *",
        "--",
        "date",
    ]);
    let cronjob = json(&["cronjob", "tick"]);
    assert_eq!(cronjob["spec"]["schedule"], "*/5 * * * *");
    assert_eq!(
        cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"],
        "OnFailure"
    );

    server.ok(&["create", "serviceaccount", "robot"]);
    server.ok(&[
        "create",
        "role",
        "reader",
        "--verb=get,list",
        "--resource=pods",
    ]);
    let role = json(&["role", "reader"]);
    assert_eq!(
        role["rules"][0]["verbs"],
        serde_json::json!(["get", "list"])
    );
    server.ok(&[
        "create",
        "rolebinding",
        "read",
        "--role=reader",
        "--serviceaccount=default:robot",
    ]);
    let binding = json(&["rolebinding", "read"]);
    assert_eq!(binding["roleRef"]["name"], "reader");
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
    assert_eq!(binding["subjects"][0]["namespace"], "default");
    server.ok(&[
        "create",
        "clusterrolebinding",
        "admins",
        "--clusterrole=admin",
        "--group=ops",
    ]);
    assert_eq!(
        json(&["clusterrolebinding", "admins"])["subjects"][0]["kind"],
        "Group"
    );

    server.ok(&["create", "quota", "small", "--hard=pods=10,cpu=2"]);
    assert_eq!(
        json(&["quota", "small"])["spec"]["hard"],
        serde_json::json!({"pods": "10", "cpu": "2"})
    );
    // Zero is a value, not an absence.
    server.ok(&["create", "priorityclass", "lowest", "--value=0"]);
    assert_eq!(json(&["priorityclass", "lowest"])["value"], 0);
    server.ok(&[
        "create",
        "pdb",
        "keep",
        "--selector=app=web",
        "--max-unavailable=0",
    ]);
    assert_eq!(json(&["pdb", "keep"])["spec"]["maxUnavailable"], 0);
    server.ok(&[
        "create",
        "ingress",
        "site",
        "--rule=example.com/shop=web:80",
    ]);
    let ingress = json(&["ingress", "site"]);
    let path = &ingress["spec"]["rules"][0]["http"]["paths"][0];
    assert_eq!(ingress["spec"]["rules"][0]["host"], "example.com");
    assert_eq!(path["path"], "/shop");
    assert_eq!(path["backend"]["service"]["port"]["number"], 80);
}

#[test]
fn pods_on_a_node_are_deleted_gracefully_and_collections_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let curl = Curl::admin(&server);
    let pod = |name: &str, node: &str| {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 45,
                     "containers": [{"name": "c", "image": "busybox"}]},
        })
        .to_string()
    };
    for (name, node) in [("placed", "node-a"), ("pending", "")] {
        let (code, _) = curl.send(
            "POST",
            "/api/v1/namespaces/default/pods",
            "application/json",
            pod(name, node).as_bytes(),
        );
        assert_eq!(code, 201);
    }
    // On a node: marked with its grace period, left for the node to stop.
    server.ok(&["delete", "pod", "placed", "--wait=false"]);
    let placed: serde_json::Value =
        serde_json::from_str(&server.ok(&["get", "pod", "placed", "-o", "json"])).unwrap();
    assert_eq!(placed["metadata"]["deletionGracePeriodSeconds"], 45);
    assert!(placed["metadata"]["deletionTimestamp"].is_string());
    let table = server.ok(&["get", "pod", "placed"]);
    assert_eq!(columns(table.lines().nth(1).unwrap())[2], "Terminating");
    // A shorter grace period shortens it; zero (what the node sends once
    // the pod has stopped, or --force) removes it.
    let (code, shortened) = curl.send(
        "DELETE",
        "/api/v1/namespaces/default/pods/placed",
        "application/json",
        br#"{"gracePeriodSeconds": 5}"#,
    );
    assert_eq!(code, 200);
    assert_eq!(shortened["metadata"]["deletionGracePeriodSeconds"], 5);
    server.ok(&["delete", "pod", "placed", "--grace-period=0", "--force"]);
    let gone = server.fails(&["get", "pod", "placed"]);
    assert!(gone.contains("pods \"placed\" not found"), "{gone}");
    // On no node: gone at once.
    server.ok(&["delete", "pod", "pending"]);
    assert!(
        server
            .fails(&["get", "pod", "pending"])
            .contains("not found")
    );

    // DELETE of a collection deletes what matches its selector.
    for (name, team) in [("a", "blue"), ("b", "blue"), ("c", "red")] {
        server.ok(&["create", "configmap", name]);
        server.ok(&["label", "configmap", name, &format!("team={team}")]);
    }
    let (code, deleted) = curl.send(
        "DELETE",
        "/api/v1/namespaces/default/configmaps?labelSelector=team%3Dblue",
        "application/json",
        b"",
    );
    assert_eq!(code, 200, "{deleted}");
    assert_eq!(deleted["kind"], "ConfigMapList");
    let names: Vec<&str> = deleted["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let left = server.ok(&["get", "configmaps", "-o", "name", "-l", "team"]);
    assert_eq!(left, "configmap/c\n");
}

#[test]
fn kubectl_patch_edit_replace_diff_wait_and_prune_work() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let manifest = dir.path().join("cm.yaml");
    std::fs::write(&manifest, CONFIGMAP).unwrap();
    let file = manifest.to_str().unwrap();
    server.ok(&["apply", "-f", file]);
    let data = || server.ok(&["get", "cm", "app", "-o", "jsonpath={.data}"]);

    // All three patch types.
    server.ok(&[
        "patch",
        "cm",
        "app",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/data/c","value":"3"}]"#,
    ]);
    server.ok(&[
        "patch",
        "cm",
        "app",
        "--type=merge",
        "-p",
        r#"{"data":{"d":"4"}}"#,
    ]);
    server.ok(&["patch", "cm", "app", "-p", r#"{"data":{"b":null}}"#]);
    assert_eq!(data(), r#"{"a":"1","c":"3","d":"4"}"#);

    // edit, with an editor that changes one value.
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/^  a: \"1\"/  a: \"9\"/' \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let edited = Command::new("kubectl")
        .arg(format!(
            "--cache-dir={}",
            dir.path().join("cache").display()
        ))
        .args(["edit", "cm", "app"])
        .env("KUBECONFIG", &server.kubeconfig)
        .env("HOME", dir.path())
        .env("EDITOR", &editor)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&edited.stdout),
        "configmap/app edited\n"
    );
    assert_eq!(data(), r#"{"a":"9","c":"3","d":"4"}"#);

    // diff shows what apply would change, and exits 1 for a difference.
    let diff = server.kubectl(&["diff", "-f", file]);
    assert_eq!(diff.status.code(), Some(1));
    let diff = String::from_utf8_lossy(&diff.stdout);
    assert!(diff.contains("-  a: \"9\"\n+  a: \"1\"\n"), "{diff}");

    // replace puts the whole object.
    let yaml = server
        .ok(&["get", "cm", "app", "-o", "yaml"])
        .replace("team: blue", "team: red");
    let replaced = dir.path().join("replaced.yaml");
    std::fs::write(&replaced, yaml).unwrap();
    assert_eq!(
        server.ok(&["replace", "-f", replaced.to_str().unwrap()]),
        "configmap/app replaced\n"
    );
    assert_eq!(
        server.ok(&["get", "cm", "-l", "team=red", "-o", "name"]),
        "configmap/app\n"
    );

    // wait for a field, and for deletion.
    server.ok(&["create", "namespace", "waiting"]);
    assert_eq!(
        server.ok(&[
            "wait",
            "--for=jsonpath={.status.phase}=Active",
            "namespace/waiting",
            "--timeout=10s"
        ]),
        "namespace/waiting condition met\n"
    );
    server.ok(&["delete", "cm", "app", "--wait=false"]);
    server.ok(&["wait", "--for=delete", "cm/app", "--timeout=10s"]);

    // apply --prune removes what left the manifests.
    let set = dir.path().join("set");
    std::fs::create_dir(&set).unwrap();
    for name in ["one", "two"] {
        std::fs::write(
            set.join(format!("{name}.yaml")),
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{set: p}}\n"
            ),
        )
        .unwrap();
    }
    let set_dir = set.to_str().unwrap();
    server.ok(&["apply", "-f", set_dir, "-l", "set=p", "--prune"]);
    std::fs::remove_file(set.join("two.yaml")).unwrap();
    let pruned = server.ok(&["apply", "-f", set_dir, "-l", "set=p", "--prune"]);
    assert!(pruned.contains("configmap/two pruned"), "{pruned}");
    assert_eq!(
        server.ok(&["get", "cm", "-l", "set=p", "-o", "name"]),
        "configmap/one\n"
    );
}

#[test]
fn unknown_fields_are_refused_or_dropped_with_a_warning_as_field_validation_asks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let manifest = dir.path().join("deployment.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - name: web\n        image: busybox\n        imagee: typo\n",
    )
    .unwrap();
    let file = manifest.to_str().unwrap();
    // kubectl's default is Strict: refused, naming the field.
    let err = server.fails(&["apply", "-f", file]);
    assert!(
        err.contains("Error from server (BadRequest): error when creating \"")
            && err.contains("Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.template.spec.containers[0].imagee\""),
        "{err}"
    );
    // Warn: created without the field, and a warning says so.
    let warned = server.kubectl(&["apply", "-f", file, "--validate=warn"]);
    assert!(warned.status.success());
    assert_eq!(
        String::from_utf8_lossy(&warned.stderr),
        "Warning: unknown field \"spec.template.spec.containers[0].imagee\"\n"
    );
    let container = server.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0]}",
    ]);
    assert!(!container.contains("imagee"), "{container}");
    // Patches too.
    let patched = server.kubectl(&["patch", "deploy", "web", "-p", r#"{"spec":{"bogus":1}}"#]);
    assert_eq!(
        String::from_utf8_lossy(&patched.stderr),
        "Warning: unknown field \"spec.bogus\"\n"
    );
    // A `kind: List`, as `get -o yaml` prints several objects, is checked
    // by kubectl itself against /openapi/v2: it applies back as it came...
    server.ok(&["create", "configmap", "settings", "--from-literal=a=1"]);
    let list = dir.path().join("list.yaml");
    std::fs::write(&list, server.ok(&["get", "deploy,configmap", "-o", "yaml"])).unwrap();
    let applied = server.ok(&["apply", "-f", list.to_str().unwrap()]);
    assert!(
        applied.contains("deployment.apps/web") && applied.contains("configmap/settings"),
        "{applied}"
    );
    // ...and an unknown field in one of its items is kubectl's error.
    std::fs::write(
        &list,
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: fine}\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: web2}\n  spec:\n    selector: {matchLabels: {app: web}}\n    template:\n      metadata: {labels: {app: web}}\n      spec:\n        containers:\n        - {name: web, image: busybox, imagee: typo}\n",
    )
    .unwrap();
    let err = server.fails(&["create", "-f", list.to_str().unwrap()]);
    assert!(
        err.contains("unknown field \"imagee\" in io.k8s.api.core.v1.Container"),
        "{err}"
    );
    server.fails(&["get", "configmap", "fine"]);
    let created = server.ok(&["create", "-f", list.to_str().unwrap(), "--validate=false"]);
    assert!(
        created.contains("deployment.apps/web2 created"),
        "{created}"
    );
}

#[test]
fn events_recorded_through_events_k8s_io_are_core_events_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let curl = Curl::admin(&server);
    let event = serde_json::json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "web.1"},
        "eventTime": "2026-11-23T10:00:00.000000Z",
        "reportingController": "tug.dev/agent",
        "reportingInstance": "node-a",
        "action": "Starting",
        "reason": "Started",
        "type": "Normal",
        "regarding": {"kind": "Pod", "namespace": "default", "name": "web", "apiVersion": "v1"},
        "note": "Started container web",
    });
    let (code, created) = curl.send(
        "POST",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        "application/json",
        event.to_string().as_bytes(),
    );
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["note"], "Started container web");
    assert_eq!(created["regarding"]["name"], "web");

    // The core view of the same event.
    let core: serde_json::Value =
        serde_json::from_str(&server.ok(&["get", "events", "web.1", "-o", "json"])).unwrap();
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["message"], "Started container web");
    assert_eq!(core["involvedObject"]["name"], "web");
    assert_eq!(core["reportingComponent"], "tug.dev/agent");
    assert_eq!(core.get("note"), None);
    // And the events.k8s.io view lists it.
    let listed = server.ok(&[
        "get",
        "events.events.k8s.io",
        "-o",
        "jsonpath={.items[*].note}",
    ]);
    assert_eq!(listed, "Started container web");
}

#[test]
fn kubectl_autoscale_creates_an_hpa_served_as_v2_and_v1() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let versions = server.ok(&["api-versions"]);
    assert!(
        versions.lines().any(|l| l == "autoscaling/v1"),
        "{versions}"
    );
    assert!(
        versions.lines().any(|l| l == "autoscaling/v2"),
        "{versions}"
    );
    server.ok(&["create", "deployment", "web", "--image=busybox"]);
    assert_eq!(
        server.ok(&[
            "autoscale",
            "deployment",
            "web",
            "--max=5",
            "--cpu-percent=60"
        ]),
        "horizontalpodautoscaler.autoscaling/web autoscaled\n"
    );
    let curl = Curl::admin(&server);
    let path = |version: &str| {
        format!("/apis/autoscaling/{version}/namespaces/default/horizontalpodautoscalers")
    };
    let (_, v2) = curl.send(
        "GET",
        &format!("{}/web", path("v2")),
        "application/json",
        b"",
    );
    assert_eq!(v2["spec"]["minReplicas"], 1);
    assert_eq!(v2["spec"]["maxReplicas"], 5);
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        60
    );
    let (_, v1) = curl.send(
        "GET",
        &format!("{}/web", path("v1")),
        "application/json",
        b"",
    );
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
    assert_eq!(v1["spec"].get("metrics"), None);
    // Lists (from the watch cache) convert too; a v1 write is seen in v2.
    let (_, listed) = curl.send("GET", &path("v1"), "application/json", b"");
    assert_eq!(
        listed["items"][0]["spec"]["targetCPUUtilizationPercentage"],
        60
    );
    let (code, _) = curl.send(
        "PATCH",
        &format!("{}/web", path("v1")),
        "application/merge-patch+json",
        br#"{"spec":{"targetCPUUtilizationPercentage":75}}"#,
    );
    assert_eq!(code, 200);
    let (_, v2) = curl.send(
        "GET",
        &format!("{}/web", path("v2")),
        "application/json",
        b"",
    );
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        75
    );
}

#[test]
fn service_account_tokens_authenticate_until_their_account_goes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let curl = Curl::admin(&server);
    server.ok(&["create", "serviceaccount", "robot"]);
    let token = server.ok(&["create", "token", "robot"]).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let as_robot = |args: &[&str]| curl.kubectl_with_token(&server, &token, args);
    let whoami = as_robot(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        r#"system:serviceaccount:default:robot ["system:serviceaccounts","system:serviceaccounts:default","system:authenticated"]"#
    );
    let review = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    });
    let (_, answer) = curl.send(
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        "application/json",
        review.to_string().as_bytes(),
    );
    assert_eq!(answer["status"]["authenticated"], true);
    assert_eq!(
        answer["status"]["user"]["username"],
        "system:serviceaccount:default:robot"
    );

    let short = server.fails(&["create", "token", "robot", "--duration=1m"]);
    assert!(
        short.contains("spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"),
        "{short}"
    );
    assert!(
        server
            .fails(&["create", "token", "nobody"])
            .contains("serviceaccounts \"nobody\" not found")
    );

    // The account goes, and its tokens with it.
    server.ok(&["delete", "serviceaccount", "robot"]);
    let refused = as_robot(&["get", "ns"]);
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim(),
        "error: You must be logged in to the server (Unauthorized)"
    );
}

const CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas, labelSelectorPath: .status.selector}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Ready, type: boolean, jsonPath: .status.ready}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What the widget should be.
            required: [size]
            properties:
              size: {type: integer, description: How big.}
              colour: {type: string, enum: [blue, red]}
              replicas: {type: integer}
              weight: {type: integer, minimum: 1, maximum: 10}
              code: {type: string, pattern: '^[a-z]+$', maxLength: 6}
              tags: {type: array, items: {type: string}, maxItems: 2}
              ports:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [port]
                items:
                  type: object
                  required: [port]
                  properties:
                    port: {type: integer}
                    name: {type: string}
          status:
            type: object
            properties:
              ready: {type: boolean}
              replicas: {type: integer}
              selector: {type: string}
";

#[test]
fn custom_resources_are_served_validated_and_go_with_their_definition() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let crd = write("crd.yaml", CRD);
    server.ok(&["apply", "-f", &crd]);
    assert_eq!(
        server.ok(&[
            "wait",
            "--for",
            "condition=established",
            "crd/widgets.example.com",
            "--timeout=10s"
        ]),
        "customresourcedefinition.apiextensions.k8s.io/widgets.example.com condition met\n"
    );
    let resources = server.ok(&["api-resources", "--api-group=example.com"]);
    assert_eq!(
        columns(resources.lines().nth(1).unwrap()),
        ["widgets", "wd", "example.com/v1", "true", "Widget"]
    );

    let widget = write(
        "widget.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3, colour: blue}\n",
    );
    assert_eq!(
        server.ok(&["apply", "-f", &widget]),
        "widget.example.com/w1 created\n"
    );
    assert_eq!(
        server.ok(&["get", "wd", "-o", "name"]),
        "widget.example.com/w1\n"
    );
    let explained = server.ok(&["explain", "widgets.spec"]);
    assert!(
        explained.contains("What the widget should be."),
        "{explained}"
    );
    assert!(
        explained.contains("  size\t<integer> -required-\n"),
        "{explained}"
    );

    // The schema decides: unknown fields are dropped, wrong values refused.
    let warned = server.kubectl(&[
        "patch",
        "wd",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"extra":1}}"#,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&warned.stderr),
        "Warning: unknown field \"spec.extra\"\n"
    );
    let err = server.fails(&[
        "patch",
        "wd",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":"big","colour":"pink"}}"#,
    ]);
    // kubectl lists the causes of a 422 itself.
    for cause in [
        "* spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\"",
        "* spec.colour: Unsupported value: \"pink\": supported values: \"blue\", \"red\"",
    ] {
        assert!(err.contains(cause), "{err}");
    }
    let bad = write(
        "bad.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w2}\nspec: {colour: red}\n",
    );
    let err = server.fails(&["apply", "-f", &bad]);
    assert!(err.contains("spec.size: Required value"), "{err}");
    // Strategic merge patches are for built-in kinds only.
    let err = server.fails(&[
        "patch",
        "wd",
        "w1",
        "--type=strategic",
        "-p",
        r#"{"spec":{"size":4}}"#,
    ]);
    assert!(
        err.contains("UnsupportedMediaType") || err.contains("unknown format"),
        "{err}"
    );

    // The schema's bounds, lengths, patterns and counts hold.
    let err = server.fails(&[
        "patch",
        "wd",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"weight":11,"code":"Not-OK","tags":["a","b","c"]}}"#,
    ]);
    for cause in [
        "* spec.weight: Invalid value: 11: spec.weight in body should be less than or equal to 10",
        "* spec.code: Invalid value: \"Not-OK\": spec.code in body should match '^[a-z]+$'",
        "* spec.tags: Too many: 3: must have at most 2 items",
    ] {
        assert!(err.contains(cause), "{err}");
    }
    let err = server.fails(&[
        "patch",
        "wd",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"weight":0,"code":"toolongcode"}}"#,
    ]);
    for cause in [
        "* spec.weight: Invalid value: 0: spec.weight in body should be greater than or equal to 1",
        "* spec.code: Too long: may not be more than 6 bytes",
    ] {
        assert!(err.contains(cause), "{err}");
    }

    // Server-side apply merges a list the schema keys by `port`: two
    // managers each own their own item.
    let ports = |manager: &str, port: u16| {
        let file = write(
            &format!("{manager}.yaml"),
            &format!(
                "apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: w1}}\nspec:\n  size: 3\n  ports:\n  - {{port: {port}, name: {manager}}}\n"
            ),
        );
        server.ok(&[
            "apply",
            "--server-side",
            "--field-manager",
            manager,
            "-f",
            &file,
        ])
    };
    assert_eq!(
        ports("one", 80),
        "widget.example.com/w1 serverside-applied\n"
    );
    assert_eq!(
        ports("two", 81),
        "widget.example.com/w1 serverside-applied\n"
    );
    assert_eq!(
        server.ok(&["get", "wd", "w1", "-o", "jsonpath={.spec.ports[*].name}"]),
        "one two"
    );
    let entries = managed_fields(&server, &["wd", "w1"]);
    assert_eq!(
        fields_of(&entries, "two"),
        &serde_json::json!({"f:spec": {"f:ports": {"k:{\"port\":81}": {".": {}, "f:name": {}, "f:port": {}}}, "f:size": {}}})
    );

    // With a status subresource, status is written only through it.
    let curl = Curl::admin(&server);
    let path = "/apis/example.com/v1/namespaces/default/widgets/w1";
    let (code, _) = curl.send(
        "PATCH",
        path,
        "application/merge-patch+json",
        br#"{"status":{"ready":true}}"#,
    );
    assert_eq!(code, 200);
    let (_, got) = curl.send("GET", path, "application/json", b"");
    assert_eq!(got["status"], serde_json::Value::Null);
    let (code, _) = curl.send(
        "PATCH",
        &format!("{path}/status"),
        "application/merge-patch+json",
        br#"{"status":{"ready":true}}"#,
    );
    assert_eq!(code, 200);
    let (_, got) = curl.send("GET", path, "application/json", b"");
    assert_eq!(got["status"]["ready"], true);
    // The scale subresource reads and writes the paths the CRD names.
    let (code, _) = curl.send(
        "PATCH",
        &format!("{path}/status"),
        "application/merge-patch+json",
        br#"{"status":{"replicas":2,"selector":"app=widget"}}"#,
    );
    assert_eq!(code, 200);
    assert_eq!(
        server.ok(&["scale", "widget", "w1", "--replicas=4"]),
        "widget.example.com/w1 scaled\n"
    );
    let (_, scale) = curl.send("GET", &format!("{path}/scale"), "application/json", b"");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 4);
    assert_eq!(scale["status"]["replicas"], 2);
    assert_eq!(scale["status"]["selector"], "app=widget");
    // kubectl get prints the CRD's printer columns.
    let table = server.ok(&["get", "widgets"]);
    let rows: Vec<Vec<&str>> = table.lines().map(columns).collect();
    assert_eq!(rows[0], ["NAME", "SIZE", "READY", "AGE"]);
    assert_eq!(rows[1][..3], ["w1", "3", "true"]);

    // The definition goes, and its objects with it.
    server.ok(&["delete", "crd", "widgets.example.com"]);
    server.ok(&["apply", "-f", &crd]);
    server.ok(&[
        "wait",
        "--for",
        "condition=established",
        "crd/widgets.example.com",
        "--timeout=10s",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = server.kubectl(&["get", "widgets", "-o", "name"]);
        if listed.status.success() && listed.stdout.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "widgets outlived their CRD: {listed:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_deleted_namespace_terminates_empties_and_goes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    server.ok(&["create", "namespace", "doomed"]);
    server.ok(&["create", "configmap", "app", "-n", "doomed"]);
    server.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "-n",
        "doomed",
    ]);
    // The finalizer of something else keeps it Terminating until it is
    // removed, so the test sees that state.
    server.ok(&["create", "configmap", "held", "-n", "doomed"]);
    server.ok(&[
        "patch",
        "configmap",
        "held",
        "-n",
        "doomed",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    server.ok(&["delete", "namespace", "doomed", "--wait=false"]);
    let status = server.ok(&[
        "get",
        "namespace",
        "doomed",
        "-o",
        "jsonpath={.status.phase}",
    ]);
    assert_eq!(status, "Terminating");
    let refused = server.fails(&["create", "configmap", "late", "-n", "doomed"]);
    assert!(
        refused.contains("configmaps \"late\" is forbidden: unable to create new content in namespace doomed because it is being terminated"),
        "{refused}"
    );
    // Everything without a finalizer goes; the held one waits.
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.ok(&["get", "all,configmaps", "-n", "doomed", "-o", "name"]) != "configmap/held\n"
    {
        assert!(Instant::now() < deadline, "the namespace was not emptied");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.ok(&[
        "patch",
        "configmap",
        "held",
        "-n",
        "doomed",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    server.ok(&["wait", "--for=delete", "namespace/doomed", "--timeout=15s"]);

    let err = server.fails(&["delete", "namespace", "default"]);
    assert_eq!(
        err.trim(),
        "Error from server (Forbidden): namespaces \"default\" is forbidden: this namespace may not be deleted"
    );
}

#[test]
fn pods_are_bound_to_nodes_and_evicted_through_their_subresources() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let curl = Curl::admin(&server);
    server.ok(&["run", "web", "--image=busybox"]);
    let binding = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "web"},
        "target": {"kind": "Node", "name": "node-a"},
    });
    let bind = || {
        curl.send(
            "POST",
            "/api/v1/namespaces/default/pods/web/binding",
            "application/json",
            binding.to_string().as_bytes(),
        )
    };
    let (code, answer) = bind();
    assert_eq!(
        (code, &answer["status"]),
        (201, &serde_json::json!("Success"))
    );
    let pod: serde_json::Value =
        serde_json::from_str(&server.ok(&["get", "pod", "web", "-o", "json"])).unwrap();
    assert_eq!(pod["spec"]["nodeName"], "node-a");
    let scheduled = pod["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .unwrap();
    assert_eq!(scheduled["status"], "True");
    let message = status(bind(), 409, "Conflict");
    assert_eq!(
        message,
        "Operation cannot be fulfilled on pods/binding \"web\": pod web is already assigned to node \"node-a\""
    );

    // An eviction deletes as a DELETE with its options would.
    let eviction = serde_json::json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": "web"},
        "deleteOptions": {"gracePeriodSeconds": 0},
    });
    let (code, answer) = curl.send(
        "POST",
        "/api/v1/namespaces/default/pods/web/eviction",
        "application/json",
        eviction.to_string().as_bytes(),
    );
    assert_eq!(
        (code, &answer["status"]),
        (201, &serde_json::json!("Success"))
    );
    assert!(
        server
            .fails(&["get", "pod", "web"])
            .contains("pods \"web\" not found")
    );
    // Read-write verbs are not served on them.
    let (code, _) = curl.send(
        "GET",
        "/api/v1/namespaces/default/pods/web/binding",
        "application/json",
        b"",
    );
    assert_eq!(code, 405);
}

/// kubectl 1.33 by its own name (its User-Agent says `kubectl.1.33`).
const KUBECTL_1_33: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

/// managedFields of an object as `kubectl get -o json` shows them.
fn managed_fields(server: &Server, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json", "--show-managed-fields"]);
    let object: serde_json::Value = serde_json::from_str(&server.ok(&all)).unwrap();
    object["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn fields_of<'a>(entries: &'a [serde_json::Value], manager: &str) -> &'a serde_json::Value {
    &entries
        .iter()
        .find(|e| e["manager"] == manager)
        .unwrap_or_else(|| panic!("no entry for {manager}: {entries:?}"))["fieldsV1"]
}

#[test]
fn server_side_apply_merges_records_owners_conflicts_and_prunes() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };

    // Apply creates, owns exactly what it sent, adds no annotation.
    let cm = write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm1\n  labels: {app: x}\ndata:\n  a: \"1\"\n  b: \"2\"\n",
    );
    assert_eq!(
        server.ok(&["apply", "--server-side", "-f", &cm]),
        "configmap/cm1 serverside-applied\n"
    );
    let entries = managed_fields(&server, &["cm", "cm1"]);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(
        (
            &entries[0]["manager"],
            &entries[0]["operation"],
            &entries[0]["apiVersion"]
        ),
        (&json!("kubectl"), &json!("Apply"), &json!("v1"))
    );
    assert_eq!(
        entries[0]["fieldsV1"],
        json!({"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {"f:app": {}}}})
    );
    let version = |kind: &str, name: &str| {
        server.ok(&[
            "get",
            kind,
            name,
            "-o",
            "jsonpath={.metadata.resourceVersion} {.metadata.annotations}",
        ])
    };
    let before = version("cm", "cm1");
    assert!(
        before.trim_end().ends_with(|c: char| c.is_ascii_digit()),
        "no annotations: {before}"
    );
    server.ok(&["apply", "--server-side", "-f", &cm]);
    assert_eq!(
        version("cm", "cm1"),
        before,
        "an unchanged apply writes nothing"
    );
    assert_eq!(managed_fields(&server, &["cm", "cm1"]), entries);
    write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm1\n  labels: {app: x}\ndata:\n  a: \"1\"\n",
    );
    server.ok(&["apply", "--server-side", "-f", &cm]);
    assert_eq!(
        server.ok(&["get", "cm", "cm1", "-o", "jsonpath={.data}"]),
        r#"{"a":"1"}"#
    );

    // Creators and updaters are recorded as Update entries.
    server.ok(&["create", "deployment", "web", "--image=nginx"]);
    server.ok(&["label", "deploy", "web", "tier=x"]);
    // (The deployment controller's status writes are entries too.)
    let entries: Vec<_> = managed_fields(&server, &["deploy", "web"])
        .into_iter()
        .filter(|e| e["subresource"] != "status")
        .collect();
    assert_eq!(
        entries
            .iter()
            .map(|e| (
                e["manager"].as_str().unwrap(),
                e["operation"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        [("kubectl-create", "Update"), ("kubectl-label", "Update")]
    );
    let created = fields_of(&entries, "kubectl-create");
    assert_eq!(
        created["f:metadata"],
        json!({"f:labels": {".": {}, "f:app": {}}})
    );
    assert_eq!(created["f:spec"]["f:selector"], json!({}));
    assert_eq!(
        created["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"]["f:imagePullPolicy"],
        json!({}),
        "the creator owns what defaulting set"
    );
    assert_eq!(
        fields_of(&entries, "kubectl-label"),
        &json!({"f:metadata": {"f:labels": {"f:tier": {}}}})
    );

    // Applying other values than theirs conflicts, and kubectl explains.
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: nginx\n        image: nginx:2\n";
    let deploy = write("deploy.yaml", deployment);
    let err = server.fails(&["apply", "--server-side", "-f", &deploy]);
    assert!(
        err.starts_with(
            "error: Apply failed with 2 conflicts: conflicts with \"kubectl-create\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"nginx\"].image\nPlease review the fields above"
        ),
        "{err}"
    );
    server.ok(&["apply", "--server-side", "--force-conflicts", "-f", &deploy]);
    assert_eq!(
        server.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}"
        ]),
        "3 nginx:2"
    );
    let entries = managed_fields(&server, &["deploy", "web"]);
    assert_eq!(entries[0]["manager"], "kubectl", "appliers come first");
    assert!(
        fields_of(&entries, "kubectl-create")["f:spec"]
            .get("f:replicas")
            .is_none()
    );

    // kubectl scale sends no field manager: its User-Agent names it.
    server.ok_with(KUBECTL_1_33, &["scale", "deploy", "web", "--replicas=5"]);
    let entries = managed_fields(&server, &["deploy", "web"]);
    let scale = entries
        .iter()
        .find(|e| e["manager"] == "kubectl.1.33")
        .unwrap();
    assert_eq!(
        (&scale["subresource"], &scale["fieldsV1"]),
        (&json!("scale"), &json!({"f:spec": {"f:replicas": {}}}))
    );
    let err = server.fails(&["apply", "--server-side", "-f", &deploy]);
    assert!(
        err.starts_with("error: Apply failed with 1 conflict: conflict with \"kubectl.1.33\" with subresource \"scale\" using apps/v1: .spec.replicas\n"),
        "{err}"
    );

    // A field the applier alone owned and dropped goes back to its default.
    let api = write(
        "api.yaml",
        &deployment.replace("name: web\n", "name: api\n"),
    );
    server.ok(&["apply", "--server-side", "-f", &api]);
    write(
        "api.yaml",
        &deployment
            .replace("name: web\n", "name: api\n")
            .replace("  replicas: 3\n", ""),
    );
    server.ok(&["apply", "--server-side", "-f", &api]);
    assert_eq!(
        server.ok(&["get", "deploy", "api", "-o", "jsonpath={.spec.replicas}"]),
        "1"
    );

    // From client-side apply to server-side apply: kubectl takes over its
    // own fields without conflict, and what the manifest dropped goes.
    let csa = write(
        "csa.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm2\ndata:\n  a: \"1\"\n  b: \"2\"\n",
    );
    server.ok(&["apply", "-f", &csa]);
    write(
        "csa.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm2\ndata:\n  a: \"9\"\n",
    );
    server.ok(&["apply", "--server-side", "-f", &csa]);
    assert_eq!(
        server.ok(&["get", "cm", "cm2", "-o", "jsonpath={.data}"]),
        r#"{"a":"9"}"#
    );
    let entries = managed_fields(&server, &["cm", "cm2"]);
    assert!(
        entries
            .iter()
            .all(|e| e["manager"] != "kubectl-client-side-apply"),
        "{entries:?}"
    );
    assert_eq!(
        fields_of(&entries, "kubectl"),
        &json!({"f:data": {"f:a": {}}})
    );
}

#[test]
fn server_side_apply_refuses_bad_requests_as_upstream() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let curl = Curl::admin(&server);
    let apply = "application/apply-patch+yaml";
    let path = "/api/v1/namespaces/default/configmaps/cm";
    let yaml =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  a: one # a comment\n";

    let message = status(
        curl.send("PATCH", path, apply, yaml.as_bytes()),
        422,
        "Invalid",
    );
    assert_eq!(
        message,
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    // Real YAML creates (201), then updates (200).
    let (code, body) = curl.send(
        "PATCH",
        &format!("{path}?fieldManager=me"),
        apply,
        yaml.as_bytes(),
    );
    assert_eq!((code, &body["data"]), (201, &json!({"a": "one"})), "{body}");
    let (code, body) = curl.send(
        "PATCH",
        &format!("{path}?fieldManager=me"),
        apply,
        yaml.replace("one", "two").as_bytes(),
    );
    assert_eq!((code, &body["data"]), (200, &json!({"a": "two"})), "{body}");

    let message = status(
        curl.send(
            "PATCH",
            &format!("{path}?fieldManager=me"),
            apply,
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm","managedFields":[]}}"#,
        ),
        400,
        "BadRequest",
    );
    assert_eq!(message, "metadata.managedFields must be nil");
    let message = status(
        curl.send(
            "PATCH",
            &format!("{path}?fieldManager=me"),
            apply,
            br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"cm"}}"#,
        ),
        400,
        "BadRequest",
    );
    assert_eq!(message, "invalid object type: /v1, Kind=Secret");
    let message = status(
        curl.send(
            "PATCH",
            &format!("{path}?fieldManager=me"),
            apply,
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"other"}}"#,
        ),
        400,
        "BadRequest",
    );
    assert_eq!(
        message,
        "the name of the object (other) does not match the name on the URL (cm)"
    );
    let message = status(
        curl.send(
            "PATCH",
            &format!("{path}?fieldManager=me"),
            apply,
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm","resourceVersion":"1"},"data":{"a":"x"}}"#,
        ),
        409,
        "Conflict",
    );
    assert!(
        message.contains("the object has been modified"),
        "{message}"
    );
    let (code, body) = curl.send(
        "PATCH",
        &format!("{path}?fieldManager=you"),
        apply,
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm"},"data":{"a":"three"}}"#,
    );
    assert_eq!(code, 409, "{body}");
    assert_eq!(
        body["message"],
        "Apply failed with 1 conflict: conflict with \"me\": .data.a"
    );
    assert_eq!(
        body["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"me\"", "field": ".data.a"}])
    );
    let message = status(
        curl.send(
            "PATCH",
            &format!("{path}?force=true"),
            "application/merge-patch+json",
            b"{}",
        ),
        422,
        "Invalid",
    );
    assert_eq!(
        message,
        "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch"
    );

    // Without fieldManager, writes are recorded under the User-Agent.
    let (code, body) = curl.send(
        "PUT",
        path,
        "application/json",
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm"},"data":{"a":"one","b":"2"}}"#,
    );
    assert_eq!(code, 200, "{body}");
    let curl_entry = body["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "curl")
        .cloned()
        .unwrap_or_else(|| panic!("no curl entry: {body}"));
    assert_eq!(curl_entry["operation"], "Update");
    assert_eq!(
        curl_entry["fieldsV1"],
        json!({"f:data": {"f:a": {}, "f:b": {}}})
    );

    // `[{}]` forgets every owner; updates then record nothing; the next
    // apply finds all fields owned by `before-first-apply`.
    let (code, body) = curl.send(
        "PATCH",
        path,
        "application/merge-patch+json",
        br#"{"metadata":{"managedFields":[{}]}}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body["metadata"].get("managedFields").is_none(), "{body}");
    let (_, body) = curl.send(
        "PATCH",
        path,
        "application/merge-patch+json",
        br#"{"metadata":{"labels":{"x":"y"}}}"#,
    );
    assert!(body["metadata"].get("managedFields").is_none(), "{body}");
    let (code, body) = curl.send(
        "PATCH",
        &format!("{path}?fieldManager=me"),
        apply,
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm"},"data":{"a":"four"}}"#,
    );
    assert_eq!(code, 409, "{body}");
    assert_eq!(
        body["message"],
        "Apply failed with 1 conflict: conflict with \"before-first-apply\" using v1: .data.a"
    );
}

#[path = "kubectl/agent.rs"]
mod agent;
/// Simulated nodes (`tug_sim`, `tug sim-nodes`) against a real server.
#[path = "kubectl/scheduler.rs"]
mod scheduler;
#[path = "kubectl/workloads.rs"]
mod workloads;

mod sim_nodes {
    use std::future::Future;
    use std::time::{Duration, Instant};

    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::api::{Api, DeleteParams, PostParams};

    use super::Server;

    /// Polls `check` until it answers `Some`, failing after `seconds`.
    pub(super) async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pod(name: &str, node: &str, annotations: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "annotations": annotations},
            "spec": {
                "nodeName": node,
                "restartPolicy": "Always",
                "containers": [{"name": "app", "image": "registry.local/app:1"}],
            },
        }))
        .unwrap()
    }

    async fn get_pod(pods: &Api<Pod>, name: &str) -> Pod {
        pods.get(name).await.unwrap()
    }

    fn condition(pod: &Pod, kind: &str) -> Option<String> {
        pod.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == kind)
            .map(|c| c.status.clone())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn simulated_nodes_register_renew_leases_and_play_kubelet() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path());
        let client = super::kube_client::client(&server).await;
        let sim = tug_sim::SimNodes::start(
            client.clone(),
            tug_sim::Config {
                count: 3,
                lease_interval: Duration::from_millis(500),
                ..tug_sim::Config::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(sim.node_names(), ["sim-0", "sim-1", "sim-2"]);

        // Registered and Ready, as kubectl shows them.
        let listed = server.ok(&["get", "nodes", "--no-headers"]);
        let rows: Vec<Vec<&str>> = listed.lines().map(super::columns).collect();
        assert_eq!(rows.len(), 3, "{listed}");
        assert!(rows.iter().all(|r| r[1] == "Ready"), "{listed}");
        let nodes: Api<Node> = Api::all(client.clone());
        let node = nodes.get("sim-1").await.unwrap();
        let status = node.status.unwrap();
        assert_eq!(status.capacity.unwrap()["pods"].0, "110");
        assert_eq!(node.spec.unwrap().pod_cidr.as_deref(), Some("10.64.1.0/24"));

        // Leases are renewed.
        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
        let renewed = |lease: Lease| lease.spec.unwrap().renew_time.unwrap().0;
        let first = renewed(leases.get("sim-2").await.unwrap());
        eventually(10, "a lease renewal", || async {
            let now = renewed(leases.get("sim-2").await.unwrap());
            (now > first).then_some(())
        })
        .await;

        // A pod bound to a simulated node runs, with an address of the node's range.
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        pods.create(
            &PostParams::default(),
            &pod("web", "sim-1", serde_json::json!({})),
        )
        .await
        .unwrap();
        let running = eventually(10, "web running and ready", || async {
            let pod = get_pod(&pods, "web").await;
            (condition(&pod, "Ready").as_deref() == Some("True")).then_some(pod)
        })
        .await;
        let status = running.status.unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(
            status.pod_ip.as_deref().unwrap().starts_with("10.64.1."),
            "{:?}",
            status.pod_ip
        );
        let wide = server.ok(&["get", "pod", "web", "-o", "wide", "--no-headers"]);
        let row = super::columns(&wide);
        assert_eq!(
            (row[1], row[2], row[6]),
            ("1/1", "Running", "sim-1"),
            "{wide}"
        );

        // Staged faults: a crash, then not ready.
        sim.crash("default", "web").await.unwrap();
        eventually(10, "web crash-looping", || async {
            let pod = get_pod(&pods, "web").await;
            let container = pod.status?.container_statuses?.into_iter().next()?;
            let waiting = container.state?.waiting?.reason?;
            (container.restart_count == 1 && waiting == "CrashLoopBackOff").then_some(())
        })
        .await;
        pods.create(
            &PostParams::default(),
            &pod("api", "sim-0", serde_json::json!({})),
        )
        .await
        .unwrap();
        eventually(10, "api ready", || async {
            (condition(&get_pod(&pods, "api").await, "Ready").as_deref() == Some("True"))
                .then_some(())
        })
        .await;
        sim.set_ready("default", "api", false).await.unwrap();
        eventually(10, "api not ready", || async {
            (condition(&get_pod(&pods, "api").await, "Ready").as_deref() == Some("False"))
                .then_some(())
        })
        .await;

        // A job's pod told to succeed does.
        pods.create(
            &PostParams::default(),
            &pod(
                "task",
                "sim-2",
                serde_json::json!({"sim.tug.dev/succeed-after": "0"}),
            ),
        )
        .await
        .unwrap();
        eventually(10, "task succeeded", || async {
            let phase = get_pod(&pods, "task").await.status?.phase?;
            (phase == "Succeeded").then_some(())
        })
        .await;

        // Graceful deletion: still there, terminating, then gone after the grace period.
        pods.delete("api", &DeleteParams::default().grace_period(1))
            .await
            .unwrap();
        let terminating = get_pod(&pods, "api").await;
        assert!(terminating.metadata.deletion_timestamp.is_some());
        eventually(10, "api gone", || async {
            pods.get_opt("api").await.unwrap().is_none().then_some(())
        })
        .await;

        // A node whose lease is stopped is no longer renewed, while the
        // others are: sim-2's stays put over three renewals of sim-0's.
        sim.stop_lease("sim-2").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut held = renewed(leases.get("sim-2").await.unwrap());
        let mut other = renewed(leases.get("sim-0").await.unwrap());
        let mut renewals = 0;
        while renewals < 3 {
            assert!(Instant::now() < deadline, "sim-2's lease was still renewed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = renewed(leases.get("sim-2").await.unwrap());
            let now_other = renewed(leases.get("sim-0").await.unwrap());
            if now != held {
                (held, other, renewals) = (now, now_other, 0);
            } else if now_other > other {
                (other, renewals) = (now_other, renewals + 1);
            }
        }

        let stats = sim.stats();
        assert_eq!(stats.nodes, 3);
        assert!(stats.writes > 0 && stats.rss_bytes > 0, "{stats:?}");
        sim.shutdown().await;
    }

    #[test]
    fn tug_sim_nodes_registers_nodes_until_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path());
        let mut sim = std::process::Command::new(env!("CARGO_BIN_EXE_tug"))
            .args(["sim-nodes", "--count", "2", "--name-prefix", "edge-"])
            .arg("--kubeconfig")
            .arg(&server.kubeconfig)
            .args([
                "--labels",
                "zone=a",
                "--taints",
                "dedicated=edge:NoSchedule",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(sim.stdout.as_mut().unwrap()),
            &mut first,
        )
        .unwrap();
        assert_eq!(first, "tug sim-nodes: 2 nodes registered\n");
        let listed = server.ok(&[
            "get",
            "nodes",
            "-l",
            "zone=a",
            "-o",
            "jsonpath={.items[*].metadata.name} {.items[0].spec.taints[0].key} {.items[0].metadata.managedFields[0].manager}",
        ]);
        // Its writes are its own in managedFields, named by its User-Agent.
        assert_eq!(listed, "edge-0 edge-1 dedicated tug-sim-nodes");
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &sim.id().to_string()])
            .status();
        let status = sim.wait().unwrap();
        assert!(status.success(), "{status:?}");

        let bad = std::process::Command::new(env!("CARGO_BIN_EXE_tug"))
            .args(["sim-nodes", "--count", "1", "--taints", "x=y:Never"])
            .arg("--kubeconfig")
            .arg(&server.kubeconfig)
            .output()
            .unwrap();
        assert!(!bad.status.success());
        assert_eq!(
            String::from_utf8_lossy(&bad.stderr).trim(),
            "tug: --taints \"x=y:Never\": the effect must be NoSchedule, PreferNoSchedule or NoExecute"
        );
    }
}

#[test]
fn a_create_drops_the_status_a_client_sends_but_a_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let curl = Curl::admin(&server);
    let json = "application/json";
    let (code, created) = curl.send(
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        json,
        br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},
            "spec":{"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},
            "spec":{"containers":[{"name":"web","image":"nginx:1"}]}}},
            "status":{"replicas":5,"readyReplicas":5}}"#,
    );
    assert_eq!(
        (code, &created["status"]),
        (201, &serde_json::json!({})),
        "{created}"
    );
    let (code, created) = curl.send(
        "POST",
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
        json,
        br#"{"apiVersion":"policy/v1","kind":"PodDisruptionBudget","metadata":{"name":"pdb"},
            "spec":{"minAvailable":1},"status":{"disruptionsAllowed":3}}"#,
    );
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["status"]["disruptionsAllowed"], 0);
    let (code, created) = curl.send(
        "POST",
        "/api/v1/nodes",
        json,
        br#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"},
            "status":{"capacity":{"pods":"110"}}}"#,
    );
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["status"]["capacity"]["pods"], "110");
}
