// A serde type that does not describe its structure for the handshake.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct NoSchema {
    pub x: i64,
}

#[procwire_macros::service]
pub trait S {
    fn f(&self, x: NoSchema);
}

fn main() {}
