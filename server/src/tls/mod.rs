//! TLS: the server certificate, and the rustls configuration with a client certificate
//! verifier that asks for a certificate without requiring one.

pub mod config;
pub mod server_cert;
