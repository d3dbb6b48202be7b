//! HTTP/1.x request and status lines, from the first bytes of a request's
//! first read and its response's first write, and the framing of a request
//! head captured whole. Nothing is kept but method, path, status and body
//! length.

/// `METHOD path` (path without query string) of an HTTP/1.x request line,
/// in one allocation: the route label requests are grouped by.
pub fn route_label(bytes: &[u8]) -> Option<Box<str>> {
    let (method, path) = parse_request_line(bytes)?;
    let mut label = String::with_capacity(method.len() + 1 + path.len());
    label.push_str(&method);
    label.push(' ');
    label.push_str(&path);
    Some(label.into_boxed_str())
}

/// Method and path (without query string) of an HTTP/1.x request line.
pub(crate) fn parse_request_line(
    bytes: &[u8],
) -> Option<(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> {
    let line = first_line(bytes);
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if method.is_empty() || method.len() > 16 || !method.iter().all(u8::is_ascii_uppercase) {
        return None;
    }
    if !version.starts_with(b"HTTP/1.") {
        return None;
    }
    let path = target
        .split(|&b| b == b'?' || b == b'#')
        .next()
        .unwrap_or(target);
    if path.is_empty() {
        return None;
    }
    Some((ascii(method), ascii(path)))
}

/// Request lines that follow the end of a request's headers within
/// `bytes`: requests pipelined behind another in the same read.
#[cfg(test)]
fn pipelined_in(bytes: &[u8]) -> u32 {
    header_ends([0; 2], bytes)
        .filter(|&end| parse_request_line(&bytes[end..]).is_some())
        .count() as u32
}

/// Where header blocks end in `bytes`: the offsets just past each empty
/// line (`\r\n\r\n` or `\n\n`), `before` being the two bytes read before
/// them. One pass over the line feeds, nothing copied: it runs on every read.
pub fn header_ends(before: [u8; 2], bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    // The byte `back` places before `bytes[i]`, reaching into `before`.
    let at = move |i: usize, back: usize| {
        if i >= back {
            bytes[i - back]
        } else {
            before[2 + i - back]
        }
    };
    bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i)
        .filter(move |&i| {
            let p1 = at(i, 1);
            p1 == b'\n' || (p1 == b'\r' && at(i, 2) == b'\n')
        })
        .map(|i| i + 1)
}

/// The last two bytes of `before` followed by `bytes`.
pub fn last_two(before: [u8; 2], bytes: &[u8]) -> [u8; 2] {
    match *bytes {
        [] => before,
        [b] => [before[1], b],
        [.., a, b] => [a, b],
    }
}

/// Body bytes that follow a request head (`head` without its request line
/// or with it), from its header lines: Content-Length's value, or 0 with
/// neither it nor Transfer-Encoding (RFC 9112 §6.3). `None` when the body's
/// end cannot be told from the head: chunked, or an unreadable length.
pub fn body_length(head: &[u8]) -> Option<u64> {
    let mut length = 0;
    // Runs on every request: lines are skipped on their first byte, and
    // only those that could name Content-Length or Transfer-Encoding looked into.
    for line in head.split(|&b| b == b'\n').skip(1) {
        if !matches!(line.first(), Some(b'c' | b'C' | b't' | b'T')) {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return None;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            length = std::str::from_utf8(value).ok()?.parse().ok()?;
        }
    }
    Some(length)
}

/// Splits a route label back into method and path.
pub fn split_label(label: &str) -> (&str, &str) {
    label.split_once(' ').unwrap_or((label, ""))
}

