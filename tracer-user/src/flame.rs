//! Folded stacks (the format of FlameGraph, inferno and speedscope) and
//! their SVG rendering with inferno.

use std::{fs, io::BufWriter, path::Path};

use anyhow::{Context, Result};

/// A set of folded stacks: frames root first, and a count per stack.
#[derive(Default)]
pub struct Folded {
    lines: Vec<(String, u64)>,
}

impl Folded {
    pub fn add(&mut self, frames: &[&str], count: u64) {
        if count == 0 || frames.is_empty() {
            return;
        }
        let stack: Vec<String> = frames.iter().map(|f| sanitize(f)).collect();
        self.lines.push((stack.join(";"), count));
    }

    /// Lines sorted by stack, identical stacks merged.
    pub fn render(&self) -> String {
        let mut merged: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for (stack, count) in &self.lines {
            *merged.entry(stack).or_default() += count;
        }
        let mut out = String::new();
        for (stack, count) in merged {
            out.push_str(stack);
            out.push(' ');
            out.push_str(&count.to_string());
            out.push('\n');
        }
        out
    }

    /// Writes `<stem>.folded` and `<stem>.svg` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str, title: &str, count_name: &str) -> Result<()> {
        let text = self.render();
        let folded = dir.join(format!("{stem}.folded"));
        fs::write(&folded, &text).with_context(|| format!("writing {}", folded.display()))?;

        let svg = dir.join(format!("{stem}.svg"));
        let file = fs::File::create(&svg).with_context(|| format!("creating {}", svg.display()))?;
        let mut opts = inferno::flamegraph::Options::default();
        opts.title = title.to_string();
        opts.count_name = count_name.to_string();
        opts.hash = true;
        if text.is_empty() {
            // inferno refuses empty input; an SVG saying so is more useful than none.
            fs::write(&svg, empty_svg(title))
                .with_context(|| format!("writing {}", svg.display()))?;
            return Ok(());
        }
        inferno::flamegraph::from_lines(&mut opts, text.lines(), BufWriter::new(file))
            .with_context(|| format!("rendering {}", svg.display()))?;
        Ok(())
    }
}

/// Frames may not contain the separators of the folded format.
fn sanitize(frame: &str) -> String {
    frame
        .chars()
        .map(|c| match c {
            ';' => ':',
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect()
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
    fn merges_and_sanitizes() {
        let mut f = Folded::default();
        f.add(&["srv", "GET /a;b", "handler"], 5);
        f.add(&["srv", "GET /a;b", "handler"], 7);
        f.add(&["srv", "GET /c", "read_wait"], 1);
        f.add(&["srv"], 0);
        assert_eq!(
            f.render(),
            "srv;GET /a:b;handler 12\nsrv;GET /c;read_wait 1\n"
        );
    }

    #[test]
    fn writes_folded_and_svg() {
        let dir = std::env::temp_dir().join(format!("tracer-flame-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let mut f = Folded::default();
        f.add(&["srv", "GET /a", "handler"], 100);
        f.write(&dir, "chains", "srv: request time", "us")
            .expect("write");
        let svg = fs::read_to_string(dir.join("chains.svg")).expect("svg");
        assert!(
            svg.contains("<svg") && svg.contains("handler") && svg.contains("srv: request time")
        );
        Folded::default()
            .write(&dir, "empty", "nothing", "us")
            .expect("write empty");
        assert!(
            fs::read_to_string(dir.join("empty.svg"))
                .expect("svg")
                .contains("no samples")
        );
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
