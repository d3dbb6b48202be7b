//! What the tracer does on kernels without some of its hooks: the kernel it
//! runs on (these tests also run inside `cargo xtask vm-test`, on Debian's
//! 6.1 and 6.12), and hooks turned off with `TRACER_HOOKS_OFF` to try a
//! missing one here. Needs root: run with `cargo xtask test`.

// Integration tests: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use scenarios::{
    Server, TracerRun, free_port, go_binary,
    harness::scratch_dir,
    load::hey,
    report::{assert_sleep_route, num, route, stage},
    tracer_bin,
};

fn basic_server() -> Server {
    let bin = go_binary("basic").expect("build scenarios/basic");
    let port = free_port().expect("port");
    let mut cmd = Command::new(bin);
    cmd.args(["-addr", &format!("127.0.0.1:{port}")]);
    Server::start(cmd, port).expect("start basic server")
}

/// Whether this kernel's BTF names `name` (a tracepoint's `btf_trace_*`
/// type, an enumerator): what the tracer itself looks up.
fn btf_names(name: &str) -> bool {
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").expect("kernel BTF");
    let needle = format!("{name}\0");
    btf.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The chain of the basic server's sleeping and streaming routes, traced
/// with `env`, holds to what the routes inject; returns the tracer's output.
fn trace_basic(name: &str, env: &[(&str, &str)]) -> scenarios::harness::TracerOutput {
    let server = basic_server();
    let tracer =
        TracerRun::record_with_env(&[server.pid()], &scratch_dir(name), &[], env).expect("tracer");
    let s20 = hey(&server.url("/sleep/20"), 100, 5).expect("hey /sleep/20");
    let s200 = hey(&server.url("/sleep/200"), 20, 5).expect("hey /sleep/200");
    let stream = hey(&server.url("/stream"), 10, 2).expect("hey /stream");
    thread::sleep(Duration::from_millis(300));
    let out = tracer.stop().expect("tracer stops");
    assert!(out.status.success(), "{}", out.stderr);
    let report = &out.report;
    assert_eq!(
        num(&report["drops"], "ringbuf_full"),
        0,
        "records were dropped"
    );
    for (path, injected, load) in [("/sleep/20", 20, &s20), ("/sleep/200", 200, &s200)] {
        assert_sleep_route(report, path, injected, load);
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
    out
}

/// Everything the tracer printed: warnings open its standard error (read
/// while it attaches) and close its summary.
fn printed(out: &scenarios::harness::TracerOutput) -> String {
    format!("{}\n{}", out.stdout, out.stderr)
}

fn attached(out: &scenarios::harness::TracerOutput, program: &str) -> bool {
    out.report["program_costs"]
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p["program"] == program))
}

/// On the kernel it runs on, with nothing turned off, the tracer traces
/// the chain right and names exactly what this kernel lacks.
#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn the_tracer_names_what_this_kernel_lacks() {
    let out = trace_basic("kernel-as-is", &[]);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let lacks_sock_length = !btf_names("btf_trace_sock_recv_length");
    let lacks_data_ready = !btf_names("btf_trace_sk_data_ready");
    let lacks_overflow = !btf_names("SKB_DROP_REASON_TCP_LISTEN_OVERFLOW");
    eprintln!(
        "kernel {}: sock_recv_length {}, sk_data_ready {}, listen-overflow drop reason {}",
        release.trim(),
        !lacks_sock_length,
        !lacks_data_ready,
        !lacks_overflow
    );
    let text = printed(&out);
    let said = |what: &str| text.contains(what);
    assert_eq!(
        said("kernel lacks BTF tracepoint sock_recv_length"),
        lacks_sock_length,
        "{text}"
    );
    assert_eq!(said("syscall exits"), lacks_sock_length, "{text}");
    assert_eq!(attached(&out, "sys_exit_sock_io"), lacks_sock_length);
    assert_eq!(attached(&out, "sock_recv_length"), !lacks_sock_length);
    assert_eq!(said("read_wait will be 0"), lacks_data_ready, "{text}");
    assert_eq!(
        said("does not name accept-queue overflow drops"),
        lacks_overflow,
        "{text}"
    );
    // What was lost is in the report too, not only on the terminal.
    let warnings = out.report["warnings"].to_string();
    assert_eq!(
        warnings.contains("read_wait will be 0"),
        lacks_data_ready,
        "{warnings}"
    );
}

