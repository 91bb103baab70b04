//! Check logic of the `tls_handshake` fuzz target: what a connection can send before it is
//! authenticated. Properties: no panic, and memory bounded by the input (libFuzzer's malloc
//! and RSS limits catch the rest).
//!
//! Input layout: byte 0 selects (mod 3) what the rest is fed to:
//! - 0: the hello decoder (a decoded hello re-encodes to itself);
//! - 1: the handshake answer decoder;
//! - 2: a rustls TLS 1.3 server of a node (the node's real server configuration: mutual
//!   authentication against a cluster CA generated once per process), as the bytes a client
//!   sends, until the connection fails or the input ends.

use sitelog::net::certs::{self, CertOptions};
use sitelog::net::handshake::{decode_answer, Hello};
use sitelog::net::tls::{TlsConfig, TlsDir, Who};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// Largest piece handed to `read_tls` at once: many small records exercise the buffering.
const MAX_READ_BYTES: usize = 4096;

pub fn check(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    match sel % 3 {
        0 => {
            if let Ok(h) = Hello::decode(body) {
                assert_eq!(Hello::decode(&h.encode()).expect("round trip"), h);
            }
        }
        1 => {
            let _ = decode_answer(body, 0);
        }
        _ => serve_tls(body),
    }
}

/// Feeds `input` to a node's TLS server as if it came from the network.
fn serve_tls(mut input: &[u8]) {
    let mut conn = rustls::ServerConnection::new(server_config().clone()).expect("server");
    let mut sink = std::io::sink();
    while !input.is_empty() {
        let n = input.len().min(MAX_READ_BYTES);
        let mut piece = &input[..n];
        match conn.read_tls(&mut piece) {
            Ok(0) | Err(_) => return,
            Ok(read) => input = &input[read..],
        }
        let failed = conn.process_new_packets().is_err();
        // What the server answers goes nowhere, but must be drained like a socket would.
        while conn.wants_write() {
            if conn.write_tls(&mut sink).is_err() {
                return;
            }
        }
        if failed {
            return;
        }
    }
}

/// A node's server configuration under a fresh CA, generated once (key generation is slow).
fn server_config() -> &'static Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sitelog-fuzz-tls-{}", std::process::id()));
        let nodes = BTreeMap::from([(1, "site-1".to_string())]);
        let opts = CertOptions {
            force: true,
            ..CertOptions::default()
        };
        certs::generate(&dir, &nodes, &opts).expect("test certificates");
        let tls = TlsConfig::load(&TlsDir::new(&dir), Who::Node(1)).expect("node config");
        let _ = std::fs::remove_dir_all(&dir);
        tls.server_config().expect("a node serves").clone()
    })
}
