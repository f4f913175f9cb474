#[procwire_macros::service]
pub trait S {
    #[procwire(fast)]
    fn f(&self);
}

fn main() {}
