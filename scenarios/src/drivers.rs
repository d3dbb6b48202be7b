//! Misbehaving clients: ones that send their requests a byte at a time
//! (slowloris), and ones that stop reading a large response (slow readers).

use std::{
    io::{Read, Write},
    net::TcpStream,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// Opens `clients` connections that each send `GET / HTTP/1.1` one byte
/// every `gap`, all at once, then read the response. Returns how many got a
/// `200`.
pub fn slowloris(port: u16, clients: usize, gap: Duration) -> Result<usize> {
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            thread::spawn(move || -> Result<bool> {
                let mut s = TcpStream::connect(("127.0.0.1", port)).context("connect")?;
                s.set_nodelay(true)?;
                for (i, b) in request.iter().enumerate() {
                    if i > 0 {
                        thread::sleep(gap);
                    }
                    s.write_all(&[*b])?;
                }
                read_status(&mut s)
            })
        })
        .collect();
    let mut ok = 0;
    for h in handles {
        if h.join()
            .map_err(|_| anyhow::anyhow!("slowloris client panicked"))??
        {
            ok += 1;
        }
    }
    Ok(ok)
}

/// Opens `clients` connections that ask for `path`, read the first 64 KiB,
/// stop reading for `pause`, then read the rest. Returns the bytes read by
/// each.
pub fn slow_readers(port: u16, path: &str, clients: usize, pause: Duration) -> Result<Vec<u64>> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let request = request.clone();
            thread::spawn(move || -> Result<u64> {
                let mut s = TcpStream::connect(("127.0.0.1", port)).context("connect")?;
                s.write_all(request.as_bytes())?;
                let mut buf = vec![0u8; 64 << 10];
                let mut total = 0u64;
                while total < (64 << 10) {
                    let n = s.read(&mut buf)?;
                    if n == 0 {
                        bail!("response ended early");
                    }
                    total += n as u64;
                }
                thread::sleep(pause);
                loop {
                    let n = s.read(&mut buf)?;
                    if n == 0 {
                        return Ok(total);
                    }
                    total += n as u64;
                }
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| anyhow::anyhow!("slow reader panicked"))?
        })
        .collect()
}

/// Whether the response that follows starts with `HTTP/1.1 200`.
fn read_status(s: &mut TcpStream) -> Result<bool> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while head.len() < 12 && Instant::now() < deadline {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head.starts_with(b"HTTP/1.1 200"))
}

/// Connections held open after one request each: a server's idle keep-alive
/// clients. Dropping it closes them.
pub struct HeldConnections {
    pub streams: Vec<TcpStream>,
}

/// Opens `n` keep-alive connections to `path`, one request each, and keeps
/// them open. Raises this process's open-files limit as needed.
pub fn hold_connections(port: u16, path: &str, n: usize) -> Result<HeldConnections> {
    raise_nofile(n as u64 + 1024)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", port)).context("connect")?;
        s.write_all(request.as_bytes())?;
        streams.push(s);
    }
    // Responses are read after all are sent, so the server holds them all at once.
    for s in &mut streams {
        if !read_status(s)? {
            bail!("a held connection got no 200");
        }
    }
    Ok(HeldConnections { streams })
}

fn raise_nofile(want: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    if lim.rlim_cur >= want {
        return Ok(());
    }
    lim.rlim_cur = want.max(lim.rlim_cur);
    lim.rlim_max = lim.rlim_max.max(want);
    // SAFETY: valid pointer to an rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) } != 0 {
        bail!(
            "cannot raise the open-files limit to {want}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
