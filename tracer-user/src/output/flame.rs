//! Flame-graph SVGs of folded stacks, rendered with inferno.

use std::io::BufWriter;

use anyhow::{Context, Result};
use tracer_core::report::folded::Folded;

/// The SVG of `folded`, titled; `count_name` names the unit (`us`, `samples`).
pub fn svg(folded: &Folded, title: &str, count_name: &str) -> Result<Vec<u8>> {
    let text = folded.render();
    if text.is_empty() {
        // inferno refuses empty input; an SVG saying so is more useful than none.
        return Ok(empty_svg(title).into_bytes());
    }
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title.to_string();
    opts.count_name = count_name.to_string();
    opts.hash = true;
    let mut out = BufWriter::new(Vec::new());
    inferno::flamegraph::from_lines(&mut opts, text.lines(), &mut out)
        .with_context(|| format!("rendering the flame graph {title:?}"))?;
    out.into_inner()
        .context("flushing the flame graph into memory")
}

fn empty_svg(title: &str) -> String {
    let title = title.replace('&', "&amp;").replace('<', "&lt;");
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg version=\"1.1\" width=\"1200\" height=\"60\" xmlns=\"http://www.w3.org/2000/svg\">\
<text x=\"600\" y=\"24\" text-anchor=\"middle\">{title}</text><text x=\"600\" y=\"48\" text-anchor=\"middle\">no samples</text></svg>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_stacks_and_says_when_there_are_none() {
        let mut f = Folded::default();
        f.add(&["srv", "GET /a", "handler"], 100);
        let text =
            String::from_utf8(svg(&f, "srv: request time", "us").expect("svg")).expect("utf8");
        assert!(
            text.contains("<svg") && text.contains("handler") && text.contains("srv: request time")
        );
        let empty = String::from_utf8(svg(&Folded::default(), "nothing", "us").expect("svg"))
            .expect("utf8");
        assert!(empty.contains("no samples") && empty.contains("nothing"));
    }
}
