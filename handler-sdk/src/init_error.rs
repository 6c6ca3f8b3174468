//! Reporting an initialisation error to the Runtime API (`POST /runtime/init/error`),
//! so Lambda (or the runner) shows *why* a bootstrap could not start.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Posts `{"errorType", "errorMessage"}` to `/2018-06-01/runtime/init/error` of
/// `AWS_LAMBDA_RUNTIME_API`. Best effort: returns false when there is no Runtime API
/// (e.g. run by hand) or it cannot be reached.
pub fn report(error_type: &str, message: &str) -> bool {
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return false;
    };
    let body = crate::error_document::ErrorDocument::new(error_type, message).to_json();
    let request = format!(
        "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: {api}\r\nLambda-Runtime-Function-Error-Type: {error_type}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let Ok(mut conn) = TcpStream::connect(api.as_str()) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    if conn.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut reply = [0u8; 12];
    conn.read_exact(&mut reply).is_ok() && reply.starts_with(b"HTTP/1.1 202")
}
