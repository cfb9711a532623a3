//! The fault suite (placeholder until it lands).
fn main() {}