/// Kernels before 6.3 have no `sock_recv_length`/`sock_send_length`:
/// syscall exits stand in, and the chain comes out the same.
#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn syscall_exits_stand_in_for_the_socket_tracepoints() {
    let out = trace_basic(
        "kernel-no-sock-length",
        &[("TRACER_HOOKS_OFF", "sock_recv_length,sock_send_length")],
    );
    let text = printed(&out);
    assert!(
        text.contains("sock_recv_length is turned off (TRACER_HOOKS_OFF), sock_send_length is turned off (TRACER_HOOKS_OFF): socket reads and writes are taken from syscall exits instead"),
        "{text}"
    );
    assert!(attached(&out, "sys_exit_sock_io"));
    assert!(!attached(&out, "sock_recv_length") && !attached(&out, "sock_send_length"));
}

/// The stand-in reads the socket behind the fd for any server, not just
/// Go's: Python's http.server uses recv_into and sendall.
#[test]
#[ignore = "needs root: cargo xtask test"]
fn syscall_exits_stand_in_for_a_python_server_too() {
    let port = free_port().expect("port");
    let dir = scratch_dir("kernel-python-root");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("index.html"), "hello\n").expect("index");
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .current_dir(&dir)
    .stderr(Stdio::null());
    let server = Server::start(cmd, port).expect("python3 -m http.server");
    let tracer = TracerRun::record_with_env(
        &[server.pid()],
        &scratch_dir("kernel-python"),
        &[],
        &[("TRACER_HOOKS_OFF", "sock_recv_length,sock_send_length")],
    )
    .expect("tracer");
    let load = hey(&server.url("/index.html"), 200, 2).expect("hey");
    thread::sleep(Duration::from_millis(300));
    let out = tracer.stop().expect("tracer stops");
    assert!(out.status.success(), "{}", out.stderr);
    let r = route(&out.report, "GET", "/index.html").expect("route GET /index.html");
    assert_eq!(num(r, "count"), load.responses());
    assert_eq!(num(&out.report, "requests"), load.responses());
}

/// Without `sk_data_ready` (kernels before 6.6) the tracer cannot tell when
/// request bytes arrived: read_wait is 0, and it says so.
#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn without_sk_data_ready_read_wait_is_zero_and_said() {
    let out = trace_basic(
        "kernel-no-data-ready",
        &[("TRACER_HOOKS_OFF", "sk_data_ready")],
    );
    assert!(
        printed(&out).contains("read_wait will be 0"),
        "{}",
        printed(&out)
    );
    let r = route(&out.report, "GET", "/sleep/20").expect("route");
    assert_eq!(stage(r, "read_wait", "total_us"), 0, "{r}");
    assert!(!attached(&out, "sk_data_ready"));
}

/// A hook the tracer cannot work without: one line naming it, and a
/// non-zero exit, before anything is traced.
#[test]
#[ignore = "needs root and Go: cargo xtask test"]
fn a_missing_required_hook_is_one_clear_line() {
    let server = basic_server();
    let dir = scratch_dir("kernel-no-state");
    let out = Command::new(tracer_bin())
        .args(["record", "--pid", &server.pid().to_string(), "--out"])
        .arg(&dir)
        .env("TRACER_HOOKS_OFF", "sock/inet_sock_set_state")
        .output()
        .expect("run tracer");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // A fresh machine (or VM) has no tracefs yet: mounting it is said first.
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("tracer: mounted tracefs"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("sock/inet_sock_set_state")
            && lines[0].contains("cannot work without it"),
        "{stderr}"
    );
}
