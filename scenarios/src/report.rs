//! Reading `report.json` in tests: routes, stages, slowest requests.

use serde_json::Value;

/// The route object for `method path`, if reported.
pub fn route<'a>(report: &'a Value, method: &str, path: &str) -> Option<&'a Value> {
    report["routes"]
        .as_array()?
        .iter()
        .find(|r| r["method"] == method && r["path"] == path)
}

/// A `u64` field, 0 when absent.
pub fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// A stage statistic of a route (`p50_us`, `p99_us`, `total_us`).
pub fn stage(route: &Value, stage: &str, stat: &str) -> u64 {
    route["stages"][stage][stat].as_u64().unwrap_or(0)
}

/// Responses per status code of a route.
pub fn status_count(route: &Value, status: u16) -> u64 {
    route["statuses"][status.to_string()].as_u64().unwrap_or(0)
}

pub fn slowest(report: &Value) -> &[Value] {
    report["slowest"].as_array().map_or(&[][..], Vec::as_slice)
}

/// Sum of a slow request's stage times.
pub fn stage_sum(slow: &Value) -> u64 {
    slow["stages"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}

/// A `GET {path}` route of the basic server's `/sleep/N` handler: every
/// request counted, and its handler and total medians slept the injected
/// time ([`assert_slept`] against the client's median).
pub fn assert_sleep_route(
    report: &Value,
    path: &str,
    injected_ms: u32,
    load: &crate::load::LoadResult,
) {
    let r = route(report, "GET", path).unwrap_or_else(|| panic!("route GET {path} missing"));
    assert_eq!(num(r, "count"), load.responses(), "GET {path} count");
    let Some(client) = load.p50_ms else {
        panic!("GET {path}: hey reported no median");
    };
    let injected = f64::from(injected_ms);
    assert_slept(
        &format!("GET {path} handler p50"),
        stage(r, "handler", "p50_us"),
        injected,
        client,
    );
    assert_slept(
        &format!("GET {path} total p50"),
        num(r, "p50_us"),
        injected,
        client,
    );
}

/// A traced time (µs) of requests that slept `injected_ms` each and took
/// `client_ms` as their client saw them. Never less than the sleep nor more
/// than the client's time (2 ms either side for rounding and timer slack);
/// on a real CPU also within 15% (+2 ms) of the sleep. An emulated CPU
/// stretches the sleep and the client alike, so there only the bracket holds.
pub fn assert_slept(what: &str, got_us: u64, injected_ms: f64, client_ms: f64) {
    let (low, high) = ((injected_ms - 2.0) * 1000.0, (client_ms + 2.0) * 1000.0);
    assert!(
        (low..=high).contains(&(got_us as f64)),
        "{what}: {got_us} µs, outside the injected {injected_ms} ms and the client's {client_ms:.1} ms"
    );
    if crate::harness::emulated() {
        return;
    }
    let want = (injected_ms * 1000.0) as u64;
    let tolerance = want * 15 / 100 + 2000;
    assert!(
        got_us.abs_diff(want) <= tolerance,
        "{what}: {got_us} µs, expected {want} µs (±{tolerance})"
    );
}
