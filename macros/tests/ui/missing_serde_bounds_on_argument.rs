pub struct NotSerde;

#[procwire_macros::service]
pub trait S {
    fn f(&self, x: NotSerde);
}

fn main() {}
