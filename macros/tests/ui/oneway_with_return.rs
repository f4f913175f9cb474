#[procwire_macros::service]
pub trait S {
    #[procwire(oneway)]
    fn f(&self) -> i32;
}

fn main() {}
