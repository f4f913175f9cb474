#[procwire_macros::service]
pub trait S {
    fn start(&self);
}

fn main() {}
