#[procwire_macros::service]
pub trait S {
    type T;
    fn f(&self);
}

fn main() {}
