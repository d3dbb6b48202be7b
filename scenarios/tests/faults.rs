//! The tracer under faults: what it reports must stay true when it loses
//! records. Needs root and Go: run with `cargo xtask test`.

// Integration tests: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{process::Command, thread, time::Duration};

use scenarios::{
    Server, TracerRun, free_port, go_binary,
    harness::scratch_dir,
    load::wrk_latency,
    report::{num, route},
};

/// The Go test server (`scenarios/basic`) on a free port, with `args`.
fn basic_server(args: &[&str]) -> Server {
    let port = free_port().expect("port");
    let mut cmd = Command::new(go_binary("basic").expect("build scenarios/basic"));
    cmd.args(["-addr", &format!("127.0.0.1:{port}")]).args(args);
    Server::start(cmd, port).expect("basic server")
}

/// The tracer stopped for 2 s (SIGSTOP) under wrk: the kernel's ring buffer
/// fills and records are lost. Requests in progress across the loss are
/// counted as `events_lost` and kept out of every figure: no merged
/// "request" of the length of the stop appears, and the loss is said.
#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn lost_records_invent_no_requests() {
    let server = basic_server(&[]);
    let tracer =
        TracerRun::record(&[server.pid()], &scratch_dir("lost-records"), &[]).expect("tracer");
    let url = server.url("/fast");
    let load = thread::spawn(move || wrk_latency(&url, 2, 50, 6).expect("wrk"));
    thread::sleep(Duration::from_millis(1500));
    let pid = tracer.pid() as libc::pid_t;
    // SAFETY: signalling the tracer process this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    thread::sleep(Duration::from_secs(2));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let wrk = load.join().expect("load");
    let out = tracer.stop().expect("tracer stops");
    assert!(out.status.success(), "{}", out.stderr);
    let report = &out.report;

    let dropped = report["dropped_events"].as_u64().unwrap_or(0);
    assert!(
        dropped > 0,
        "the stop must lose records: {}",
        report["drops"]
    );
    let r = route(report, "GET", "/fast").expect("GET /fast");
    let lost = r["outcomes"]["events_lost"].as_u64().unwrap_or(0);
    assert!(
        lost > 0,
        "requests across the loss are marked: {}",
        r["outcomes"]
    );
    // wrk's own p99 is a few ms; a merged phantom would last about the stop.
    let max_us = r["max_us"].as_u64().unwrap_or(u64::MAX);
    assert!(
        max_us < 500_000,
        "max {max_us} µs (wrk p99 {:.0} µs): a phantom request",
        wrk.p99_us
    );
    for s in report["slowest"].as_array().expect("slowest") {
        assert_ne!(s["outcome"], "events_lost");
        assert!(s["total_us"].as_u64().unwrap_or(0) < 500_000, "{s}");
    }
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("records lost") && warnings.contains("events_lost"),
        "{warnings}"
    );
}

/// A closed terminal (SIGHUP) ends the trace like Ctrl-C: the report is written.
#[test]
#[ignore = "needs root: cargo xtask test"]
fn sighup_writes_the_report() {
    let mut target = Command::new("sleep").arg("30").spawn().expect("sleep");
    let out = scratch_dir("sighup");
    let tracer = TracerRun::record(&[target.id()], &out, &[]).expect("tracer");
    thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling the tracer process this test started.
    unsafe { libc::kill(tracer.pid() as libc::pid_t, libc::SIGHUP) };
    let done = tracer
        .wait(Duration::from_secs(30))
        .expect("tracer ends on SIGHUP");
    let _ = target.kill();
    let _ = target.wait();
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(done.report["requests"], 0, "the report was written");
}

/// A server that forks a child to serve its connections: followed by
/// default, not with `--no-children`.
#[test]
#[ignore = "needs root: cargo xtask test"]
fn no_children_means_no_children() {
    const SERVER: &str = r#"
import os, socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
time.sleep(1.5)
if os.fork() == 0:
    served = 0
    while served < 5:
        c, _ = s.accept()
        if c.recv(1024):
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            served += 1
        c.close()
    os._exit(0)
os.wait()
time.sleep(30)
"#;
    for (flags, expected) in [(&[][..], 5u64), (&["--no-children"][..], 0)] {
        let port = free_port().expect("port");
        let mut cmd = Command::new("python3");
        cmd.args(["-c", SERVER, &port.to_string()]);
        let server = Server::start(cmd, port).expect("forking server");
        let tracer =
            TracerRun::record(&[server.pid()], &scratch_dir("forks"), flags).expect("tracer");
        thread::sleep(Duration::from_secs(2));
        for _ in 0..5 {
            let status = Command::new("curl")
                .args(["-s", "-o", "/dev/null", &server.url("/")])
                .status()
                .expect("curl");
            assert!(status.success());
        }
        thread::sleep(Duration::from_millis(500));
        let out = tracer.stop().expect("tracer stops");
        assert!(out.status.success(), "{}", out.stderr);
        assert_eq!(
            out.report["requests"].as_u64(),
            Some(expected),
            "{flags:?}: {}",
            out.report["processes"]
        );
        let processes = out.report["processes"].as_array().map_or(0, Vec::len);
        assert_eq!(processes, if expected == 0 { 1 } else { 2 }, "{flags:?}");
    }
}