/// Status code of an HTTP/1.x status line.
pub fn parse_status_line(bytes: &[u8]) -> Option<u16> {
    let rest = bytes.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// An interim (1xx) response, such as `100 Continue`, precedes the real one.
pub fn is_interim(status: u16) -> bool {
    (100..200).contains(&status)
}

fn first_line(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(bytes.len());
    &bytes[..end]
}

/// Printable ASCII as is (no copy); anything else with `?` in its place.
fn ascii(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    if bytes.iter().all(u8::is_ascii_graphic) {
        // All graphic ASCII: valid UTF-8.
        std::str::from_utf8(bytes).map_or_else(
            |_| std::borrow::Cow::Owned(String::new()),
            std::borrow::Cow::Borrowed,
        )
    } else {
        std::borrow::Cow::Owned(
            bytes
                .iter()
                .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_length_from_the_head() {
        let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(body_length(get), Some(0));
        let post = b"POST /f HTTP/1.1\r\nHost: x\r\ncontent-LENGTH:  12 \r\n\r\n";
        assert_eq!(body_length(post), Some(12));
        let chunked = b"POST /f HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(body_length(chunked), None);
        let bad = b"POST /f HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n";
        assert_eq!(body_length(bad), None);
        // A header value naming Content-Length is not the header.
        let named = b"GET / HTTP/1.1\r\nX-Note: Content-Length: 5\r\n\r\n";
        assert_eq!(body_length(named), Some(0));
    }

    #[test]
    fn pipelined_requests_are_counted() {
        let two = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(pipelined_in(two), 1);
        assert_eq!(pipelined_in(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
        let with_body = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(pipelined_in(with_body), 0);
        let bare_lf = b"GET /a HTTP/1.1\nHost: x\n\nGET /b HTTP/1.1\n\n";
        assert_eq!(pipelined_in(bare_lf), 1);
    }

    #[test]
    fn header_ends_are_found_across_reads() {
        let ends = |before: [u8; 2], bytes: &[u8]| header_ends(before, bytes).collect::<Vec<_>>();
        assert_eq!(ends([0; 2], b"GET / HTTP/1.1\r\nA: b\r\n\r\n"), vec![24]);
        assert_eq!(
            ends([0; 2], b"GET / HTTP/1.1\r\nA: b\r\n"),
            Vec::<usize>::new()
        );
        // Split after "\r\n\r", after "\r\n", after "\n".
        assert_eq!(ends(*b"\n\r", b"\nrest"), vec![1]);
        assert_eq!(ends(*b"\r\n", b"\r\nrest"), vec![2]);
        assert_eq!(ends(*b"b\n", b"\n"), vec![1]);
        assert_eq!(ends(*b"\r\n", b"x\r\n"), Vec::<usize>::new());
        assert_eq!(last_two(*b"ab", b""), *b"ab");
        assert_eq!(last_two(*b"ab", b"c"), *b"bc");
        assert_eq!(last_two(*b"ab", b"cde"), *b"de");
    }

    #[test]
    fn request_line() {
        assert_eq!(
            route_label(b"GET /api/users?id=3 HTTP/1.1\r\nHost: x\r\n\r\n").as_deref(),
            Some("GET /api/users")
        );
        assert_eq!(
            route_label(b"POST / HTTP/1.0\r\n").as_deref(),
            Some("POST /")
        );
        assert_eq!(
            route_label(b"GET /a\x01b HTTP/1.1\r\n").as_deref(),
            Some("GET /a?b")
        );
        assert_eq!(split_label("GET /x y"), ("GET", "/x y"));
    }

    #[test]
    fn truncated_request_line_without_version_is_rejected() {
        assert_eq!(route_label(b"GET /very/long/pa"), None);
    }

    #[test]
    fn non_http_is_rejected() {
        assert_eq!(route_label(b"\x16\x03\x01\x02\x00\x01"), None);
        assert_eq!(route_label(b"PRI * HTTP/2.0\r\n"), None);
        assert_eq!(route_label(b"get / HTTP/1.1\r\n"), None);
    }

    #[test]
    fn status_line() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 404 Not Found\r\n"), Some(404));
        assert_eq!(parse_status_line(b"HTTP/1.1 100 Continue\r\n"), Some(100));
        assert_eq!(parse_status_line(b"hello"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2"), None);
    }
}
