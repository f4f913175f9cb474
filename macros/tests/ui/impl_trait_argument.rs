#[procwire_macros::service]
pub trait S {
    fn f(&self, x: impl Into<i32>);
}

fn main() {}
