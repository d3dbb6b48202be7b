//! The chain of a Go net/http server under real load, against what its
//! routes inject. Needs root: run with `cargo xtask test`.

// Integration tests: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{process::Command, thread, time::Duration};

use scenarios::{
    Server, TracerRun, free_port, go_binary,
    harness::{emulated, scratch_dir},
    load::{hey, wrk},
    report::{
        assert_sleep_route, assert_slept, num, route, slowest, stage, stage_sum, status_count,
    },
};

fn basic_server() -> Server {
    let bin = go_binary("basic").expect("build scenarios/basic");
    let port = free_port().expect("port");
    let mut cmd = Command::new(bin);
    cmd.args(["-addr", &format!("127.0.0.1:{port}")]);
    Server::start(cmd, port).expect("start basic server")
}

#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn handler_time_and_counts_match_the_injected_load() {
    let server = basic_server();
    let tracer =
        TracerRun::record(&[server.pid()], &scratch_dir("go-chain"), &[]).expect("tracer attaches");

    let s20 = hey(&server.url("/sleep/20"), 100, 5).expect("hey /sleep/20");
    let s200 = hey(&server.url("/sleep/200"), 20, 5).expect("hey /sleep/200");
    let stream = hey(&server.url("/stream"), 10, 2).expect("hey /stream");
    let fast = wrk(&server.url("/fast"), 2, 10, 3).expect("wrk /fast");
    // wrk stops with requests in flight: let the server finish them.
    thread::sleep(Duration::from_millis(300));
    let out = tracer.stop().expect("tracer stops on SIGINT");
    assert!(out.status.success(), "tracer failed: {}", out.stderr);
    let report = &out.report;

    assert_eq!(
        num(&report["drops"], "ringbuf_full"),
        0,
        "records were dropped"
    );
    for (path, injected, load) in [("/sleep/20", 20, &s20), ("/sleep/200", 200, &s200)] {
        assert_sleep_route(report, path, injected, load);
        let r = route(report, "GET", path).unwrap_or_else(|| panic!("route GET {path} missing"));
        assert_eq!(status_count(r, 200), load.statuses[&200], "GET {path} 200s");
    }

    let r = route(report, "GET", "/stream").expect("route GET /stream");
    assert_eq!(num(r, "count"), stream.responses());
    let (write, handler) = (
        stage(r, "response_write", "p50_us"),
        stage(r, "handler", "p50_us"),
    );
    assert!(
        write > handler,
        "streaming 8 MiB: response_write p50 {write} µs should exceed handler p50 {handler} µs"
    );

    let r = route(report, "GET", "/fast").expect("route GET /fast");
    let seen = num(r, "count");
    // wrk does not count the requests in flight when it stops: at most
    // one per connection, of its 10.
    assert!(
        seen >= fast && seen <= fast + 10,
        "GET /fast: tracer {seen}, wrk {fast}"
    );

    let slow = slowest(report);
    assert!(!slow.is_empty());
    // An emulated CPU streams 8 MiB slower than 200 ms.
    let slowest_paths: &[&str] = if emulated() {
        &["/sleep/200", "/stream"]
    } else {
        &["/sleep/200"]
    };
    assert!(
        slowest_paths.iter().any(|p| slow[0]["path"] == *p),
        "the slowest request is a 200 ms one: {}",
        slow[0]["path"]
    );
    for s in slow {
        let total = num(s, "total_us");
        // Each stage is truncated to whole microseconds on its own.
        assert!(
            stage_sum(s).abs_diff(total) <= 5,
            "stages {} do not add up to total {total}",
            s["stages"]
        );
        assert!(
            s["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "peer {}",
            s["peer"]
        );
    }

    let folded = std::fs::read_to_string(out.out.join("chains.folded")).expect("chains.folded");
    assert!(
        folded
            .lines()
            .any(|l| l.starts_with("basic;GET /sleep/200;handler ")),
        "folded:\n{folded}"
    );
    let svg = std::fs::read_to_string(out.out.join("chains.svg")).expect("chains.svg");
    assert!(svg.starts_with("<?xml") && svg.contains("GET /sleep/200"));
}

#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn exec_starts_traces_and_stops_the_command() {
    let bin = go_binary("basic").expect("build scenarios/basic");
    let port = free_port().expect("port");
    let args: Vec<String> = ["exec", "--out"]
        .iter()
        .map(std::string::ToString::to_string)
        .chain([
            scratch_dir("go-exec").display().to_string(),
            "--".into(),
            bin.display().to_string(),
        ])
        .chain(["-addr".into(), format!("127.0.0.1:{port}")])
        .collect();
    let tracer = TracerRun::start(&args, &scratch_dir("go-exec")).expect("tracer exec");
    scenarios::harness::wait_for_port(port, Duration::from_secs(10)).expect("server up");
    let load = hey(&format!("http://127.0.0.1:{port}/sleep/20"), 30, 3).expect("hey");
    let out = tracer.stop().expect("tracer stops");
    assert!(out.status.success(), "{}", out.stderr);
    let r = route(&out.report, "GET", "/sleep/20").expect("route");
    assert_eq!(num(r, "count"), load.responses());
    assert!(
        out.report["listeners"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l["port"] == port))
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the command outlived the tracer"
    );
}

