pub struct NotSerde;

#[procwire_macros::service]
pub trait S {
    fn f(&self) -> NotSerde;
}

fn main() {}
