#[procwire_macros::service]
pub trait S {
    fn f(self);
}

fn main() {}
