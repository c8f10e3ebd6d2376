//! The deployment files (Dockerfile, deploy/) say what raftlited accepts: the flags in each are
//! parsed out of the file and run through `raftlited -check-config` (the Docker and Kubernetes
//! ones through the image's entry point script), so that a renamed or removed flag fails here
//! instead of in someone's deployment. The files are also checked with the tools that run on
//! this machine: `dockerfile-utils lint` for the Dockerfile, `systemd-analyze verify` for the
//! unit and `kubernetes-validate` for the manifests (`.ci/run` installs all three). No container
//! engine runs here (README "Deploying"), so the image itself is not built by the tests.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::skip_unless_ci;
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_docs(rel: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| v.iter().map(|s| s.as_str().map(String::from).unwrap_or_else(|| format!("{s:?}"))).collect())
        .unwrap_or_default()
}

/// The directory holding the built `raftlited`, for the entry point script's PATH.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_raftlited")).parent().expect("bin dir").to_path_buf()
}

/// What a command printed, stdout then stderr.
fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn check_ok(what: &str, out: &Output) -> String {
    let text = text(out);
    assert!(out.status.success(), "{what}: raftlited -check-config refused it:\n{text}");
    assert!(text.contains("configuration OK"), "{what}: {text}");
    text
}

/// Run the image's entry point with `args` (plus `-check-config`) and `env`, as the container
/// would, with the built raftlited on its PATH.
fn entrypoint(what: &str, args: &[String], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new("sh");
    // First: flags end at the data directory, which the arguments may end with.
    cmd.arg(root().join("deploy/docker-entrypoint.sh")).arg("-check-config").args(args);
    cmd.env("PATH", format!("{}:{}", bin_dir().display(), std::env::var("PATH").unwrap_or_default()));
    cmd.env_remove("RAFTLITE_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    check_ok(what, &cmd.output().expect("run the entry point"))
}

#[test]
fn the_dockerfile_runs_raftlited_as_a_user_with_a_volume_and_a_readiness_check() {
    let d = read("Dockerfile");
    for want in [
        "FROM rust:",
        "AS build",
        "--locked --bin raftlited --bin raftlite",
        "USER raftlite",
        "VOLUME /var/lib/raftlite",
        "EXPOSE 4001 4002",
        "/readyz",
        "ENTRYPOINT [\"/usr/local/bin/docker-entrypoint.sh\"]",
        "COPY deploy/docker-entrypoint.sh",
    ] {
        assert!(d.contains(want), "Dockerfile lacks {want:?}");
    }
    assert_eq!(d.matches("\nFROM ").count() + usize::from(d.starts_with("FROM ")), 2, "multi-stage");
    // A Dockerfile parser: unknown instructions, flags or values fail here, not in `docker build`.
    let lint = root().join(".ci/node/node_modules/.bin/dockerfile-utils");
    match Command::new(&lint).arg("lint").arg(root().join("Dockerfile")).output() {
        Ok(out) => {
            let text = text(&out);
            assert!(out.status.success() && text.trim().is_empty(), "dockerfile-utils lint Dockerfile:\n{text}");
        }
        Err(_) => skip_unless_ci("dockerfile-utils is not installed (.ci/run installs it with npm into .ci/node)"),
    }
    // With no arguments the entry point's defaults alone are a valid node.
    let out = entrypoint("docker run raftlite", &[], &[("RAFTLITE_ADV_HOST", "box1")]);
    assert!(out.contains("http-adv-addr = \"box1:4001\" (environment)"), "{out}");
    assert!(out.contains("data directory = /var/lib/raftlite"), "{out}");
    // Flags and RAFTLITE_* variables pass through, and a flag wins over the defaults.
    let out = entrypoint(
        "docker run raftlite -fk -http-addr 0.0.0.0:5001",
        &["-fk".into(), "-http-addr".into(), "0.0.0.0:5001".into()],
        &[("RAFTLITE_ADV_HOST", "box1"), ("RAFTLITE_WRITE_QUEUE_CAPACITY", "64")],
    );
    assert!(out.contains("fk = \"true\" (flag)"), "{out}");
    assert!(out.contains("http-addr = \"0.0.0.0:5001\" (flag)"), "{out}");
    assert!(out.contains("write-queue-capacity = \"64\" (environment)"), "{out}");
    // A bad flag stops the container with raftlited's message.
    let bad = Command::new("sh")
        .arg(root().join("deploy/docker-entrypoint.sh"))
        .args(["-no-such-flag", "-check-config"])
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir().display()))
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("-no-such-flag"));
}

