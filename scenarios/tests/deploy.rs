//! The deployment files in `deploy/`: the fields a service manager and a
//! cluster act on, checked as they parse them. That the capabilities they
//! grant are enough is checked by running the daemon with only those
//! (`tests/daemon.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use scenarios::workspace_root;
use yaml_rust2::{Yaml, YamlLoader};

/// The capabilities tracing needs, as both files grant them.
const CAPABILITIES: [&str; 3] = ["BPF", "PERFMON", "SYS_PTRACE"];

/// `key=value` lines of the unit's `[Service]` section.
fn service_entries(unit: &str) -> Vec<(String, String)> {
    let mut in_service = false;
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service
            && !line.starts_with('#')
            && let Some((k, v)) = line.split_once('=')
        {
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

#[test]
fn the_systemd_unit_runs_serve_on_loopback_with_only_the_needed_capabilities() {
    let unit = std::fs::read_to_string(workspace_root().join("deploy/tracer.service")).unwrap();
    let entries = service_entries(&unit);
    let get = |k: &str| {
        entries
            .iter()
            .find(|(key, _)| key == k)
            .map_or_else(|| panic!("no {k}= in [Service]"), |(_, v)| v.as_str())
    };
    let exec = get("ExecStart");
    assert!(exec.contains("tracer serve"), "{exec}");
    assert!(exec.contains("--listen 127.0.0.1:9464"), "{exec}");
    assert!(!exec.contains("--allow-remote"), "{exec}");
    assert_eq!(get("KillSignal"), "SIGTERM");
    let want: Vec<String> = CAPABILITIES.iter().map(|c| format!("CAP_{c}")).collect();
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let got: Vec<&str> = get(key).split_whitespace().collect();
        assert_eq!(got, want, "{key}");
    }
}

#[test]
fn the_daemonset_shares_the_host_pids_drops_all_but_the_needed_capabilities_and_is_scraped() {
    let text = std::fs::read_to_string(workspace_root().join("deploy/daemonset.yaml")).unwrap();
    let docs = YamlLoader::load_from_str(&text).expect("YAML");
    let ds = &docs[0];
    assert_eq!(ds["kind"].as_str(), Some("DaemonSet"));
    let template = &ds["spec"]["template"];
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(annotations["prometheus.io/port"].as_str(), Some("9464"));
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));
    let spec = &template["spec"];
    assert_eq!(spec["hostPID"].as_bool(), Some(true));
    let c = &spec["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(args[0], "serve");
    assert!(args.contains(&"--listen=0.0.0.0:9464"), "{args:?}");
    assert!(args.contains(&"--allow-remote"), "{args:?}");
    assert!(
        args.iter()
            .any(|a| a.starts_with("--exe=") || a.starts_with("--port="))
    );
    assert_eq!(c["ports"][0]["containerPort"].as_i64(), Some(9464));
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"].as_bool(), Some(false));
    let caps = &sc["capabilities"];
    let list = |y: &Yaml| -> Vec<String> {
        y.as_vec()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(list(&caps["drop"]), vec!["ALL"]);
    assert_eq!(list(&caps["add"]), CAPABILITIES);
    // tracefs, from the host, read-only.
    let mount = &c["volumeMounts"][0];
    assert_eq!(mount["mountPath"].as_str(), Some("/sys/kernel/tracing"));
    assert_eq!(mount["readOnly"].as_bool(), Some(true));
    assert_eq!(
        spec["volumes"][0]["hostPath"]["path"].as_str(),
        Some("/sys/kernel/tracing")
    );
}
