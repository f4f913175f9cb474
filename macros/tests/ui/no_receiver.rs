#[procwire_macros::service]
pub trait S {
    fn f(x: i32);
}

fn main() {}
