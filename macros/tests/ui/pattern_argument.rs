#[procwire_macros::service]
pub trait S {
    fn f(&self, (a, b): (i32, i32));
}

fn main() {}
