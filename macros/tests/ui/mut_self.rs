#[procwire_macros::service]
pub trait S {
    fn f(&mut self);
}

fn main() {}