fn exec(args: &[&str], out: &std::path::Path) -> (std::process::Output, serde_json::Value) {
    let output = Command::new(scenarios::tracer_bin())
        .arg("exec")
        .arg("--out")
        .arg(out)
        .arg("--overwrite")
        .args(args)
        .output()
        .expect("tracer exec");
    let report = std::fs::read_to_string(out.join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    (output, report)
}

/// `exec` says how its command ended, in the report and the summary.
#[test]
#[ignore = "needs root: cargo xtask test"]
fn exec_reports_how_the_command_ended() {
    let out = scratch_dir("exec-status");
    let (output, report) = exec(
        &["--duration", "10", "--", "sh", "-c", "sleep 0.3; exit 3"],
        &out,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(report["command"]["exit_code"], 3, "{}", report["command"]);
    assert_eq!(report["command"]["exited_by_itself"], true);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("exited with status 3 while traced"),
        "{stdout}"
    );
}

/// `exec` ends everything its command started: a server behind a wrapper
/// script does not outlive the trace, holding its port.
#[test]
#[ignore = "needs root: cargo xtask test"]
fn exec_leaves_nothing_behind() {
    let out = scratch_dir("exec-group");
    let marker = "sleep 987651";
    let (output, report) = exec(
        &[
            "--duration",
            "1",
            "--",
            "sh",
            "-c",
            &format!("{marker} & wait"),
        ],
        &out,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(report["command"]["exited_by_itself"], false);
    thread::sleep(Duration::from_millis(200));
    let left = Command::new("pgrep")
        .args(["-f", marker])
        .output()
        .expect("pgrep");
    assert!(
        left.stdout.is_empty(),
        "left behind: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

/// Two requests pipelined in one write: the tracer cannot split their
/// chains, and says so instead of counting one request silently.
#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn pipelined_requests_are_said() {
    use std::io::{Read, Write};
    let server = basic_server(&[]);
    let tracer =
        TracerRun::record(&[server.pid()], &scratch_dir("pipelined"), &[]).expect("tracer");
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    conn.write_all(
        b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .expect("write");
    let mut answers = String::new();
    conn.read_to_string(&mut answers).expect("read");
    assert_eq!(answers.matches("HTTP/1.1 200").count(), 2, "{answers}");
    drop(conn);
    thread::sleep(Duration::from_millis(300));
    let out = tracer.stop().expect("tracer stops");
    assert!(out.status.success(), "{}", out.stderr);
    let warnings = out.report["warnings"].to_string();
    assert!(
        warnings.contains("1 requests arrived pipelined"),
        "{warnings}"
    );
}

/// Connections that send nothing, or half a request, or stop reading a
/// response, are still open when tracing ends: each is counted as accepted
/// and open, by where it stands. Go reads a new connection at once (and
/// gets EAGAIN), so a silent one shows no read at all: only its accept.
#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn open_connections_are_counted_by_where_they_stand() {
    use std::{io::Write, net::TcpStream};
    let server = basic_server(&["-stream-mb", "64"]);
    let port = server.port;
    let tracer =
        TracerRun::record(&[server.pid()], &scratch_dir("open-conns"), &[]).expect("tracer");
    let connect = || TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let send = |bytes: &[u8]| {
        let mut c = connect();
        c.write_all(bytes).expect("write");
        c
    };
    let silent: Vec<TcpStream> = (0..3).map(|_| connect()).collect();
    let half = send(b"GET /fast HTTP/1.1\r\nHost: x\r\n");
    let handler = send(b"GET /sleep/20000 HTTP/1.1\r\nHost: x\r\n\r\n");
    // 64 MiB never read: the server's writes fill the socket and wait.
    let unread = send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answered = send(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 256];
    let n = std::io::Read::read(&mut answered, &mut buf).expect("answer");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    thread::sleep(Duration::from_millis(500));
    let out = tracer.stop().expect("tracer stops");
    assert!(out.status.success(), "{}", out.stderr);
    let report = &out.report;
    let by_state = &report["connections_by_state"];
    assert_eq!(
        (
            num(by_state, "idle"),
            num(by_state, "reading_request"),
            num(by_state, "in_handler"),
            num(by_state, "writing"),
        ),
        (4, 1, 1, 1),
        "{by_state}"
    );
    assert_eq!(num(report, "connections_open"), 7);
    assert_eq!(num(report, "connections"), 7);
    assert!(num(report, "connections_open_peak") >= 7);
    assert_eq!(num(&report["listeners"][0], "accepted"), 7);
    assert!(
        out.stdout.contains("open at the end: 7 connections (4 idle, 1 reading a request, 1 in the handler, 1 writing a response)"),
        "{}",
        out.stdout
    );
    drop((silent, half, handler, unread, answered));
}

/// A server that forks a child per connection (inetd-style): the parent
/// accepts, closes its copy and accepts the next, often before the child
/// has read. Every request is counted, accepted, and served by a child
/// listed under its name, though most children exit before the tracer
/// looks at them.
#[test]
#[ignore = "needs root: cargo xtask test"]
fn a_child_forked_per_connection_is_followed() {
    const SERVER: &str = r#"
import os, signal, socket, sys
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
while True:
    c, _ = s.accept()
    if os.fork() == 0:
        s.close()
        if c.recv(4096):
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
        c.close()
        os._exit(0)
    c.close()
"#;
    let port = free_port().expect("port");
    let mut cmd = Command::new("python3");
    cmd.args(["-c", SERVER, &port.to_string()]);
    let server = Server::start(cmd, port).expect("forking server");
    let tracer =
        TracerRun::record(&[server.pid()], &scratch_dir("fork-per-conn"), &[]).expect("tracer");
    let load = scenarios::load::hey(&server.url("/x"), 100, 4).expect("hey");
    assert_eq!(load.responses(), 100);
    thread::sleep(Duration::from_millis(300));
    let out = tracer.stop().expect("tracer stops");
    assert!(out.status.success(), "{}", out.stderr);
    let report = &out.report;
    let r = route(report, "GET", "/x").expect("GET /x");
    assert_eq!(num(r, "count"), 100, "{}", r["outcomes"]);
    assert_eq!(num(&report["listeners"][0], "accepted"), 100);
    assert!(
        num(&r["stages"]["accept_queue"], "total_us") > 0,
        "accept times are known"
    );
    let processes = report["processes"].as_array().expect("processes");
    assert_eq!(
        processes.len(),
        101,
        "the server and a child per connection"
    );
    assert!(
        processes.iter().all(|p| p["comm"] == "python3"),
        "{processes:?}"
    );
    for s in scenarios::report::slowest(report) {
        assert_eq!(s["process"], "python3", "{s}");
    }
}

/// The overhead budget under wrk: the tracer costs more than the budget,
/// so it traces a share of the connections, each request whole. Every
/// request is still counted (traced, or left out in the kernel's count),
/// and a route's latency from the traced share is the route's.
#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn over_budget_a_share_of_connections_is_traced_and_counts_hold() {
    let server = basic_server(&[]);
    let tracer = TracerRun::record(
        &[server.pid()],
        &scratch_dir("budget"),
        &["--max-overhead", "5"],
    )
    .expect("tracer");
    let url = server.url("/fast");
    let load = thread::spawn(move || wrk_latency(&url, 2, 50, 8).expect("wrk"));
    thread::sleep(Duration::from_secs(3));
    // A new connection per request, while the share is lowered.
    let slow =
        scenarios::load::hey_without_keepalive(&server.url("/sleep/30"), 300, 10).expect("hey");
    let wrk = load.join().expect("load");
    thread::sleep(Duration::from_millis(300));
    let out = tracer.stop().expect("tracer stops");
    assert!(out.status.success(), "{}", out.stderr);
    let report = &out.report;
    let budget = &report["sampling"]["connections"];
    assert!(num(report, "requests_left_out") > 0, "{budget}");
    // wrk's 50 and hey's 300, each counted once however often left out.
    assert!(
        num(report, "connections") <= 360,
        "{}",
        report["connections"]
    );
    assert!(!budget["spans"].as_array().expect("spans").is_empty());
    let served = num(report, "requests") + num(report, "requests_left_out");
    let sent = wrk.requests + slow.responses();
    assert!(
        served.abs_diff(sent) <= sent / 100 + 60,
        "served {served} (traced {} + left out {}), sent {sent}",
        num(report, "requests"),
        num(report, "requests_left_out")
    );
    let r = route(report, "GET", "/sleep/30").expect("some /sleep/30 traced");
    let handler = num(&r["stages"]["handler"], "p50_us");
    assert!(
        (28_000..36_500).contains(&handler),
        "handler p50 {handler} µs for a 30 ms sleep"
    );
    assert!(out.stdout.contains("overhead budget 5%"), "{}", out.stdout);
}

/// A quiet server is never sampled, whatever the budget: a few hundred
/// requests a second cost the tracer too little to leave any out.
#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn a_quiet_server_is_traced_whole() {
    let server = basic_server(&[]);
    let tracer = TracerRun::record(
        &[server.pid()],
        &scratch_dir("budget-quiet"),
        &["--max-overhead", "3"],
    )
    .expect("tracer");
    let load = scenarios::load::hey(&server.url("/sleep/5"), 1000, 2).expect("hey");
    let out = tracer.stop().expect("tracer stops");
    assert!(out.status.success(), "{}", out.stderr);
    let report = &out.report;
    assert_eq!(num(report, "requests_left_out"), 0);
    assert!(
        report["sampling"]["connections"]["spans"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    assert_eq!(num(report, "requests"), load.responses());
}