#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn a_server_exiting_mid_trace_ends_the_trace_with_what_was_seen() {
    let mut server = basic_server();
    let tracer =
        TracerRun::record(&[server.pid()], &scratch_dir("go-exit"), &[]).expect("tracer attaches");
    let load = hey(&server.url("/sleep/20"), 10, 2).expect("hey");
    server.child.kill().expect("kill server");
    let out = tracer
        .wait(Duration::from_secs(20))
        .expect("tracer ends by itself");
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stderr.contains("exited"), "stderr: {}", out.stderr);
    let r = route(&out.report, "GET", "/sleep/20").expect("route");
    assert_eq!(num(r, "count"), load.responses());
    assert_eq!(out.report["processes"][0]["exited"], true);
}

#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn connections_open_before_tracing_are_followed() {
    let server = basic_server();
    // A keep-alive client connected before the tracer starts, sending after.
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    let mut buf = [0u8; 4096];
    conn.write_all(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let _ = conn.read(&mut buf).expect("read");
    let tracer = TracerRun::record(&[server.pid()], &scratch_dir("go-preopen"), &[])
        .expect("tracer attaches");
    let mut round_trips = Vec::new();
    for _ in 0..3 {
        let sent = std::time::Instant::now();
        conn.write_all(b"GET /sleep/20 HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let _ = conn.read(&mut buf).expect("read");
        round_trips.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    drop(conn);
    let out = tracer.stop().expect("tracer stops");
    let r = route(&out.report, "GET", "/sleep/20").expect("route of the pre-opened connection");
    assert_eq!(num(r, "count"), 3);
    round_trips.sort_by(f64::total_cmp);
    let handler = stage(r, "handler", "p50_us");
    assert_slept("handler p50", handler, 20.0, round_trips[1]);
}

/// The report says what tracing cost: the kernel programs' run time, the
/// tracer's CPU, per request and against the server's own CPU.
#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn the_report_says_what_tracing_cost() {
    let server = basic_server();
    let tracer = TracerRun::record(&[server.pid()], &scratch_dir("cost"), &[]).expect("tracer");
    let load = hey(&server.url("/cpu/2"), 2000, 8).expect("hey");
    let out = tracer.stop().expect("tracer stops");
    assert!(out.status.success(), "{}", out.stderr);
    let cost = &out.report["tracer_cost"];
    let f = |k: &str| cost[k].as_f64().unwrap_or(-1.0);
    assert!(
        f("kernel_cpu_s") > 0.0 && f("userspace_cpu_s") > 0.0,
        "{cost}"
    );
    assert!(f("traced_cpu_s") > 0.0, "the server's CPU: {cost}");
    // On a real CPU (emulation multiplies every CPU figure, unevenly):
    // 2,000 requests of 2 ms of CPU each, the server used about 4 s, and
    // tracing costs microseconds a request, a few percent of 2 ms each.
    if !emulated() {
        assert!(
            (3.0..12.0).contains(&f("traced_cpu_s")),
            "the server's CPU: {cost}"
        );
        assert!((0.5..200.0).contains(&f("per_request_us")), "{cost}");
        assert!((0.01..10.0).contains(&f("pct_of_traced_cpu")), "{cost}");
    }
    assert_eq!(num(&out.report, "requests"), load.responses());
    assert!(out.stdout.contains("tracing cost "), "{}", out.stdout);
    // Every run is counted (a request reads at least once), some are timed.
    // Kernels before 6.3 read sockets from syscall exits instead.
    let recv = out.report["program_costs"]
        .as_array()
        .and_then(|p| {
            p.iter()
                .find(|p| p["program"] == "sock_recv_length")
                .or_else(|| p.iter().find(|p| p["program"] == "sys_exit_sock_io"))
        })
        .expect("the socket reads' cost");
    let runs = recv["runs_per_s"].as_f64().unwrap_or(0.0)
        * out.report["duration_s"].as_f64().unwrap_or(0.0);
    assert!(runs >= load.responses() as f64 * 0.99, "{recv}");
    let timed = recv["timed_runs"].as_f64().unwrap_or(0.0);
    assert!(timed >= 1.0 && timed <= runs * 1.01, "{recv}");
    assert!(
        (20.0..100_000.0).contains(&recv["ns_per_run"].as_f64().unwrap_or(0.0)),
        "{recv}"
    );
}
