//! Verdicts as JUnit XML, the test-report format CI systems show: one test
//! case per budget, a failure for each broken one.

use super::Verdict;

/// The XML document.
pub fn render(verdicts: &[Verdict]) -> String {
    let failures = verdicts.iter().filter(|v| !v.held).count();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"tracer\" tests=\"{}\" failures=\"{failures}\">\n  <testsuite name=\"latency budgets\" tests=\"{}\" failures=\"{failures}\">\n",
        verdicts.len(),
        verdicts.len()
    );
    for v in verdicts {
        let name = escape(&v.budget);
        if v.held {
            out.push_str(&format!(
                "    <testcase classname=\"tracer.budget\" name=\"{name}\"><system-out>measured: {}</system-out></testcase>\n",
                escape(&v.measured)
            ));
        } else {
            out.push_str(&format!(
                "    <testcase classname=\"tracer.budget\" name=\"{name}\"><failure message=\"measured: {m}\">{name}: measured {m}</failure></testcase>\n",
                m = escape(&v.measured)
            ));
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_case_per_budget_and_a_failure_for_each_broken_one() {
        let v = |budget: &str, held| Verdict {
            budget: budget.into(),
            held,
            measured: "GET /api p99 62.1ms".into(),
        };
        let xml = render(&[v("p99 < 50ms", false), v("dropped_events == 0", true)]);
        assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
        assert_eq!(xml.matches("<testcase").count(), 2);
        assert_eq!(xml.matches("<failure").count(), 1);
        assert!(xml.contains("name=\"p99 &lt; 50ms\""), "{xml}");
    }
}
