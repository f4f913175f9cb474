#[procwire_macros::service]
pub trait S {
    fn f(&self) -> &str;
}

fn main() {}
