#[procwire_macros::service]
pub trait S<T> {
    fn f(&self, x: T);
}

fn main() {}