#[test]
fn the_compose_cluster_bootstraps_three_nodes_and_wires_prometheus_and_grafana() {
    let doc = &yaml_docs("deploy/compose.yaml")[0];
    let services = &doc["services"];
    let mut scraped = Vec::new();
    for n in 1..=3 {
        let name = format!("node{n}");
        let s = &services[name.as_str()];
        assert_eq!(s["hostname"].as_str(), Some(name.as_str()));
        let cmd = strings(&s["command"]);
        assert!(cmd.windows(2).any(|w| w == ["-bootstrap-expect", "3"]), "{name}: {cmd:?}");
        let out = entrypoint(&format!("compose {name}"), &cmd, &[("RAFTLITE_ADV_HOST", &name)]);
        assert!(out.contains(&format!("raft-adv-addr = \"{name}:4002\"")), "{out}");
        let volumes = strings(&s["volumes"]);
        assert_eq!(volumes, [format!("{name}:/var/lib/raftlite")], "{name}: its own volume for its data");
        assert!(!doc["volumes"][name.as_str()].is_badvalue(), "volume {name} declared");
        scraped.push(format!("{name}:4001"));
    }
    // Prometheus scrapes every node; Grafana gets the datasource and raftlite's dashboard.
    let prom = &yaml_docs("deploy/prometheus.yml")[0];
    let targets = strings(&prom["scrape_configs"][0]["static_configs"][0]["targets"]);
    assert_eq!(targets, scraped);
    assert_eq!(prom["scrape_configs"][0]["metrics_path"].as_str(), Some("/metrics"));
    for mount in strings(&services["grafana"]["volumes"]).iter().chain(&strings(&services["prometheus"]["volumes"])) {
        let host = mount.split(':').next().expect("host path");
        assert!(root().join("deploy").join(host).exists(), "compose mounts {host}, which does not exist");
    }
    let ds = &yaml_docs("deploy/grafana/datasources.yaml")[0];
    assert_eq!(ds["datasources"][0]["url"].as_str(), Some("http://prometheus:9090"));
    let dash: serde_json::Value = serde_json::from_str(&read("config/grafana-dashboard.json")).expect("dashboard");
    assert_eq!(dash["uid"], "raftlite");
}

#[test]
fn the_systemd_unit_is_sandboxed_verified_and_its_command_lines_accepted() {
    let unit = read("deploy/raftlited.service");
    for want in [
        "DynamicUser=yes",
        "StateDirectory=raftlite",
        "ConfigurationDirectory=raftlite",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "KillSignal=SIGTERM",
        "-config /etc/raftlite/raftlited.toml",
    ] {
        assert!(unit.contains(want), "raftlited.service lacks {want}");
    }
    // ExecStart and ExecStartPre, with the config file the README installs in /etc/raftlite.
    let bin = env!("CARGO_BIN_EXE_raftlited");
    let conf = root().join("deploy/raftlited.toml");
    let lines: Vec<&str> = unit.lines().filter(|l| l.starts_with("ExecStart")).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in lines {
        let (_, cmd) = line.split_once('=').expect("ExecStart=");
        let args: Vec<String> = cmd
            .split_whitespace()
            .skip(1)
            .map(|a| if a == "/etc/raftlite/raftlited.toml" { conf.display().to_string() } else { a.to_string() })
            .filter(|a| a != "-check-config")
            .collect();
        let out =
            Command::new(bin).args(&args).arg("-check-config").env_remove("RAFTLITE_CONFIG").output().expect("run");
        let text = check_ok(line, &out);
        assert!(text.contains("data directory = /var/lib/raftlite"), "{text}");
        assert!(text.contains("bootstrap-expect = \"3\" (config file)"), "{text}");
    }
    // systemd's own check, on a copy whose binary exists here.
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    if analyze.is_err() {
        return skip_unless_ci("systemd-analyze is not installed (Debian package systemd)");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("raftlited.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/raftlited", bin)).expect("write unit");
    let out = Command::new("systemd-analyze").arg("verify").arg(&copy).output().expect("systemd-analyze");
    let text = text(&out);
    assert!(out.status.success() && !text.contains("raftlited.service:"), "systemd-analyze verify: {text}");
}

#[test]
fn the_kubernetes_statefulset_discovers_its_pods_through_the_headless_service() {
    let docs = yaml_docs("deploy/kubernetes/raftlite.yaml");
    let kind = |k: &str| docs.iter().filter(|d| d["kind"].as_str() == Some(k)).collect::<Vec<_>>();
    let headless = kind("Service")
        .into_iter()
        .find(|s| s["spec"]["clusterIP"].as_str() == Some("None"))
        .expect("a headless Service");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"].as_bool(), Some(true));
    let headless_name = headless["metadata"]["name"].as_str().expect("name");
    assert_eq!(kind("PodDisruptionBudget").len(), 1);
    let sts = kind("StatefulSet")[0];
    assert_eq!(sts["spec"]["serviceName"].as_str(), Some(headless_name));
    assert!(!sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"].is_badvalue());
    let c = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"));
    let mounts = c["volumeMounts"].as_vec().expect("mounts");
    assert!(mounts.iter().any(|m| m["mountPath"].as_str() == Some("/var/lib/raftlite")));

    // The container's arguments, with what Kubernetes substitutes for $(VAR), are accepted, and
    // discovery looks up the headless Service.
    let args: Vec<String> = strings(&c["args"])
        .into_iter()
        .map(|a| a.replace("$(POD_NAME)", "raftlite-0").replace("$(POD_NAMESPACE)", "default"))
        .collect();
    let out = entrypoint("the StatefulSet's pod", &args, &[]);
    assert!(out.contains("node-id = raftlite-0"), "{out}");
    let disco = args.iter().skip_while(|a| *a != "-disco-config").nth(1).expect("-disco-config");
    let v: serde_json::Value = serde_json::from_str(disco).expect("disco-config JSON");
    assert!(v["name"].as_str().is_some_and(|n| n.starts_with(&format!("{headless_name}."))), "{disco}");

    // The schemas of Kubernetes itself.
    let validate = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
        .arg(root().join("deploy/kubernetes/raftlite.yaml"))
        .output();
    match validate {
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No module named") => {
            skip_unless_ci("kubernetes-validate is not installed (PyPI kubernetes-validate)")
        }
        Ok(out) => assert!(out.status.success(), "kubernetes-validate: {}", text(&out)),
        Err(_) => skip_unless_ci("kubernetes-validate is not installed (PyPI kubernetes-validate)"),
    }
}
