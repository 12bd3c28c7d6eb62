//! Regression: with the file-descriptor limit reached, failed accepts once ended the HTTP
//! server's accept loop for good, and `/healthz` stayed refused after every client had gone.
//!
//! This test lowers its own process's descriptor limit, so it lives alone in this binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use imgd_pipeline::http::{HttpState, serve};
use imgd_pipeline::metrics::Metrics;
use rustix::process::{Resource, getrlimit, setrlimit};

fn healthz(addr: std::net::SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

#[test]
fn running_out_of_file_descriptors_never_ends_the_accept_loop() {
    let server = serve("127.0.0.1:0", HttpState::new(Arc::new(Metrics::new(&[])))).unwrap();
    let addr = server.local_addr();
    let mut limit = getrlimit(Resource::Nofile);
    let original = limit;
    limit.current = Some(96);
    setrlimit(Resource::Nofile, limit).unwrap();

    // Open connections until this process has no descriptor left: the server's accepts fail
    // with EMFILE meanwhile.
    let mut clients = Vec::new();
    while let Ok(stream) = TcpStream::connect(addr) {
        clients.push(stream);
        if clients.len() > 1000 {
            break;
        }
    }
    assert!(clients.len() < 1000, "the descriptor limit was not reached");
    std::thread::sleep(Duration::from_millis(300));
    drop(clients);
    setrlimit(Resource::Nofile, original).unwrap();

    let answer = (0..50)
        .find_map(|_| {
            healthz(addr)
                .filter(|a| a.starts_with("HTTP/1.1 200"))
                .or_else(|| {
                    std::thread::sleep(Duration::from_millis(100));
                    None
                })
        })
        .expect("/healthz never answered again after the descriptors came back");
    assert!(answer.ends_with("ok\n"), "{answer}");
}
