//! A function that panics during initialisation, before it asks for an event.

fn main() {
    let table: Option<&str> = std::env::var("TABLE_NAME").ok().as_deref().map(|_| "never");
    panic!("init failed: TABLE_NAME is {table:?}");
}
